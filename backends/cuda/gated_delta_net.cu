// GATED_DELTA_NET: the gated delta rule over T tokens. q, k [S,H_k,T,n], v [S,H,T,n], g [1|S,H,T,n] (one gate per
// head, or one per key channel), beta [1,H,T,n], state [S,S,H,n] (state[i key][j value] at ne index (i, j, h, s)).
// Per token: S[i][j] *= exp(g[i]); delta_j = (v_j - sum_i S[i][j] k_i) * beta; S[i][j] += k_i delta_j;
// o_j = sum_i S[i][j] q_i / sqrt(S). dst [S*H, (T+S)*n]: o of (s, t, h, j) at flat ((s*T + t)*H + h)*S + j, then
// from flat S*H*T*n the final states laid out like the input state (i + S*j + S*S*h + S*S*H*s).
//
// One block per (head, seq) (grid-stride), one thread per value column j, holding its state column S[:, j] in
// registers: columns are independent, so no reductions cross threads. The entry points differ in COLS, the block
// width, the smallest of 32/64/128 that is >= S; keys and columns past S are held as zeros, so the loops over keys
// unroll fully (registers, not local memory) with no bounds tests. q, k and exp(g) of a token are staged in shared
// memory, one element per thread.
#include "common.cuh"

template <int COLS>
__device__ void gated_delta_net(float* d, const float* q, const float* k, const float* v, const float* g,
                                const float* beta, const float* state, const int* p) {
    __shared__ float qs[COLS], ks[COLS], gs[COLS];
    const View vd = view_of(p, 0);
    const View vq = view_of(p, 1);
    const View vk = view_of(p, 2);
    const View vv = view_of(p, 3);
    const View vg = view_of(p, 4);
    const View vb = view_of(p, 5);
    const View vs = view_of(p, 6);
    const int S = vv.ne[0], H = vv.ne[1], T = vv.ne[2], n = vv.ne[3], h_k = vq.ne[1];
    const bool per_key = vg.ne[0] != 1;  // KDA (g.ne0 == S); with S == 1 both readings agree
    const float scale = 1.0f / sqrtf((float)S);
    const int j = threadIdx.x;
    const bool live = j < S;
    const int tq = (int)vq.nb[2], tk = (int)vk.nb[2], tv = (int)vv.nb[2], tg = (int)vg.nb[2], tb = (int)vb.nb[2];
    const int to = (int)vd.nb[1];
    for (int hs = blockIdx.x; hs < H * n; hs += gridDim.x) {
        const int h = hs % H, s = hs / H, hq = h % h_k;
        float col[COLS];
        long long src = at(vs, 0, j, h, s);
#pragma unroll
        for (int i = 0; i < COLS; ++i) {
            col[i] = live && i < S ? state[src] : 0.0f;
            src += vs.nb[0];
        }
        // Element offsets of this thread's token-t operands, advanced by the token strides (int: each is an int32
        // word of the parameter block), so few registers stay live beside the column.
        long long iq = at(vq, j, hq, 0, s), ik = at(vk, j, hq, 0, s), iv = at(vv, j, h, 0, s);
        long long ig = at(vg, per_key ? j : 0, h, 0, s), ib = at(vb, 0, h, 0, s);
        long long io = at(vd, h * S + j, s * T, 0, 0);  // dst ne0 is S*H: o of (s, t, h, j) is dst[h*S + j, s*T + t]
        for (int t = 0; t < T; ++t, iq += tq, ik += tk, iv += tv, ig += tg, ib += tb, io += to) {
            qs[j] = live ? q[iq] : 0.0f;
            ks[j] = live ? k[ik] : 0.0f;
            gs[j] = live ? expf(g[ig]) : 0.0f;
            __syncthreads();
            const float b = beta[ib];
            const float vj = live ? v[iv] : 0.0f;
            float kv = 0.0f;
#pragma unroll
            for (int i = 0; i < COLS; ++i) {
                col[i] *= gs[i];
                kv += col[i] * ks[i];
            }
            const float delta = (vj - kv) * b;
            // Volatile: k and q are read from shared memory again here, in order. Otherwise the compiler keeps the
            // first pass's COLS values of k live (and fetches q early) beside the column: at COLS = 128 that spilled.
            const volatile float* kr = ks;
            const volatile float* qr = qs;
            float o = 0.0f;
#pragma unroll
            for (int i = 0; i < COLS; ++i) {
                col[i] += kr[i] * delta;
                o += col[i] * qr[i];
            }
            if (live) {
                d[io] = o * scale;
            }
            __syncthreads();  // every thread has read this token's vectors before the next token's are staged
        }
        const int first = S * H * T * n + S * (j + S * (h + H * s));
        int e0 = first % vd.ne[0], e1 = first / vd.ne[0];  // dst index of flat element first + i
#pragma unroll
        for (int i = 0; i < COLS; ++i) {
            if (live && i < S) {
                d[at(vd, e0, e1, 0, 0)] = col[i];
            }
            if (++e0 == vd.ne[0]) {
                e0 = 0;
                ++e1;
            }
        }
    }
}

extern "C" __global__ void gated_delta_net_c32(float* d, const float* q, const float* k, const float* v,
                                               const float* g, const float* beta, const float* state, const int* p) {
    gated_delta_net<32>(d, q, k, v, g, beta, state, p);
}
extern "C" __global__ void gated_delta_net_c64(float* d, const float* q, const float* k, const float* v,
                                               const float* g, const float* beta, const float* state, const int* p) {
    gated_delta_net<64>(d, q, k, v, g, beta, state, p);
}
extern "C" __global__ void gated_delta_net_c128(float* d, const float* q, const float* k, const float* v,
                                                const float* g, const float* beta, const float* state, const int* p) {
    gated_delta_net<128>(d, q, k, v, g, beta, state, p);
}
