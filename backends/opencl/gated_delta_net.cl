// GATED_DELTA_NET: the gated delta rule over T tokens, one work group per (head h, seq s), one work item per
// value column j holding its state column S[:, j] (S_V floats, a host define) in private memory. The group stages
// k, q and exp(g) of TB tokens at a time in local memory (each work item one key index), then every column runs
// those tokens on its own (staging one token per barrier pair cost 1.5x the CPU time on PoCL: each barrier makes
// it spill every work item's column). Per token: S[:, j] *= exp(g); delta = (v_j - S[:, j].k) * beta;
// S[:, j] += k delta; o_j = S[:, j].q / sqrt(S).
// KDA (host define): g has one gate per key channel; otherwise one per head (GDA).
// Tensors: 1 q, 2 k [S, H_k, T, n]; 3 v [S, H, T, n]; 4 g [1|S, H, T, n]; 5 beta [1, H, T, n]; 6 state [S, S, H, n].
// dst (any strides) is read as [S*H, T*n + S*n]: o of (s, t, h, j) at flat element ((s*T + t)*H + h)*S + j, then
// the final states from element S*H*T*n on, in the input state's layout.
#define T_Q 1
#define T_K 2
#define T_V 3
#define T_G 4
#define T_BETA 5
#define T_STATE 6

// The key loops run VW (8, or 1 when S_V is not a multiple of 8) keys at a time in vector registers: PoCL leaves a
// scalar float reduction unvectorised (it may not reorder the sum), so the kernel does it by hand.
#if S_V % 8 == 0
#define VW 8
typedef float8 VT;
inline float hsum(VT x) {
    const float4 a = x.lo + x.hi;
    const float2 b = a.lo + a.hi;
    return b.x + b.y;
}
#else
#define VW 1
typedef float VT;
#define hsum(x) (x)
#endif
#define NV (S_V / VW)
#define TB 16  // tokens staged per pair of barriers (8 to 64 measured the same)

__kernel __attribute__((reqd_work_group_size(S_V, 1, 1)))
void gated_delta_net(__global float* restrict d, __global const float* restrict q, __global const float* restrict k,
                     __global const float* restrict v, __global const float* restrict g,
                     __global const float* restrict beta, __global const float* restrict state, const Params P) {
    __local VT lk[TB][NV], lq[TB][NV];
#ifdef KDA
    __local VT lg[TB][NV];
#endif
    const int j = get_local_id(0), h = get_group_id(1), s = get_group_id(2);
    const int H = NE(T_V, 1), T = NE(T_V, 2), hk = h % NE(T_Q, 1);
    const float scale = 1.0f / sqrt((float)S_V);
    VT col[NV];
    __private float* colf = (__private float*)col;
    __global const float* st = state + OFF(T_STATE) + j * NB(T_STATE, 1) + h * NB(T_STATE, 2) + s * NB(T_STATE, 3);
    for (int i = 0; i < S_V; ++i) colf[i] = st[i * NB(T_STATE, 0)];
    const int qrow = OFF(T_Q) + j * NB(T_Q, 0) + hk * NB(T_Q, 1) + s * NB(T_Q, 3);
    const int krow = OFF(T_K) + j * NB(T_K, 0) + hk * NB(T_K, 1) + s * NB(T_K, 3);
    const int vrow = OFF(T_V) + j * NB(T_V, 0) + h * NB(T_V, 1) + s * NB(T_V, 3);
#ifdef KDA
    const int grow = OFF(T_G) + j * NB(T_G, 0) + h * NB(T_G, 1) + s * NB(T_G, 3);
#else
    const int grow = OFF(T_G) + h * NB(T_G, 1) + s * NB(T_G, 3);
#endif
    const int brow = OFF(T_BETA) + h * NB(T_BETA, 1) + s * NB(T_BETA, 3);
    for (int t0 = 0; t0 < T; t0 += TB) {
        const int nt = min(TB, T - t0);
        barrier(CLK_LOCAL_MEM_FENCE);  // the previous block's reads of the staged vectors are done
        for (int u = 0; u < nt; ++u) {
            const int t = t0 + u;
            ((__local float*)lk[u])[j] = k[krow + t * NB(T_K, 2)];
            ((__local float*)lq[u])[j] = q[qrow + t * NB(T_Q, 2)];
#ifdef KDA
            ((__local float*)lg[u])[j] = exp(g[grow + t * NB(T_G, 2)]);
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int u = 0; u < nt; ++u) {
            const int t = t0 + u;
            VT kv = 0.0f;
#ifdef KDA
            for (int i = 0; i < NV; ++i) {
                col[i] *= lg[u][i];
                kv += col[i] * lk[u][i];
            }
#else
            const float decay = exp(g[grow + t * NB(T_G, 2)]);
            for (int i = 0; i < NV; ++i) {
                col[i] *= decay;
                kv += col[i] * lk[u][i];
            }
#endif
            const float delta = (v[vrow + t * NB(T_V, 2)] - hsum(kv)) * beta[brow + t * NB(T_BETA, 2)];
            VT o = 0.0f;
            for (int i = 0; i < NV; ++i) {
                col[i] += lk[u][i] * delta;
                o += col[i] * lq[u][i];
            }
            d[OFF(T_DST) + (h * S_V + j) * NB(T_DST, 0) + (s * T + t) * NB(T_DST, 1)] = hsum(o) * scale;
        }
    }
    // Final state: flat element S*H*T*n + i + S*j + S*S*h + S*S*H*s, split by dst's row length S*H.
    const int row = S_V * H, first = row * T * NE(T_V, 3) + S_V * j + S_V * S_V * h + S_V * S_V * H * s;
    for (int i = 0; i < S_V; ++i) {
        const int e = first + i;
        d[OFF(T_DST) + (e % row) * NB(T_DST, 0) + (e / row) * NB(T_DST, 1)] = colf[i];
    }
}
