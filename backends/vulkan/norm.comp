#version 450
// L2_NORM (x / max(sqrt(sum x^2), eps)) and RMS_NORM (x / sqrt(mean x^2 + eps)) along ne0; word0 = eps.
// SUM_ROWS: the row's sum, one element per row (dst [1, ne1, ne2, ne3]).
// One subgroup per row: lanes sum strided partials, a subgroup reduction combines them (no barriers).
// VEC4: rows contiguous and 4-aligned, lanes stride over uvec4 chunks. ROWCACHE: each lane keeps its chunks in a
// private array (the host sizes it to the row), so the row is read once.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#define WG 64
#include "common.glsl"

#if defined(OP_SUM_ROWS)
#define SQ(x) (x)
#define SQ4(x) dot(x, vec4(1.0))
#else
#define SQ(x) ((x) * (x))
#define SQ4(x) dot(x, x)
#endif

void main() {
    load_params();
    ivec4 ne = ne_0;
    int nrows = ne.y * ne.z * ne.w;
    ivec4 nbd = nb_d, nbs = nb_0;
    int od = off_d, os = off_0;
    float eps = op_float(0);
    int lane = int(gl_SubgroupInvocationID);
    int lanes = int(subgroupAdd(1u));
    int per_group = int(gl_NumSubgroups);
    int stride = int(gl_NumWorkGroups.x * gl_NumWorkGroups.y) * per_group;
    for (int row = group_id() * per_group + int(gl_SubgroupID); row < nrows; row += stride) {
        ivec4 r = ivec4(0, row % ne.y, (row / ne.y) % ne.z, row / (ne.y * ne.z));
        int bd = at(r, nbd, od), bs = at(r, nbs, os);
        float part = 0.0;
#if defined(VEC4)
        int nq = ne.x / 4;
#if defined(ROWCACHE)
        vec4 cache[ROWCACHE];
        for (int k = 0, q = lane; q < nq; q += lanes, ++k) {
            vec4 x = uintBitsToFloat(S04[bs / 4 + q]);
            cache[k] = x;
            part += SQ4(x);
        }
#else
        for (int q = lane; q < nq; q += lanes) {
            vec4 x = uintBitsToFloat(S04[bs / 4 + q]);
            part += SQ4(x);
        }
#endif
        for (int c = nq * 4 + lane; c < ne.x; c += lanes) {
            float x = LOAD_F32(S0, bs + c);
            part += SQ(x);
        }
#else
        for (int c = lane; c < ne.x; c += lanes) {
            float x = LOAD_F32(S0, bs + c * nbs.x);
            part += SQ(x);
        }
#endif
        float sum = subgroupAdd(part);
#if defined(OP_SUM_ROWS)
        if (lane == 0) store_f32(bd, sum);
#else
#if defined(OP_L2_NORM)
        float scale = 1.0 / max(sqrt(sum), eps); // eps clamps the norm, it is not added under the root
#else
        float scale = 1.0 / sqrt(sum / float(ne.x) + eps);
#endif
#if defined(VEC4)
#if defined(ROWCACHE)
        for (int k = 0, q = lane; q < nq; q += lanes, ++k) D4[bd / 4 + q] = floatBitsToUint(cache[k] * scale);
#else
        for (int q = lane; q < nq; q += lanes) {
            D4[bd / 4 + q] = floatBitsToUint(uintBitsToFloat(S04[bs / 4 + q]) * scale);
        }
#endif
        for (int c = nq * 4 + lane; c < ne.x; c += lanes) store_f32(bd + c, LOAD_F32(S0, bs + c) * scale);
#else
        for (int c = lane; c < ne.x; c += lanes) store_f32(bd + c * nbd.x, LOAD_F32(S0, bs + c * nbs.x) * scale);
#endif
#endif // OP_SUM_ROWS
    }
}
