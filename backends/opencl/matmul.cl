// MUL_MAT: dst[n, m, i2, i3] = sum_k a[k, n, i2 / (b2 / a2), i3 / (b3 / a3)] * b[k, m, i2, i3] (ggml broadcasts a
// by division). A work group of WG x WG work items computes a TILE x TILE block of dst (n x m) for one (i2, i3),
// each work item R x R outputs spaced WG apart (so neighbouring work items touch neighbouring n: the work-item
// loop PoCL builds vectorises over them). K goes in steps of TK: the group stages a[k0.., n0..] and b[k0.., m0..]
// in local memory (through any strides; zeros past K, N, M so the tails need no branches in the product loop).
// A_F16 (host define) reads a as half (vload_half is exact).
#define WG 16
#define R 4
#define TILE (WG * R)
#define TK 16

#ifdef A_F16
#define LOAD_A(p) vload_half(0, p)
#define LOAD_A8(p) vload_half8(0, p)
typedef half AT;
#else
#define LOAD_A(p) (*(p))
#define LOAD_A8(p) vload8(0, p)
typedef float AT;
#endif

__kernel __attribute__((reqd_work_group_size(WG, WG, 1)))
void mul_mat(__global float* restrict d, __global const AT* restrict a, __global const float* restrict b,
             const Params P) {
    __local float as[TK][TILE];  // [k][n]
    __local float bs[TK][TILE];  // [k][m]
    const int lx = get_local_id(0), ly = get_local_id(1), l = ly * WG + lx;
    const int n0 = get_group_id(0) * TILE, m0 = get_group_id(1) * TILE, z = get_global_id(2);
    const int i2 = z % NE(T_DST, 2), i3 = z / NE(T_DST, 2);
    const int K = NE(T_A, 0), N = NE(T_A, 1), M = NE(T_B, 1);
    const int ak = NB(T_A, 0), an = NB(T_A, 1), bk = NB(T_B, 0), bm = NB(T_B, 1);
    const int abase = OFF(T_A) + (i2 / (NE(T_B, 2) / NE(T_A, 2))) * NB(T_A, 2)
                      + (i3 / (NE(T_B, 3) / NE(T_A, 3))) * NB(T_A, 3);
    const int bbase = OFF(T_B) + i2 * NB(T_B, 2) + i3 * NB(T_B, 3);
    float acc[R][R];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < R; ++c) acc[r][c] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TK) {
        // TK x TILE elements per operand, WG*WG work items: element e = l + WG*WG*r, k fastest (a row of a
        // contiguous operand is read in order).
        for (int r = 0; r < TK * TILE / (WG * WG); ++r) {
            const int e = l + WG * WG * r, kk = e % TK, x = e / TK, k = k0 + kk;
            as[kk][x] = (k < K && n0 + x < N) ? (float)LOAD_A(a + abase + k * ak + (n0 + x) * an) : 0.0f;
            bs[kk][x] = (k < K && m0 + x < M) ? b[bbase + k * bk + (m0 + x) * bm] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TK; ++kk) {
            float av[R], bv[R];
            for (int r = 0; r < R; ++r) av[r] = as[kk][lx + WG * r];
            for (int c = 0; c < R; ++c) bv[c] = bs[kk][ly + WG * c];
            for (int r = 0; r < R; ++r)
                for (int c = 0; c < R; ++c) acc[r][c] += av[r] * bv[c];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int dbase = OFF(T_DST) + i2 * NB(T_DST, 2) + i3 * NB(T_DST, 3);
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < R; ++c) {
            const int n = n0 + lx + WG * r, m = m0 + ly + WG * c;
            if (n < N && m < M) d[dbase + n * NB(T_DST, 0) + m * NB(T_DST, 1)] = acc[r][c];
        }
}

// MUL_MAT when a and b are both contiguous along k (the common case): no local memory, no barrier. Each work item
// takes RN rows of a x RM rows of b and walks k 8 at a time with float8 fma accumulators (the CPU caches do the
// blocking: a work group's rows of a and b stay in L2). Rows past N / M are clamped to the last row (computed,
// not stored), so the inner loop has no branches. Built when the host picks it (it passes RN and RM).
#ifdef RN
__kernel void mul_mat_k1(__global float* restrict d, __global const AT* restrict a, __global const float* restrict b,
                         const Params P) {
    const int n0 = get_global_id(0) * RN, m0 = get_global_id(1) * RM, z = get_global_id(2);
    const int K = NE(T_A, 0), N = NE(T_A, 1), M = NE(T_B, 1);
    if (n0 >= N || m0 >= M) return;
    const int i2 = z % NE(T_DST, 2), i3 = z / NE(T_DST, 2);
    __global const AT* ar[RN];
    __global const float* br[RM];
    for (int r = 0; r < RN; ++r)
        ar[r] = a + OFF(T_A) + (i2 / (NE(T_B, 2) / NE(T_A, 2))) * NB(T_A, 2)
                + (i3 / (NE(T_B, 3) / NE(T_A, 3))) * NB(T_A, 3) + min(n0 + r, N - 1) * NB(T_A, 1);
    for (int c = 0; c < RM; ++c)
        br[c] = b + OFF(T_B) + i2 * NB(T_B, 2) + i3 * NB(T_B, 3) + min(m0 + c, M - 1) * NB(T_B, 1);
    float8 acc[RN][RM];
    for (int r = 0; r < RN; ++r)
        for (int c = 0; c < RM; ++c) acc[r][c] = 0.0f;
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        float8 bv[RM];
        for (int c = 0; c < RM; ++c) bv[c] = vload8(0, br[c] + k);
        for (int r = 0; r < RN; ++r) {
            const float8 av = LOAD_A8(ar[r] + k);
            for (int c = 0; c < RM; ++c) acc[r][c] = fma(av, bv[c], acc[r][c]);
        }
    }
    const int dbase = OFF(T_DST) + i2 * NB(T_DST, 2) + i3 * NB(T_DST, 3);
    for (int r = 0; r < RN; ++r)
        for (int c = 0; c < RM; ++c) {
            const float4 s4 = acc[r][c].lo + acc[r][c].hi;
            const float2 s2 = s4.lo + s4.hi;
            float s = s2.x + s2.y;
            for (int kk = k; kk < K; ++kk) s = fma((float)LOAD_A(ar[r] + kk), br[c][kk], s);
            if (n0 + r < N && m0 + c < M) d[dbase + (n0 + r) * NB(T_DST, 0) + (m0 + c) * NB(T_DST, 1)] = s;
        }
}
#endif

