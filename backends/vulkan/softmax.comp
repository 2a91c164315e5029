#version 450
// SOFT_MAX_EXT: dst = softmax(a * scale + mask) along ne0; word0 = scale. Mask row i1 of plane (i2 % m.ne2,
// i3 % m.ne3). One subgroup per row, like norm.comp: the row max, then the sum of exp(z - max), then the stores,
// each a subgroup reduction (no barriers). exp(-inf) is 0 (masked entries); a row is never wholly -inf.
// VEC4: a, mask and dst rows contiguous and 4-aligned, lanes stride over uvec4 chunks. ROWCACHE: each lane keeps its
// chunks of z (then of exp(z - max)) in a private array, so a and mask are read once.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#define WG 64
#include "common.glsl"
#include "expf.glsl"

#define NEG_INF uintBitsToFloat(0xFF800000u)

void main() {
    load_params();
    ivec4 ne = ne_0, nem = ne_1;
    int nrows = ne.y * ne.z * ne.w;
    ivec4 nbd = nb_d, nba = nb_0, nbm = nb_1;
    int od = off_d, oa = off_0, om = off_1;
    float scale = op_float(0);
    int lane = int(gl_SubgroupInvocationID);
    int lanes = int(subgroupAdd(1u));
    int per_group = int(gl_NumSubgroups);
    int stride = int(gl_NumWorkGroups.x * gl_NumWorkGroups.y) * per_group;
    for (int row = group_id() * per_group + int(gl_SubgroupID); row < nrows; row += stride) {
        ivec4 r = ivec4(0, row % ne.y, (row / ne.y) % ne.z, row / (ne.y * ne.z));
        int bd = at(r, nbd, od), ba = at(r, nba, oa), bm = at(ivec4(0, r.y, r.z % nem.z, r.w % nem.w), nbm, om);
        float mx = NEG_INF;
#if defined(VEC4)
        int nq = ne.x / 4;
#if defined(ROWCACHE)
        vec4 cache[ROWCACHE];
        for (int k = 0, q = lane; q < nq; q += lanes, ++k) {
            vec4 z = uintBitsToFloat(S04[ba / 4 + q]) * scale + uintBitsToFloat(S14[bm / 4 + q]);
            cache[k] = z;
            mx = max(mx, max(max(z.x, z.y), max(z.z, z.w)));
        }
#else
        for (int q = lane; q < nq; q += lanes) {
            vec4 z = uintBitsToFloat(S04[ba / 4 + q]) * scale + uintBitsToFloat(S14[bm / 4 + q]);
            mx = max(mx, max(max(z.x, z.y), max(z.z, z.w)));
        }
#endif
        for (int c = nq * 4 + lane; c < ne.x; c += lanes)
            mx = max(mx, LOAD_F32(S0, ba + c) * scale + LOAD_F32(S1, bm + c));
        mx = subgroupMax(mx);
        float part = 0.0;
#if defined(ROWCACHE)
        for (int k = 0, q = lane; q < nq; q += lanes, ++k) {
            vec4 z = cache[k] - mx;
            vec4 e = vec4(exp_precise(z.x), exp_precise(z.y), exp_precise(z.z), exp_precise(z.w));
            cache[k] = e;
            part += dot(e, vec4(1.0));
        }
#else
        for (int q = lane; q < nq; q += lanes) {
            vec4 z = uintBitsToFloat(S04[ba / 4 + q]) * scale + uintBitsToFloat(S14[bm / 4 + q]) - mx;
            part += dot(vec4(exp_precise(z.x), exp_precise(z.y), exp_precise(z.z), exp_precise(z.w)), vec4(1.0));
        }
#endif
        for (int c = nq * 4 + lane; c < ne.x; c += lanes)
            part += exp_precise(LOAD_F32(S0, ba + c) * scale + LOAD_F32(S1, bm + c) - mx);
        float inv = 1.0 / subgroupAdd(part);
#if defined(ROWCACHE)
        for (int k = 0, q = lane; q < nq; q += lanes, ++k) D4[bd / 4 + q] = floatBitsToUint(cache[k] * inv);
#else
        for (int q = lane; q < nq; q += lanes) {
            vec4 z = uintBitsToFloat(S04[ba / 4 + q]) * scale + uintBitsToFloat(S14[bm / 4 + q]) - mx;
            vec4 e = vec4(exp_precise(z.x), exp_precise(z.y), exp_precise(z.z), exp_precise(z.w));
            D4[bd / 4 + q] = floatBitsToUint(e * inv);
        }
#endif
        for (int c = nq * 4 + lane; c < ne.x; c += lanes)
            store_f32(bd + c, exp_precise(LOAD_F32(S0, ba + c) * scale + LOAD_F32(S1, bm + c) - mx) * inv);
#else
        for (int c = lane; c < ne.x; c += lanes)
            mx = max(mx, LOAD_F32(S0, ba + c * nba.x) * scale + LOAD_F32(S1, bm + c * nbm.x));
        mx = subgroupMax(mx);
        float part = 0.0;
        for (int c = lane; c < ne.x; c += lanes)
            part += exp_precise(LOAD_F32(S0, ba + c * nba.x) * scale + LOAD_F32(S1, bm + c * nbm.x) - mx);
        float inv = 1.0 / subgroupAdd(part);
        for (int c = lane; c < ne.x; c += lanes)
            store_f32(bd + c * nbd.x,
                      exp_precise(LOAD_F32(S0, ba + c * nba.x) * scale + LOAD_F32(S1, bm + c * nbm.x) - mx) * inv);
#endif
    }
}
