#version 450
// SOLVE_TRI (left, lower, non-unit): X = A^-1 B by forward substitution; one thread per (4 columns c, batch), so
// each A[i][j] read serves 4 columns. A batch's threads are padded to whole subgroups, so no subgroup spans batches.
// A [n,n,b2,b3] is read as A[row=i1][col=i0], only its lower triangle and diagonal; B, X [k,n,b2,b3].
// Columns past k repeat column k-1 and are not stored.
// XCACHE (n <= 128): the thread's rows of X stay in a private array, else they are read back from dst.
// SHARE_A (subgroups of >= 8 lanes): 8 lanes load 8 consecutive A[i][j] once and broadcast them, instead of every
// lane loading every A[i][j] (lavapipe loads lane by lane inside loops).
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_ballot : enable
#extension GL_EXT_control_flow_attributes : enable
#define WG 64
#include "common.glsl"

void main() {
    load_params();
    ivec4 nbx = nb_d, nba = nb_0, nbb = nb_1;
    int n = ne_d.y;
    int per_batch = ((ne_d.x + 3) / 4 + int(gl_SubgroupSize) - 1) / int(gl_SubgroupSize) * int(gl_SubgroupSize);
    int g = group_id() * WG + int(gl_LocalInvocationID.x);
    int b = g / per_batch;
    if (b >= ne_d.z * ne_d.w) return; // whole subgroups only
    int c0 = (g - b * per_batch) * 4;
    ivec4 cols = ivec4(c0, c0 + 1, c0 + 2, c0 + 3);
    bvec4 live = lessThan(cols, ivec4(ne_d.x)); // no early return: every lane takes part in the broadcasts
    cols = min(cols, ivec4(ne_d.x - 1));
    ivec4 batch = ivec4(0, 0, b % ne_d.z, b / ne_d.z);
    ivec4 xc = at(batch, nbx, off_d) + cols * nbx.x; // X[.][c] for the 4 columns
    ivec4 bc = at(batch, nbb, off_1) + cols * nbb.x;
    int a0 = at(batch, nba, off_0);
#if defined(XCACHE)
    vec4 x[128 + 8];
    [[unroll]] for (int j = 0; j < 128 + 8; ++j) x[j] = vec4(0.0); // rows past i meet a zero A, never garbage
#define X(j) x[j]
#else
#define X(j) vec4(LOAD_F32(D, xc.x + (j) * nbx.y), LOAD_F32(D, xc.y + (j) * nbx.y), \
                  LOAD_F32(D, xc.z + (j) * nbx.y), LOAD_F32(D, xc.w + (j) * nbx.y))
#endif
    for (int i = 0; i < n; ++i) {
        int arow = a0 + i * nba.y;
        int bi = i * nbb.y;
        vec4 s = vec4(LOAD_F32(S1, bc.x + bi), LOAD_F32(S1, bc.y + bi),
                      LOAD_F32(S1, bc.z + bi), LOAD_F32(S1, bc.w + bi));
#if defined(SHARE_A) && defined(XCACHE)
        int lane = int(gl_SubgroupInvocationID);
        for (int j0 = 0; j0 < i; j0 += 8) {
            float a = lane < 8 && j0 + lane < i ? LOAD_F32(S0, arow + (j0 + lane) * nba.x) : 0.0;
#define TERM(t) s -= subgroupBroadcast(a, t) * x[j0 + t]
            TERM(0); TERM(1); TERM(2); TERM(3); TERM(4); TERM(5); TERM(6); TERM(7); // broadcast ids are constants
        }
#else
        for (int j = 0; j < i; ++j) s -= LOAD_F32(S0, arow + j * nba.x) * X(j);
#endif
        vec4 xi = s / LOAD_F32(S0, arow + i * nba.x);
#if defined(XCACHE)
        x[i] = xi;
#endif
        int xr = i * nbx.y;
        if (live.x) store_f32(xc.x + xr, xi.x);
        if (live.y) store_f32(xc.y + xr, xi.y);
        if (live.z) store_f32(xc.z + xr, xi.z);
        if (live.w) store_f32(xc.w + xr, xi.w);
    }
}
