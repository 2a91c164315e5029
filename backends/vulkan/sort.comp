#version 450
// ARGSORT (word0: 0 ASC, 1 DESC) and TOP_K (word0: k) along ne0, i32 out; one of OP_ARGSORT / OP_TOP_K defined.
// Rank counting, one subgroup per row: element i goes to position rank_i = #{j : a_j before a_i, or a_j == a_i and
// j < i} ("before": smaller for ASC, larger for DESC and TOP_K), a permutation even with ties. TOP_K is the DESC
// rank with only ranks < k stored. Each lane holds CHUNK elements of a strip of lanes * CHUNK; the row is streamed
// past them once per strip, each lane loading one element of every lanes-wide block and subgroupShuffle handing
// it to the others (lavapipe loads lane by lane inside loops: a lane-wide load costs what one broadcast load does).
// O(n^2) compares, but registers only: no shared memory, no barriers.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#define WG 64
#include "common.glsl"
#define CHUNK 32

void main() {
    load_params();
    ivec4 ne = ne_0;
    int n = ne.x;
    int nrows = ne.y * ne.z * ne.w;
    ivec4 nbd = nb_d, nbs = nb_0;
    int od = off_d, os = off_0;
#if defined(OP_TOP_K)
    bool desc = true;
    int keep = op_int(0);
#else
    bool desc = op_int(0) == 1;
    int keep = n;
#endif
    int lane = int(gl_SubgroupInvocationID);
    int lanes = int(subgroupAdd(1u));
    int per_group = int(gl_NumSubgroups);
    int stride = int(gl_NumWorkGroups.x * gl_NumWorkGroups.y) * per_group;
    for (int row = group_id() * per_group + int(gl_SubgroupID); row < nrows; row += stride) {
        ivec4 r = ivec4(0, row % ne.y, (row / ne.y) % ne.z, row / (ne.y * ne.z));
        int bd = at(r, nbd, od), bs = at(r, nbs, os);
        for (int s0 = 0; s0 < n; s0 += lanes * CHUNK) {
            int i0 = s0 + lane * CHUNK; // this lane's elements i0 .. i0 + CHUNK - 1 (past n: clamped, not stored)
            float x[CHUNK];
            int rank[CHUNK];
            for (int c = 0; c < CHUNK; ++c) {
                x[c] = LOAD_F32(S0, bs + min(i0 + c, n - 1) * nbs.x);
                rank[c] = 0;
            }
            for (int j0 = 0; j0 < n; j0 += lanes) {
                float mine = LOAD_F32(S0, bs + min(j0 + lane, n - 1) * nbs.x);
                int m = min(lanes, n - j0);
                for (int u = 0; u < m; ++u) {
                    float y = subgroupShuffle(mine, u);
                    int j = j0 + u;
                    for (int c = 0; c < CHUNK; ++c) {
                        bool before = desc ? y > x[c] : y < x[c];
                        rank[c] += (before || (y == x[c] && j < i0 + c)) ? 1 : 0;
                    }
                }
            }
            for (int c = 0; c < CHUNK; ++c) {
                if (i0 + c < n && rank[c] < keep) D[bd + rank[c] * nbd.x] = uint(i0 + c);
            }
        }
    }
}
