#version 450
// SOLVE_TRI (left, lower, non-unit): X = A^-1 B by forward substitution, one thread per (column c, batch).
// A [n,n,b2,b3] read as A[row=i1][col=i0], only its lower triangle and diagonal; B, X [k,n,b2,b3].
// Earlier rows of X are read back from dst, written by this same thread.
#define WG 64
#include "common.glsl"

void main() {
    ivec4 nex = ne_of(T_DST);
    int c = int(gl_GlobalInvocationID.x);
    if (c >= nex.x) return;
    int n = nex.y;
    ivec4 batch = ivec4(0, 0, gl_WorkGroupID.y, gl_WorkGroupID.z);
    ivec4 nbx = nb_of(T_DST), nba = nb_of(T_SRC0), nbb = nb_of(T_SRC1);
    int x0 = at(batch, nbx, off_of(T_DST)) + c * nbx.x;
    int a0 = at(batch, nba, off_of(T_SRC0));
    int b0 = at(batch, nbb, off_of(T_SRC1)) + c * nbb.x;
    for (int i = 0; i < n; ++i) {
        int arow = a0 + i * nba.y;
        float s = LOAD_F32(S1, b0 + i * nbb.y);
        for (int j = 0; j < i; ++j) {
            s -= LOAD_F32(S0, arow + j * nba.x) * LOAD_F32(D, x0 + j * nbx.y);
        }
        store_f32(x0 + i * nbx.y, s / LOAD_F32(S0, arow + i * nba.x));
    }
}
