// SOLVE_TRI: X = A^-1 B by forward substitution, A lower triangular (non-unit diagonal).
// A ne [n,n,B2,B3] is read as A[row=i1][col=i0], only on and below the diagonal; B and X ne [k,n,B2,B3].
// One thread per (column c of B, batch): X[i][c] = (B[i][c] - sum_{j<i} A[i][j] X[j][c]) / A[i][i]. The thread
// reads back the X values it wrote itself, so no synchronisation is needed; threads of a warp share A's reads.
#include "common.cuh"

extern "C" __global__ void solve_tri_f32(float* x, const float* a, const float* b, const int* p) {
    const View vx = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vb = view_of(p, 2);
    const int n = va.ne[0];
    const int k = vb.ne[0];
    const int jobs = k * vb.ne[2] * vb.ne[3];
    for (long long job = first_thread(); job < jobs; job += thread_stride()) {
        const int c = (int)(job % k);
        const int batch = (int)(job / k);
        const int i2 = batch % vb.ne[2];
        const int i3 = batch / vb.ne[2];
        for (int i = 0; i < n; ++i) {
            float sum = b[at(vb, c, i, i2, i3)];
            for (int j = 0; j < i; ++j) {
                sum -= a[at(va, j, i, i2, i3)] * x[at(vx, c, j, i2, i3)];
            }
            x[at(vx, c, i, i2, i3)] = sum / a[at(va, i, i, i2, i3)];
        }
    }
}
