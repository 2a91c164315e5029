// SOLVE_TRI (left, lower, non-unit): X = A^-1 B by forward substitution. One work item per (column c, batch);
// grid (k, ne2*ne3). A is read as A[row i1][col i0] and only on or below the diagonal; X rows already solved are
// read back from dst (written by the same work item).
__kernel void solve_tri(__global float* x, __global const float* a, __global const float* b, __constant int* P) {
    const int c = get_global_id(0), k = NE(T_B, 0), n = NE(T_A, 0);
    if (c >= k) return;
    const int i2 = (int)get_global_id(1) % NE(T_B, 2), i3 = (int)get_global_id(1) / NE(T_B, 2);
    const int a0 = NB(T_A, 0), a1 = NB(T_A, 1), x1 = NB(T_DST, 1), b1 = NB(T_B, 1);
    __global const float* ab = a + OFF(T_A) + i2 * NB(T_A, 2) + i3 * NB(T_A, 3);
    __global const float* bc = b + OFF(T_B) + c * NB(T_B, 0) + i2 * NB(T_B, 2) + i3 * NB(T_B, 3);
    __global float* xc = x + OFF(T_DST) + c * NB(T_DST, 0) + i2 * NB(T_DST, 2) + i3 * NB(T_DST, 3);
    for (int i = 0; i < n; ++i) {
        float s = bc[i * b1];
        for (int j = 0; j < i; ++j) s -= ab[i * a1 + j * a0] * xc[j * x1];
        xc[i * x1] = s / ab[i * a1 + i * a0];
    }
}
