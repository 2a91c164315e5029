// MUL_MAT: dst[n, m, i2, i3] = sum_k a[k, n, i2 / (b2 / a2), i3 / (b3 / a3)] * b[k, m, i2, i3] (ggml broadcasts a
// by division). A_F16 (host define) reads a as half (vload_half is exact). A quantized a (a type define, quants.cl's
// QK) is an array of blocks (its offset and strides count blocks) dequantized in registers, 16 elements at a time,
// inside the kernels below: the matrix-vector product streams its blocks once, the packed product dequantizes each
// chunk straight into its local tile.
#ifdef QK
typedef qblock AT;
#define A_AT_K(p, k, ak) ((p) + (k) / QK * (ak))  // k: a multiple of QK
#elif defined(A_F16)
#define LOAD_A(p) vload_half(0, p)
#define LOAD_A8(p) vload_half8(0, p)
typedef half AT;
#else
#define LOAD_A(p) (*(p))
#define LOAD_A8(p) vload8(0, p)
typedef float AT;
#endif
#ifndef QK
#define A_AT_K(p, k, ak) ((p) + (k) * (ak))
#endif

// MUL_MAT with few columns of b (matrix-vector products, where the packed kernel below would waste most of its
// micro-kernel) when a and b are both contiguous along k: no local memory, no barrier. Each work item
// takes RN rows of a x RM rows of b and walks k 8 at a time with float8 fma accumulators (the CPU caches do the
// blocking: a work group's rows of a and b stay in L2). Rows past N / M are clamped to the last row (computed,
// not stored), so the inner loop has no branches. Built when the host picks it (it passes RN and RM).
#if defined(RN) && !defined(QK)
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

// MUL_MAT with a quantized a and few columns of b contiguous along k (ggml's mul_mat_vec_q shape). One work item per
// work group, so the kernel is plain sequential code (PoCL vectorised 64 work items across each other into
// gathers, 7x slower): it stages its RM columns of b in local memory once (quants.cl's stage_b: in the order the
// type's block_dot reads them, with their 32-element sums) and then walks QROWS rows of a, each row's blocks once,
// dequantized in registers by block_dot into one float16 accumulator per column. K is whole blocks (the host
// checked); the host sizes bl: RM * (K + K / 32) floats.
#if defined(QROWS)
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void mul_mat_vec_q(__global float* restrict d, __global const qblock* restrict a, __global const float* restrict b,
                   const Params P, __local float* bl) {
    const int n0 = get_group_id(0) * QROWS, m0 = get_group_id(1) * RM, z = get_group_id(2);
    const int K = NE(T_A, 0), N = NE(T_A, 1), M = NE(T_B, 1), n_end = min(N, n0 + QROWS);
    const int i2 = z % NE(T_DST, 2), i3 = z / NE(T_DST, 2);
    __local float* bs = bl + RM * K;
    for (int c = 0; c < RM; ++c) {
        __global const float* bc = b + OFF(T_B) + i2 * NB(T_B, 2) + i3 * NB(T_B, 3) + min(m0 + c, M - 1) * NB(T_B, 1);
        for (int blk = 0; blk < K / QK; ++blk)
            stage_b(bl + c * K + blk * QK, bs + c * (K / 32) + blk * (QK / 32), bc + blk * QK);
    }
    __global const qblock* a0 = a + OFF(T_A) + (i2 / (NE(T_B, 2) / NE(T_A, 2))) * NB(T_A, 2)
                                + (i3 / (NE(T_B, 3) / NE(T_A, 3))) * NB(T_A, 3);
    __global float* d0 = d + OFF(T_DST) + i2 * NB(T_DST, 2) + i3 * NB(T_DST, 3);
    for (int n = n0; n < n_end; ++n) {
        __global const qblock* row = a0 + n * NB(T_A, 1);
        float16 acc[RM];
        for (int c = 0; c < RM; ++c) acc[c] = 0.0f;
        for (int blk = 0; blk < K / QK; ++blk)
            for (int c = 0; c < RM; ++c)
                acc[c] = block_dot(row + blk, bl + c * K + blk * QK, bs + c * (K / 32) + blk * (QK / 32), acc[c]);
        for (int c = 0; c < RM && m0 + c < M; ++c) {
            const float8 s8 = acc[c].lo + acc[c].hi;
            const float4 s4 = s8.lo + s8.hi;
            const float2 s2 = s4.lo + s4.hi;
            d0[n * NB(T_DST, 0) + (m0 + c) * NB(T_DST, 1)] = s2.x + s2.y;
        }
    }
}
#endif

