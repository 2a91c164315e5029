#version 450
// L2_NORM (x / max(sqrt(sum x^2), eps)) and RMS_NORM (x / sqrt(mean x^2 + eps)) along ne0; word0 = eps.
// One subgroup per row: lanes sum strided partials, a subgroup reduction combines them (no barriers).
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#define WG 64
#include "common.glsl"

void main() {
    ivec4 ne = ne_of(T_DST);
    int nrows = ne.y * ne.z * ne.w;
    ivec4 nbd = nb_of(T_DST), nbs = nb_of(T_SRC0);
    int od = off_of(T_DST), os = off_of(T_SRC0);
    float eps = op_float(0);
    int lane = int(gl_SubgroupInvocationID);
    int lanes = int(subgroupAdd(1u));
    int per_group = int(gl_NumSubgroups);
    int stride = int(gl_NumWorkGroups.x * gl_NumWorkGroups.y) * per_group;
    for (int row = group_id() * per_group + int(gl_SubgroupID); row < nrows; row += stride) {
        ivec4 r = ivec4(0, row % ne.y, (row / ne.y) % ne.z, row / (ne.y * ne.z));
        int bd = at(r, nbd, od), bs = at(r, nbs, os);
        float part = 0.0;
        for (int c = lane; c < ne.x; c += lanes) {
            float x = LOAD_F32(S0, bs + c * nbs.x);
            part += x * x;
        }
        float sum = subgroupAdd(part);
#if defined(OP_L2_NORM)
        float scale = 1.0 / max(sqrt(sum), eps); // eps clamps the norm, it is not added under the root
#else
        float scale = 1.0 / sqrt(sum / float(ne.x) + eps);
#endif
        for (int c = lane; c < ne.x; c += lanes) {
            store_f32(bd + c * nbd.x, LOAD_F32(S0, bs + c * nbs.x) * scale);
        }
    }
}
