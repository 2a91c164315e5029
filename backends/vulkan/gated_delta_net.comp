#version 450
// GATED_DELTA_NET (q, k, v, g, beta, state -> dst = [outputs | final states]), the fused recurrence.
// One workgroup per (head h, sequence s), one thread per value column j (the host compiles WG = SDIM = S); thread j
// keeps its column st[i] = S[i][j] in private memory, so no reductions across threads are needed. Per token the
// threads stage k, q and exp(g) in shared memory (thread j loads element j), then each walks its column.
// KDA (a compile-time define): g has S entries per token (decay per key row); otherwise one gate per head (GDA).
#include "common.glsl"

layout(std430, binding = 4) readonly buffer VBuf { uint SV[]; };
layout(std430, binding = 5) readonly buffer GBuf { uint SG[]; };
layout(std430, binding = 6) readonly buffer BetaBuf { uint SB[]; };
layout(std430, binding = 7) readonly buffer StateBuf { uint SS[]; };

shared float sk[SDIM], sq[SDIM];
#if defined(KDA)
shared float sdecay[SDIM];
#endif

void main() {
    load_params(); // dst, q (src0), k (src1)
    int off_v = off_of(3), off_g = off_of(4), off_b = off_of(5), off_s = off_of(6);
    ivec4 nb_v = nb_of(3), nb_g = nb_of(4), nb_b = nb_of(5), nb_s = nb_of(6);
    int H = ne_of(3).y, T = ne_of(3).z, hk_count = ne_0.y;
    int gid = group_id();
    int h = gid % H, s = gid / H, hk = h % hk_count;
    int j = int(gl_LocalInvocationID.x);
    // dst is a [S*H, T*n + S*n] matrix: output (s, t, h, j) at row s*T + t, column h*S + j.
    int o_col = off_d + (h * SDIM + j) * nb_d.x;

    float st[SDIM];
    for (int i = 0; i < SDIM; ++i) st[i] = LOAD_F32(SS, at(ivec4(i, j, h, s), nb_s, off_s));

    float scale = 1.0 / sqrt(float(SDIM));
    for (int t = 0; t < T; ++t) {
        sk[j] = LOAD_F32(S1, at(ivec4(j, hk, t, s), nb_1, off_1));
        sq[j] = LOAD_F32(S0, at(ivec4(j, hk, t, s), nb_0, off_0));
#if defined(KDA)
        sdecay[j] = exp(LOAD_F32(SG, at(ivec4(j, h, t, s), nb_g, off_g)));
#else
        float decay = exp(LOAD_F32(SG, at(ivec4(0, h, t, s), nb_g, off_g)));
#endif
        float vj = LOAD_F32(SV, at(ivec4(j, h, t, s), nb_v, off_v));
        float beta = LOAD_F32(SB, at(ivec4(0, h, t, s), nb_b, off_b));
        barrier();
        float kv = 0.0;
        for (int i = 0; i < SDIM; ++i) {
#if defined(KDA)
            st[i] *= sdecay[i];
#else
            st[i] *= decay;
#endif
            kv += st[i] * sk[i];
        }
        float delta = (vj - kv) * beta;
        float o = 0.0;
        for (int i = 0; i < SDIM; ++i) {
            st[i] += sk[i] * delta;
            o += st[i] * sq[i];
        }
        store_f32(o_col + (s * T + t) * nb_d.y, o * scale);
        barrier(); // every thread is done with this token's k, q, decay before they are overwritten
    }
    // Final states: flat dst element S*H*T*n + (i + S*j + S*S*h + S*S*H*s), the input state's own layout.
    int row_len = ne_d.x;
    int e0 = row_len * T * ne_of(3).w + SDIM * (j + SDIM * (h + H * s));
    for (int i = 0; i < SDIM; ++i) {
        int e = e0 + i;
        store_f32(off_d + (e % row_len) * nb_d.x + (e / row_len) * nb_d.y, st[i]);
    }
}