// The packed product (MUL_MAT once M is not tiny, every stride pattern; MUL_MAT_ID always): one work item per work
// group, so the kernel is plain sequential code and its float8 vectors map onto the CPU's SIMD registers (PoCL adds
// no work-item loop). A group owns PN = 8 * NV rows of a (n). Per chunk of KC k it packs those rows transposed into
// local memory (at[k][n], PN * KC floats, stays in L1) through any strides, converting f16; then for each CM
// columns of b an outer-product micro-kernel: per k NV float8 loads of at, CM scalar loads of b (broadcast) and
// CM * NV fma into CM * NV float8 accumulators, all in registers (the loops must be unrolled for that: PoCL's LLVM
// otherwise keeps the accumulators on the stack, 4x slower). Chunks after the first add onto dst. Host defines: KC,
// CM, NV (4 x 3 = 12 of AVX2's 16 registers measured best), TM (columns of b per MUL_MAT group), BK1 when b is
// contiguous along k.
#ifdef KC
#define PN (8 * NV)
#ifdef BK1
#define BK 1
#else
#define BK bk
#endif

#ifdef QK
// at[k * PN + j] = a[k, min(n0 + j, N - 1)] for k < kc (whole blocks), j < PN: each row's blocks dequantized 16
// elements at a time and stored transposed (ak = 1: a row's blocks lie side by side).
void pack_rows(__local float* at, __global const qblock* a, int ak, int an, int kc, int n0, int N) {
    for (int j = 0; j < PN; ++j) {
        __global const qblock* row = a + min(n0 + j, N - 1) * an;
        for (int k = 0; k < kc; k += 16) {
            float v[16];
            vstore16(dequant16(row + k / QK, k % QK / 16), 0, v);
            _Pragma("unroll") for (int i = 0; i < 16; ++i) at[(k + i) * PN + j] = v[i];
        }
    }
}
#else
// at[k * PN + j] = a[k * ak + min(n0 + j, N - 1) * an] for k < kc, j < PN, walking a along its smaller stride.
// Rows contiguous along k: 8 x 8 blocks, read as 8 float8 rows and written as 8 float8 columns (transposed in
// registers), then the k tail.
void pack_rows(__local float* at, __global const AT* a, int ak, int an, int kc, int n0, int N) {
    if (ak == 1) {
        const int kc8 = kc & ~7;
        for (int j0 = 0; j0 < PN; j0 += 8) {
            __global const AT* row[8];
            _Pragma("unroll") for (int i = 0; i < 8; ++i) row[i] = a + min(n0 + j0 + i, N - 1) * an;
            for (int k = 0; k < kc8; k += 8) {
                float r[8][8];
                _Pragma("unroll") for (int i = 0; i < 8; ++i) vstore8(LOAD_A8(row[i] + k), 0, r[i]);
                _Pragma("unroll") for (int kk = 0; kk < 8; ++kk)
                    vstore8((float8)(r[0][kk], r[1][kk], r[2][kk], r[3][kk], r[4][kk], r[5][kk], r[6][kk], r[7][kk]),
                            0, at + (k + kk) * PN + j0);
            }
            for (int k = kc8; k < kc; ++k)
                _Pragma("unroll") for (int i = 0; i < 8; ++i) at[k * PN + j0 + i] = LOAD_A(row[i] + k);
        }
    } else if (ak <= an) {
        for (int j = 0; j < PN; ++j) {
            __global const AT* row = a + min(n0 + j, N - 1) * an;
            for (int k = 0; k < kc; ++k) at[k * PN + j] = LOAD_A(row + k * ak);
        }
    } else {
        for (int k = 0; k < kc; ++k)
            for (int j = 0; j < PN; ++j) at[k * PN + j] = LOAD_A(a + k * ak + min(n0 + j, N - 1) * an);
    }
}
#endif

// dst column c (dc[c], at row n0, row stride dn) += or = (first chunk) sum_k at[k][.] * bc[c][k * BK], for the
// first nc columns and nr rows; bc[nc..] must point at readable columns (computed, not stored).
inline void micro_kernel(__local const float8* at, int kc, __global const float* bc[CM], int bk,
                         __global float* dc[CM], int nc, int nr, int dn, bool first) {
    float8 acc[CM][NV];
    _Pragma("unroll") for (int c = 0; c < CM; ++c)
        _Pragma("unroll") for (int v = 0; v < NV; ++v) acc[c][v] = 0.0f;
    for (int k = 0; k < kc; ++k) {
        float8 av[NV];
        _Pragma("unroll") for (int v = 0; v < NV; ++v) av[v] = at[k * NV + v];
        _Pragma("unroll") for (int c = 0; c < CM; ++c) {
            const float8 bv = bc[c][k * BK];
            _Pragma("unroll") for (int v = 0; v < NV; ++v) acc[c][v] = fma(av[v], bv, acc[c][v]);
        }
    }
    if (nc == CM && nr == PN && dn == 1) {
        _Pragma("unroll") for (int c = 0; c < CM; ++c)
            _Pragma("unroll") for (int v = 0; v < NV; ++v) {
                __global float* p = dc[c] + 8 * v;
                vstore8(first ? acc[c][v] : acc[c][v] + vload8(0, p), 0, p);
            }
        return;
    }
    _Pragma("unroll") for (int c = 0; c < CM; ++c)
        _Pragma("unroll") for (int v = 0; v < NV; ++v) {
            float s[8];
            vstore8(acc[c][v], 0, s);
            for (int i = 0; i < 8 && c < nc && 8 * v + i < nr; ++i) {
                __global float* p = dc[c] + (8 * v + i) * dn;
                *p = first ? s[i] : s[i] + *p;
            }
        }
}

