#version 450
// CUMSUM: inclusive prefix sum along ne0. One subgroup per row, no shared memory or barriers (barriers are slow on
// lavapipe): each lane scans PER_LANE consecutive elements, a subgroup exclusive scan offsets the lanes, and the
// row's running carry advances by the tile total after the tile is written. VEC4: rows contiguous and 4-aligned.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#define WG 64
#include "common.glsl"
#define PER_LANE 8

void main() {
    load_params();
    ivec4 ne = ne_d;
    int nrows = ne.y * ne.z * ne.w;
    ivec4 nbd = nb_d, nbs = nb_0;
    int od = off_d, os = off_0;
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
#if defined(VEC4)
            bool whole = base + PER_LANE <= ne.x;
            if (whole) {
                for (int q = 0; q < PER_LANE / 4; ++q) {
                    vec4 x = uintBitsToFloat(S04[(bs + base) / 4 + q]);
                    v[4 * q] = x.x; v[4 * q + 1] = x.y; v[4 * q + 2] = x.z; v[4 * q + 3] = x.w;
                }
            } else {
                for (int j = 0; j < PER_LANE; ++j) v[j] = base + j < ne.x ? LOAD_F32(S0, bs + base + j) : 0.0;
            }
#else
            for (int j = 0; j < PER_LANE; ++j) {
                int c = base + j;
                v[j] = c < ne.x ? LOAD_F32(S0, bs + c * nbs.x) : 0.0;
            }
#endif
            for (int j = 1; j < PER_LANE; ++j) v[j] += v[j - 1];
            float run = v[PER_LANE - 1];
            float before = carry + subgroupExclusiveAdd(run);
#if defined(VEC4)
            if (whole) {
                for (int q = 0; q < PER_LANE / 4; ++q) {
                    vec4 y = before + vec4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
                    D4[(bd + base) / 4 + q] = floatBitsToUint(y);
                }
            } else {
                for (int j = 0; j < PER_LANE; ++j) if (base + j < ne.x) store_f32(bd + base + j, before + v[j]);
            }
#else
            for (int j = 0; j < PER_LANE; ++j) {
                int c = base + j;
                if (c < ne.x) store_f32(bd + c * nbd.x, before + v[j]);
            }
#endif
            carry += subgroupAdd(run);
        }
    }
}