// MUL_MAT_ID: dst[n, e, t] = sum_k w[k, n, ids[e, t]] * b[k, e % n_b1, t] (w = src0, b = src1, ids = src2).
// Grid: one work item per (RN_ID rows of N, expert x). It scans ids for the (e, t) that chose x, gathers them
// RM_ID at a time and computes that RN_ID x RM_ID block, so each expert's weights are read from memory once however
// many tokens use it (its RN_ID rows stay in cache). Unused column slots repeat the first column (computed, not
// stored) and rows past N are clamped, so the product loop has no branches. Contiguous along k: float8 fma;
// otherwise scalar through the strides. RN_ID and RM_ID come from the host.
#ifdef RM_ID
#define T_IDS 3
__kernel void mul_mat_id(__global float* restrict d, __global const AT* restrict w, __global const float* restrict b,
                         __global const int* restrict ids, const Params P) {
    const int n0 = get_global_id(0) * RN_ID, x = get_global_id(1);
    const int K = NE(T_A, 0), N = NE(T_A, 1), n_used = NE(T_IDS, 0), n_b1 = NE(T_B, 1), T = NE(T_IDS, 1);
    if (n0 >= N) return;
    const int wk = NB(T_A, 0), bk = NB(T_B, 0);
    __global const AT* wr[RN_ID];
    for (int r = 0; r < RN_ID; ++r) wr[r] = w + OFF(T_A) + x * NB(T_A, 2) + min(n0 + r, N - 1) * NB(T_A, 1);
    int ce[RM_ID], ct[RM_ID];  // the gathered columns' (e, t)
    int nc = 0;
    for (int t = 0; t < T; ++t)
        for (int e = 0; e < n_used; ++e) {
            if (ids[OFF(T_IDS) + e * NB(T_IDS, 0) + t * NB(T_IDS, 1)] == x) {
                ce[nc] = e;
                ct[nc++] = t;
            }
            if (nc == 0 || (nc < RM_ID && (t + 1 < T || e + 1 < n_used))) continue;
            __global const float* bc[RM_ID];
            for (int m = 0; m < RM_ID; ++m) {
                const int j = m < nc ? m : 0;
                bc[m] = b + OFF(T_B) + ce[j] % n_b1 * NB(T_B, 1) + ct[j] * NB(T_B, 2);
            }
            float s[RN_ID][RM_ID];
            int k = 0;
            if (wk == 1 && bk == 1) {
                float8 acc[RN_ID][RM_ID];
                for (int r = 0; r < RN_ID; ++r)
                    for (int m = 0; m < RM_ID; ++m) acc[r][m] = 0.0f;
                for (; k + 8 <= K; k += 8) {
                    float8 bv[RM_ID];
                    for (int m = 0; m < RM_ID; ++m) bv[m] = vload8(0, bc[m] + k);
                    for (int r = 0; r < RN_ID; ++r) {
                        const float8 av = LOAD_A8(wr[r] + k);
                        for (int m = 0; m < RM_ID; ++m) acc[r][m] = fma(av, bv[m], acc[r][m]);
                    }
                }
                for (int r = 0; r < RN_ID; ++r)
                    for (int m = 0; m < RM_ID; ++m) {
                        const float4 s4 = acc[r][m].lo + acc[r][m].hi;
                        const float2 s2 = s4.lo + s4.hi;
                        s[r][m] = s2.x + s2.y;
                    }
            } else {
                for (int r = 0; r < RN_ID; ++r)
                    for (int m = 0; m < RM_ID; ++m) s[r][m] = 0.0f;
            }
            for (; k < K; ++k)
                for (int r = 0; r < RN_ID; ++r) {
                    const float av = LOAD_A(wr[r] + k * wk);
                    for (int m = 0; m < RM_ID; ++m) s[r][m] = fma(av, bc[m][k * bk], s[r][m]);
                }
            for (int m = 0; m < nc; ++m)
                for (int r = 0; r < RN_ID && n0 + r < N; ++r)
                    d[OFF(T_DST) + (n0 + r) * NB(T_DST, 0) + ce[m] * NB(T_DST, 1) + ct[m] * NB(T_DST, 2)] = s[r][m];
            nc = 0;
        }
}
#endif
