#version 450
// GATED_DELTA_NET (q, k, v, g, beta, state -> dst = [outputs | final states]), the fused recurrence.
// One workgroup per (head h, sequence s), one thread per 4 value columns j0..j0+3: the thread keeps st[i] =
// S[i][j0..j0+3] as a vec4 in registers (SDIM = S is compiled in and the loops over i are unrolled), so columns need
// no reductions. The host makes the workgroup S/4 rounded up to 8 threads; columns past S repeat column S-1 and are
// not stored. Per token every thread needs all S values of k (and q, and the decays): in each subgroup, lane u
// loads elements c*8 + u and subgroupBroadcast hands them out, so a lane loads S/8 of each instead of S (lavapipe
// loads lane by lane inside loops; broadcasts stay in registers), and each serves 4 columns. Needs subgroups of
// >= 8 lanes (the host checks).
// KDA (compile-time): g has S entries per token (decay per key row i); otherwise one gate per head (GDA).
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_ballot : enable
#extension GL_EXT_control_flow_attributes : enable
#include "common.glsl"

layout(std430, binding = 4) readonly buffer VBuf { uint SV[]; };
layout(std430, binding = 5) readonly buffer GBuf { uint SG[]; };
layout(std430, binding = 6) readonly buffer BetaBuf { uint SB[]; };
layout(std430, binding = 7) readonly buffer StateBuf { uint SS[]; };

#define NCH ((SDIM + 7) / 8) // chunks of 8 key rows
#define EACH8(F, c) F(c, 0) F(c, 1) F(c, 2) F(c, 3) F(c, 4) F(c, 5) F(c, 6) F(c, 7) // broadcast ids are constants

#if defined(KDA)
#define DECAY(c, u) subgroupBroadcast(dc[c], u)
#else
#define DECAY(c, u) decay
#endif
// Pass 1: decay the column and take its dot with k. Pass 2: add k * delta and take the dot with q.
#define PASS1(c, u) if ((c) * 8 + u < SDIM) { \
        st[(c) * 8 + u] *= DECAY(c, u); kv += st[(c) * 8 + u] * subgroupBroadcast(kc[c], u); }
#define PASS2(c, u) if ((c) * 8 + u < SDIM) { \
        st[(c) * 8 + u] += subgroupBroadcast(kc[c], u) * delta; o += st[(c) * 8 + u] * subgroupBroadcast(qc[c], u); }

void main() {
    load_params(); // dst, q (src0), k (src1)
    int off_v = off_of(3), off_g = off_of(4), off_b = off_of(5), off_s = off_of(6);
    ivec4 nb_v = nb_of(3), nb_g = nb_of(4), nb_b = nb_of(5), nb_s = nb_of(6);
    int H = ne_of(3).y, T = ne_of(3).z, hk_count = ne_0.y;
    int gid = group_id();
    int h = gid % H, s = gid / H, hk = h % hk_count;
    int lane = int(gl_SubgroupInvocationID) & 7;
    ivec4 js = int(gl_LocalInvocationID.x) * 4 + ivec4(0, 1, 2, 3);
    bvec4 live = lessThan(js, ivec4(SDIM));
    js = min(js, ivec4(SDIM - 1));
    // dst is a [S*H, T*n + S*n] matrix: output (s, t, h, j) at row s*T + t, column h*S + j.
    ivec4 o_col = off_d + (h * SDIM + js) * nb_d.x;

    vec4 st[SDIM];
    [[unroll]] for (int i = 0; i < SDIM; ++i) {
        ivec4 e = at(ivec4(i, 0, h, s), nb_s, off_s) + js * nb_s.y;
        st[i] = vec4(LOAD_F32(SS, e.x), LOAD_F32(SS, e.y), LOAD_F32(SS, e.z), LOAD_F32(SS, e.w));
    }

    float scale = 1.0 / sqrt(float(SDIM));
    for (int t = 0; t < T; ++t) {
        float kc[NCH], qc[NCH];
#if defined(KDA)
        float dc[NCH];
#endif
        [[unroll]] for (int c = 0; c < NCH; ++c) {
            int e = min(c * 8 + lane, SDIM - 1);
            kc[c] = LOAD_F32(S1, at(ivec4(e, hk, t, s), nb_1, off_1));
            qc[c] = LOAD_F32(S0, at(ivec4(e, hk, t, s), nb_0, off_0));
#if defined(KDA)
            dc[c] = exp(LOAD_F32(SG, at(ivec4(e, h, t, s), nb_g, off_g)));
#endif
        }
#if !defined(KDA)
        float decay = exp(LOAD_F32(SG, at(ivec4(0, h, t, s), nb_g, off_g)));
#endif
        ivec4 ev = at(ivec4(0, h, t, s), nb_v, off_v) + js * nb_v.x;
        vec4 vj = vec4(LOAD_F32(SV, ev.x), LOAD_F32(SV, ev.y), LOAD_F32(SV, ev.z), LOAD_F32(SV, ev.w));
        float beta = LOAD_F32(SB, at(ivec4(0, h, t, s), nb_b, off_b));
        vec4 kv = vec4(0.0);
        [[unroll]] for (int c = 0; c < NCH; ++c) { EACH8(PASS1, c) }
        vec4 delta = (vj - kv) * beta;
        vec4 o = vec4(0.0);
        [[unroll]] for (int c = 0; c < NCH; ++c) { EACH8(PASS2, c) }
        int row = (s * T + t) * nb_d.y;
        o *= scale;
        if (live.x) store_f32(o_col.x + row, o.x);
        if (live.y) store_f32(o_col.y + row, o.y);
        if (live.z) store_f32(o_col.z + row, o.z);
        if (live.w) store_f32(o_col.w + row, o.w);
    }
    // Final states: flat dst element S*H*T*n + (i + S*j + S*S*h + S*S*H*s), the input state's own layout.
    int row_len = ne_d.x;
    for (int c = 0; c < 4; ++c) {
        if (!live[c]) break;
        int e0 = row_len * T * ne_of(3).w + SDIM * (js[c] + SDIM * (h + H * s));
        [[unroll]] for (int i = 0; i < SDIM; ++i) {
            int e = e0 + i;
            store_f32(off_d + (e % row_len) * nb_d.x + (e / row_len) * nb_d.y, st[i][c]);
        }
    }
}
