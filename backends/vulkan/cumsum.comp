#version 450
// CUMSUM: inclusive prefix sum along ne0. One subgroup per row, no shared memory or barriers (barriers are slow on
// lavapipe): each lane scans PER_LANE consecutive elements, a subgroup exclusive scan offsets the lanes, and the
// row's running carry advances by the tile total after the tile is written.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#define WG 64
#include "common.glsl"
#define PER_LANE 8

void main() {
    ivec4 ne = ne_of(T_DST);
    int nrows = ne.y * ne.z * ne.w;
    ivec4 nbd = nb_of(T_DST), nbs = nb_of(T_SRC0);
    int od = off_of(T_DST), os = off_of(T_SRC0);
    int lane = int(gl_SubgroupInvocationID);
    int lanes = int(subgroupAdd(1u)); // active lanes: a subgroup may be wider than the workgroup
    int per_group = int(gl_NumSubgroups);
    int stride = int(gl_NumWorkGroups.x * gl_NumWorkGroups.y) * per_group;
    for (int row = group_id() * per_group + int(gl_SubgroupID); row < nrows; row += stride) {
        ivec4 r = ivec4(0, row % ne.y, (row / ne.y) % ne.z, row / (ne.y * ne.z));
        int bd = at(r, nbd, od), bs = at(r, nbs, os);
        float carry = 0.0;
        for (int t0 = 0; t0 < ne.x; t0 += lanes * PER_LANE) {
            int base = t0 + lane * PER_LANE;
            float v[PER_LANE];
            float run = 0.0;
            for (int j = 0; j < PER_LANE; ++j) {
                int c = base + j;
                run += c < ne.x ? LOAD_F32(S0, bs + c * nbs.x) : 0.0;
                v[j] = run;
            }
            float before = carry + subgroupExclusiveAdd(run);
            for (int j = 0; j < PER_LANE; ++j) {
                int c = base + j;
                if (c < ne.x) store_f32(bd + c * nbd.x, before + v[j]);
            }
            carry += subgroupAdd(run);
        }
    }
}