// MUL_MAT: a group computes PN rows x TM columns of dst for one (i2, i3).
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void mul_mat_pack(__global float* restrict d, __global const AT* restrict a, __global const float* restrict b,
                  const Params P) {
    __local float8 at[KC * NV];  // at[k * NV + v] = a[k0 + k, n0 + 8 v .. 8 v + 7]
    const int n0 = get_group_id(0) * PN, m0 = get_group_id(1) * TM, z = get_group_id(2);
    const int i2 = z % NE(T_DST, 2), i3 = z / NE(T_DST, 2);
    const int K = NE(T_A, 0), N = NE(T_A, 1), M = NE(T_B, 1), m_end = min(M, m0 + TM);
    const int ak = NB(T_A, 0), an = NB(T_A, 1), bk = NB(T_B, 0), bm = NB(T_B, 1);
    const int dn = NB(T_DST, 0), dm = NB(T_DST, 1);
    __global const AT* a0 = a + OFF(T_A) + (i2 / (NE(T_B, 2) / NE(T_A, 2))) * NB(T_A, 2)
                            + (i3 / (NE(T_B, 3) / NE(T_A, 3))) * NB(T_A, 3);
    __global const float* b0 = b + OFF(T_B) + i2 * NB(T_B, 2) + i3 * NB(T_B, 3);
    __global float* d0 = d + OFF(T_DST) + i2 * NB(T_DST, 2) + i3 * NB(T_DST, 3) + n0 * dn;
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = min(KC, K - k0);
        pack_rows((__local float*)at, A_AT_K(a0, k0, ak), ak, an, kc, n0, N);
        for (int m = m0; m < m_end; m += CM) {
            __global const float* bc[CM];
            __global float* dc[CM];
            _Pragma("unroll") for (int c = 0; c < CM; ++c) {
                bc[c] = b0 + min(m + c, M - 1) * bm + k0 * BK;
                dc[c] = d0 + min(m + c, M - 1) * dm;
            }
            micro_kernel(at, kc, bc, bk, dc, min(CM, m_end - m), min(PN, N - n0), dn, k0 == 0);
        }
    }
}

// MUL_MAT_ID: dst[n, e, t] = sum_k w[k, n, ids[e, t]] * b[k, e % n_b1, t] (w = src0, b = src1, ids = src2).
// A group owns PN rows of one expert x: per chunk of k it scans ids for the (e, t) that chose x and runs the
// micro-kernel on them CM at a time (packing w's rows at the first), so each expert's weights are read from memory
// once however many tokens use it; an expert nobody chose costs one scan of ids per chunk.
#define T_IDS 3
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void mul_mat_id(__global float* restrict d, __global const AT* restrict w, __global const float* restrict b,
                __global const int* restrict ids, const Params P) {
    __local float8 at[KC * NV];
    const int n0 = get_group_id(0) * PN, x = get_group_id(1);
    const int K = NE(T_A, 0), N = NE(T_A, 1), n_used = NE(T_IDS, 0), n_b1 = NE(T_B, 1), T = NE(T_IDS, 1);
    const int ak = NB(T_A, 0), an = NB(T_A, 1), bk = NB(T_B, 0), dn = NB(T_DST, 0);
    __global const AT* w0 = w + OFF(T_A) + x * NB(T_A, 2);
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = min(KC, K - k0);
        bool packed = false;
        __global const float* bc[CM];
        __global float* dc[CM];
        int nc = 0;
        for (int t = 0; t < T; ++t)
            for (int e = 0; e < n_used; ++e) {
                if (ids[OFF(T_IDS) + e * NB(T_IDS, 0) + t * NB(T_IDS, 1)] == x) {
                    bc[nc] = b + OFF(T_B) + e % n_b1 * NB(T_B, 1) + t * NB(T_B, 2) + k0 * BK;
                    dc[nc++] = d + OFF(T_DST) + e * NB(T_DST, 1) + t * NB(T_DST, 2) + n0 * dn;
                }
                if (nc < CM && (nc == 0 || t + 1 < T || e + 1 < n_used)) continue;
                if (!packed) {
                    pack_rows((__local float*)at, A_AT_K(w0, k0, ak), ak, an, kc, n0, N);
                    packed = true;
                }
                for (int c = nc; c < CM; ++c) bc[c] = bc[0];
                micro_kernel(at, kc, bc, bk, dc, nc, min(PN, N - n0), dn, k0 == 0);
                nc = 0;
            }
    }
}
#endif
