// SOLVE_TRI (left, lower, non-unit): X = A^-1 B by forward substitution,
//   X[i][c] = (B[i][c] - sum_{j<i} A[i][j] X[j][c]) / A[i][i].
// One work item per (group of 8 columns, batch); grid (ceil(k / 8), ne2*ne3). When B's and X's columns are
// contiguous the 8 columns go as one float8 (explicit vectors: PoCL does not vectorise this loop nest itself), with
// two partial sums to halve the dependency chain; otherwise, or for the last partial group, column by column.
// A is read as A[row i1][col i0] and only on or below the diagonal; solved rows of X are read back from dst.
__kernel void solve_tri(__global float* restrict x, __global const float* restrict a, __global const float* restrict b,
                        const Params P) {
    const int c0 = get_global_id(0) * 8, k = NE(T_B, 0), n = NE(T_A, 0);
    if (c0 >= k) return;
    const int i2 = (int)get_global_id(1) % NE(T_B, 2), i3 = (int)get_global_id(1) / NE(T_B, 2);
    const int a0 = NB(T_A, 0), a1 = NB(T_A, 1), x0 = NB(T_DST, 0), x1 = NB(T_DST, 1), b0 = NB(T_B, 0), b1 = NB(T_B, 1);
    __global const float* ab = a + OFF(T_A) + i2 * NB(T_A, 2) + i3 * NB(T_A, 3);
    __global const float* bb = b + OFF(T_B) + c0 * b0 + i2 * NB(T_B, 2) + i3 * NB(T_B, 3);
    __global float* xb = x + OFF(T_DST) + c0 * x0 + i2 * NB(T_DST, 2) + i3 * NB(T_DST, 3);
    if (c0 + 8 <= k && x0 == 1 && b0 == 1) {
        for (int i = 0; i < n; ++i) {
            __global const float* arow = ab + i * a1;
            float8 s0 = vload8(0, bb + i * b1), s1 = 0.0f;
            int j = 0;
            for (; j + 1 < i; j += 2) {
                s0 -= arow[j * a0] * vload8(0, xb + j * x1);
                s1 -= arow[(j + 1) * a0] * vload8(0, xb + (j + 1) * x1);
            }
            if (j < i) s0 -= arow[j * a0] * vload8(0, xb + j * x1);
            vstore8((s0 + s1) / arow[i * a0], 0, xb + i * x1);
        }
    } else {
        for (int c = 0; c < min(8, k - c0); ++c) {
            for (int i = 0; i < n; ++i) {
                __global const float* arow = ab + i * a1;
                float s = bb[c * b0 + i * b1];
                for (int j = 0; j < i; ++j) s -= arow[j * a0] * xb[c * x0 + j * x1];
                xb[c * x0 + i * x1] = s / arow[i * a0];
            }
        }
    }
}
