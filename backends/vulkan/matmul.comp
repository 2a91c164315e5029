#version 450
// MUL_MAT: dst[n,m,i2,i3] = sum_k a[k,n,i2/(b2/a2),i3/(b3/a3)] * b[k,m,i2,i3]; a f32, or f16 with A_F16; b, dst f32.
// A thread computes a 4x4 block of dst (4 n by 4 m): per step it loads 4 values of a and 4 of b and does 16 FMAs,
// which is what pays on lavapipe, where every load is the cost. Rows past N/M are clamped (valid loads, results
// dropped at the store) so the loop has no branches.
// VEC4: a and b have nb0 == 1 and K, offsets, strides multiples of 4: k advances by 4 with 16-byte (8 for f16)
// loads, 8 loads per 64 FMAs. Otherwise the general path walks every stride (16-byte loads along n or m for
// transposed views measured no faster: lavapipe's per-lane loads cost per component).
// SHARE (with VEC4, subgroups of exactly 8 lanes): a subgroup computes 8*TNB n by 8*MT m. Lane u loads rows
// n0 + 8r + u of a and subgroupBroadcast hands them to the other lanes; each lane loads its own MT columns of b.
// With the host's TNB 4, MT 8, per 4 k a lane loads 12 uvec4 for 1024 FMAs (its 256 accumulators spill to the
// stack, which is far cheaper than lavapipe's lane-by-lane buffer loads). Measured against it on the 1024x1024x512
// bench case: tiles (8,8) and (4,16) no faster; a 64x64 shared-memory tile (16 k per barrier, 8x8 outputs a
// thread from vec4 shared loads) 1.75 GFLOPS against 8.8: shared loads are lane by lane too, and barriers cost.
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_ballot : enable
#extension GL_EXT_control_flow_attributes : enable
#define WG 64
#include "common.glsl"
#include "quants.glsl"

#if defined(A_F16)
#define LOAD_A(i) LOAD_F16(S0, i)
vec4 load_a4(int i) { // i: a multiple of 4 halves
    uvec2 h = S02[i >> 2];
    return vec4(f16_to_f32(h.x & 0xFFFFu), f16_to_f32(h.x >> 16), f16_to_f32(h.y & 0xFFFFu), f16_to_f32(h.y >> 16));
}
#else
#define LOAD_A(i) LOAD_F32(S0, i)
vec4 load_a4(int i) { return uintBitsToFloat(S04[i >> 2]); }
#endif

#if defined(SHARE) // TNB, MT: the tile (host-defined)
// The SHARE product of a subgroup's 8*TNB rows of a (lane u loaded rows 8r + u, from ar) by each lane's own MT
// columns of b (br): acc[c][h][i] += sum_k a[k, row 4h + i] * b[k, column c].
void share_dot(inout vec4 acc[MT][2 * TNB], int ar[TNB], int br[MT], int K) {
    for (int k = 0; k < K; k += 4) {
        vec4 b[MT];
        for (int c = 0; c < MT; ++c) b[c] = uintBitsToFloat(S14[(br[c] + k) >> 2]);
        for (int r = 0; r < TNB; ++r) {
            vec4 a = load_a4(ar[r] + k);
            // rows 8r .. +3 and +4 .. +7 at this k, as 4x4 blocks: column kk = a[k+kk, row]
            mat4 lo = transpose(mat4(subgroupBroadcast(a, 0), subgroupBroadcast(a, 1), subgroupBroadcast(a, 2),
                                     subgroupBroadcast(a, 3)));
            mat4 hi = transpose(mat4(subgroupBroadcast(a, 4), subgroupBroadcast(a, 5), subgroupBroadcast(a, 6),
                                     subgroupBroadcast(a, 7)));
            for (int c = 0; c < MT; ++c) {
                acc[c][2 * r] += lo * b[c];
                acc[c][2 * r + 1] += hi * b[c];
            }
        }
    }
}
#endif

#if defined(QK)
// Quantized a (Q_<TYPE>: quants.glsl reads its blocks in place). A thread computes QR rows n by QC columns m and walks
// K in pieces of 32: per piece it loads each column's 32 values of b once, then dequantizes each row's piece in
// registers (dq32) and dots it with every column - no dequantized copy of a anywhere. The host picks QMV (mat-vec:
// M <= 4, QR 8, QC = M rounded up to a power of two: every block of a is read once) or QTILE (QR 4, QC 8: each
// dequantized piece serves 8 columns). MUL_MAT_ID runs QMV per (slot, token) column. B_VEC4: b's rows contiguous
// along K with 4-aligned starts (16-byte loads), else strided loads. Rows past N and columns past M are clamped
// (valid loads, results dropped at the store).
#if defined(QTILE)
#define QR 4
#define QC 8
#else // QMV, QC from the host
#define QR 8
#endif

void load_b32(int base, int k0, out vec4 bv[8]) {
#if defined(B_VEC4)
    [[unroll]] for (int i = 0; i < 8; ++i) bv[i] = uintBitsToFloat(S14[((base + k0) >> 2) + i]);
#else
    int sb = nb_1.x;
    [[unroll]] for (int i = 0; i < 8; ++i) {
        int k = base + (k0 + 4 * i) * sb;
        bv[i] = vec4(LOAD_F32(S1, k), LOAD_F32(S1, k + sb), LOAD_F32(S1, k + 2 * sb), LOAD_F32(S1, k + 3 * sb));
    }
#endif
}

// acc[c][r] = sum_k a[k, row r] * b[k, column c]; ar: each row's first block, br: each column's first element.
void qdot(int ar[QR], int br[QC], int K, out float acc[QC][QR]) {
    [[unroll]] for (int c = 0; c < QC; ++c)
        [[unroll]] for (int r = 0; r < QR; ++r) acc[c][r] = 0.0;
    for (int k0 = 0; k0 < K; k0 += 32) {
        int block = k0 / QK, piece = (k0 % QK) / 32;
        vec4 bv[QC][8];
        [[unroll]] for (int c = 0; c < QC; ++c) load_b32(br[c], k0, bv[c]);
        [[unroll]] for (int r = 0; r < QR; ++r) {
            vec4 av[8];
            dq32((ar[r] + block) * QBYTES, piece, av);
            [[unroll]] for (int c = 0; c < QC; ++c) {
                vec4 sum = av[0] * bv[c][0] + av[1] * bv[c][1] + av[2] * bv[c][2] + av[3] * bv[c][3]
                         + av[4] * bv[c][4] + av[5] * bv[c][5] + av[6] * bv[c][6] + av[7] * bv[c][7];
                acc[c][r] += (sum.x + sum.y) + (sum.z + sum.w);
            }
        }
    }
}

#if defined(OP_MUL_MAT_ID)
layout(std430, binding = 4) readonly buffer IdsBuf { int S2[]; };

void main() {
    load_params();
    int off_i = off_of(3);
    ivec4 nb_i = nb_of(3);
    int K = ne_0.x, N = ne_0.y, n_used = ne_d.y, T = ne_d.z;
    int bn = (N + QR - 1) / QR;
    int t = group_id() * WG + int(gl_LocalInvocationID.x);
    if (t >= bn * n_used * T) return;
    int n0 = (t % bn) * QR;
    t /= bn;
    int e = t % n_used, tok = t / n_used;
    int expert = S2[off_i + e * nb_i.x + tok * nb_i.y];
    int ar[QR];
    [[unroll]] for (int r = 0; r < QR; ++r) ar[r] = off_0 + expert * nb_0.z + min(n0 + r, N - 1) * nb_0.y;
    int br[QC];
    [[unroll]] for (int c = 0; c < QC; ++c) br[c] = off_1 + (e % ne_1.y) * nb_1.y + tok * nb_1.z;
    float acc[QC][QR];
    qdot(ar, br, K, acc);
    int d = off_d + e * nb_d.y + tok * nb_d.z;
    for (int r = 0; r < QR; ++r) {
        if (n0 + r < N) store_f32(d + (n0 + r) * nb_d.x, acc[0][r]);
    }
}
#else
void main() {
    load_params();
    int K = ne_0.x, N = ne_0.y, M = ne_1.y;
    int bn = (N + QR - 1) / QR, bm = (M + QC - 1) / QC;
    int t = group_id() * WG + int(gl_LocalInvocationID.x);
    if (t >= bn * bm * ne_1.z * ne_1.w) return;
    int n0 = (t % bn) * QR;
    t /= bn;
    int m0 = (t % bm) * QC;
    t /= bm;
    int i2 = t % ne_1.z, i3 = t / ne_1.z;
    int a_batch = off_0 + (i2 / (ne_1.z / ne_0.z)) * nb_0.z + (i3 / (ne_1.w / ne_0.w)) * nb_0.w; // in blocks
    int ar[QR];
    [[unroll]] for (int r = 0; r < QR; ++r) ar[r] = a_batch + min(n0 + r, N - 1) * nb_0.y;
    int br[QC];
    [[unroll]] for (int c = 0; c < QC; ++c) br[c] = off_1 + i2 * nb_1.z + i3 * nb_1.w + min(m0 + c, M - 1) * nb_1.y;
    float acc[QC][QR];
    qdot(ar, br, K, acc);
    int d = off_d + i2 * nb_d.z + i3 * nb_d.w;
    for (int c = 0; c < QC; ++c) {
        for (int r = 0; r < QR; ++r) {
            if (n0 + r < N && m0 + c < M) store_f32(d + (n0 + r) * nb_d.x + (m0 + c) * nb_d.y, acc[c][r]);
        }
    }
}
#endif
#elif defined(OP_MUL_MAT_ID)
// MUL_MAT_ID: dst[n,e,t] = sum_k w[k,n,ids[e,t]] * b[k,e%n_b1,t] (w = a above, ids i32 at binding 4).
// SHARE (VEC4, 8-lane subgroups): a subgroup owns 8*TNB rows of one expert and runs MUL_MAT's SHARE tile on the
// expert's columns, 8*MT at a time (see main below); the host picks it while its loop iterations stay in bounds.
// BY_EXPERT: a thread owns 4 rows n of one expert x and walks the columns q = (e, t) with ids == x, MT at a time:
// per 4 k it loads 4 of w and MT of b for 16 * MT FMAs, so each w row is loaded once per MT columns instead of once
// per column. The columns of a batch are found by rescanning ids from where the last batch ended, into a shift
// register (selects only: constant indices, no branch). Otherwise a thread computes 4 n of one column (the host
// picks this when BY_EXPERT could pass llvmpipe's 65535 loop iterations: many columns on one expert and a long K).
layout(std430, binding = 4) readonly buffer IdsBuf { int S2[]; };

int K, N, off_i;
ivec4 nb_i;

#if defined(VEC4)
#define DOT4(acc, ar, br) \
    for (int k = 0; k < K; k += 4) { \
        mat4 at4 = transpose(mat4(load_a4(ar.x + k), load_a4(ar.y + k), load_a4(ar.z + k), load_a4(ar.w + k))); \
        [[unroll]] for (int c = 0; c < NC; ++c) acc[c] += at4 * uintBitsToFloat(S14[(br[c] + k) >> 2]); \
    }
#else
#define DOT4(acc, ar, br) \
    for (int k = 0; k < K; ++k) { \
        int ka = k * nb_0.x; \
        vec4 av = vec4(LOAD_A(ar.x + ka), LOAD_A(ar.y + ka), LOAD_A(ar.z + ka), LOAD_A(ar.w + ka)); \
        [[unroll]] for (int c = 0; c < NC; ++c) acc[c] += av * LOAD_F32(S1, br[c] + k * nb_1.x); \
    }
#endif

void main() {
    load_params();
    off_i = off_of(3);
    nb_i = nb_of(3);
    K = ne_0.x;
    N = ne_0.y;
    int n_used = ne_d.y, T = ne_d.z;
#if defined(SHARE)
    // A subgroup owns 8*TNB rows of one expert x and takes the columns q = (e, t) with ids == x in batches of 8*MT,
    // lane u the batch's u-th MT (rank counting over the same scan in every lane: uniform control flow, as
    // subgroupBroadcast needs). A lane with fewer columns recomputes the batch's first, unstored.
    int bn = (N + 8 * TNB - 1) / (8 * TNB);
    int t = group_id() * int(gl_NumSubgroups) + int(gl_SubgroupID);
    if (t >= bn * ne_0.z) return; // whole subgroups
    int u = int(gl_SubgroupInvocationID);
    int n0 = (t % bn) * (8 * TNB), x = t / bn;
    int ar[TNB];
    for (int r = 0; r < TNB; ++r) ar[r] = off_0 + x * nb_0.z + min(n0 + 8 * r + u, N - 1) * nb_0.y;
    int ncols = n_used * T;
    for (int q0 = 0; q0 < ncols;) {
        int col[MT]; // this lane's columns, in the last slots (shift register), -1 before them
        [[unroll]] for (int c = 0; c < MT; ++c) col[c] = -1;
        int found = 0, first = -1, q = q0;
        for (; q < ncols && found < 8 * MT; ++q) {
            bool take = S2[off_i + (q % n_used) * nb_i.x + (q / n_used) * nb_i.y] == x;
            bool mine = take && found >= u * MT && found < u * MT + MT;
            [[unroll]] for (int c = 0; c < MT - 1; ++c) col[c] = mine ? col[c + 1] : col[c];
            col[MT - 1] = mine ? q : col[MT - 1];
            first = take && found == 0 ? q : first;
            found += take ? 1 : 0;
        }
        q0 = q;
        if (found == 0) break;
        int br[MT];
        [[unroll]] for (int c = 0; c < MT; ++c) {
            int qc = col[c] >= 0 ? col[c] : first;
            br[c] = off_1 + ((qc % n_used) % ne_1.y) * nb_1.y + (qc / n_used) * nb_1.z;
        }
        vec4 acc[MT][2 * TNB];
        for (int c = 0; c < MT; ++c)
            for (int h = 0; h < 2 * TNB; ++h) acc[c][h] = vec4(0.0);
        share_dot(acc, ar, br, K);
        for (int c = 0; c < MT; ++c) {
            int d = off_d + (col[c] % n_used) * nb_d.y + (col[c] / n_used) * nb_d.z;
            for (int r = 0; r < 8 * TNB; ++r) {
                if (col[c] >= 0 && n0 + r < N) store_f32(d + (n0 + r) * nb_d.x, acc[c][r / 4][r % 4]);
            }
        }
    }
#else
    int bn = (N + 3) / 4;
    int t = group_id() * WG + int(gl_LocalInvocationID.x);
#if defined(BY_EXPERT)
#define NC MT
    if (t >= bn * ne_0.z) return;
    int n0 = (t % bn) * 4, x = t / bn;
    ivec4 ar = off_0 + x * nb_0.z + min(n0 + ivec4(0, 1, 2, 3), N - 1) * nb_0.y; // rows clamped to N - 1
    int ncols = n_used * T;
    for (int q0 = 0; q0 < ncols;) { // q0: where this batch's scan starts
        int col[MT]; // the batch's columns q = e + n_used * t, -1 where fewer than MT remain
        [[unroll]] for (int c = 0; c < MT; ++c) col[c] = -1;
        int found = 0, q = q0;
        for (; q < ncols && found < MT; ++q) {
            bool take = S2[off_i + (q % n_used) * nb_i.x + (q / n_used) * nb_i.y] == x;
            [[unroll]] for (int c = 0; c < MT - 1; ++c) col[c] = take ? col[c + 1] : col[c];
            col[MT - 1] = take ? q : col[MT - 1];
            found += take ? 1 : 0;
        }
        q0 = q;
        if (found == 0) break;
        int br[MT];
        [[unroll]] for (int c = 0; c < MT; ++c) {
            int qc = col[c] >= 0 ? col[c] : col[MT - 1]; // an empty slot computes a real column again, unstored
            br[c] = off_1 + ((qc % n_used) % ne_1.y) * nb_1.y + (qc / n_used) * nb_1.z;
        }
        vec4 acc[MT];
        [[unroll]] for (int c = 0; c < MT; ++c) acc[c] = vec4(0.0);
        DOT4(acc, ar, br)
        [[unroll]] for (int c = 0; c < MT; ++c) {
            int d = off_d + (col[c] % n_used) * nb_d.y + (col[c] / n_used) * nb_d.z;
            [[unroll]] for (int r = 0; r < 4; ++r) {
                if (col[c] >= 0 && n0 + r < N) store_f32(d + (n0 + r) * nb_d.x, acc[c][r]);
            }
        }
    }
#else
#define NC 1
    if (t >= bn * n_used * T) return;
    int n0 = (t % bn) * 4;
    t /= bn;
    int e = t % n_used, tok = t / n_used;
    int expert = S2[off_i + e * nb_i.x + tok * nb_i.y];
    ivec4 ar = off_0 + expert * nb_0.z + min(n0 + ivec4(0, 1, 2, 3), N - 1) * nb_0.y; // rows clamped to N - 1
    int br[1] = int[1](off_1 + (e % ne_1.y) * nb_1.y + tok * nb_1.z);
    vec4 acc[1] = vec4[1](vec4(0.0)); // dst[n0 + r, e, tok]
    DOT4(acc, ar, br)
    int d = off_d + e * nb_d.y + tok * nb_d.z;
    for (int r = 0; r < 4; ++r) {
        if (n0 + r < N) store_f32(d + (n0 + r) * nb_d.x, acc[0][r]);
    }
#endif
#endif
}
#elif defined(SHARE)
void main() {
    load_params();
    int K = ne_0.x, N = ne_0.y, M = ne_1.y;
    int bn = (N + 8 * TNB - 1) / (8 * TNB), bm = (M + 8 * MT - 1) / (8 * MT);
    int t = group_id() * int(gl_NumSubgroups) + int(gl_SubgroupID); // this subgroup's tile
    if (t >= bn * bm * ne_1.z * ne_1.w) return; // whole subgroups
    int u = int(gl_SubgroupInvocationID);
    int n0 = (t % bn) * (8 * TNB);
    t /= bn;
    int m0 = (t % bm) * (8 * MT) + u * MT; // this lane's first column
    t /= bm;
    int i2 = t % ne_1.z, i3 = t / ne_1.z;
    int ar[TNB]; // rows n0 + 8r + u of a, clamped
    for (int r = 0; r < TNB; ++r)
        ar[r] = off_0 + (i2 / (ne_1.z / ne_0.z)) * nb_0.z + (i3 / (ne_1.w / ne_0.w)) * nb_0.w
                + min(n0 + 8 * r + u, N - 1) * nb_0.y;
    int br[MT];
    for (int c = 0; c < MT; ++c) br[c] = off_1 + i2 * nb_1.z + i3 * nb_1.w + min(m0 + c, M - 1) * nb_1.y;
    vec4 acc[MT][2 * TNB]; // acc[c][h][r] = dst[n0 + 4h + r, m0 + c]
    for (int c = 0; c < MT; ++c)
        for (int h = 0; h < 2 * TNB; ++h) acc[c][h] = vec4(0.0);
    share_dot(acc, ar, br, K);
    int d = off_d + i2 * nb_d.z + i3 * nb_d.w;
    for (int c = 0; c < MT; ++c) {
        for (int r = 0; r < 8 * TNB; ++r) {
            if (n0 + r < N && m0 + c < M) store_f32(d + (n0 + r) * nb_d.x + (m0 + c) * nb_d.y, acc[c][r / 4][r % 4]);
        }
    }
}
#else
void main() {
    load_params();
    int K = ne_0.x, N = ne_0.y, M = ne_1.y;
    int bn = (N + 3) / 4, bm = (M + 3) / 4;
    int t = group_id() * WG + int(gl_LocalInvocationID.x);
    if (t >= bn * bm * ne_1.z * ne_1.w) return;
    int n0 = (t % bn) * 4;
    t /= bn;
    int m0 = (t % bm) * 4;
    t /= bm;
    int i2 = t % ne_1.z, i3 = t / ne_1.z;
    int a_base = off_0 + (i2 / (ne_1.z / ne_0.z)) * nb_0.z + (i3 / (ne_1.w / ne_0.w)) * nb_0.w;
    int b_base = off_1 + i2 * nb_1.z + i3 * nb_1.w;
    // Start of each of the 4 rows of a (n) and of b (m), clamped to the last row.
    ivec4 ar = a_base + min(n0 + ivec4(0, 1, 2, 3), N - 1) * nb_0.y;
    ivec4 br = b_base + min(m0 + ivec4(0, 1, 2, 3), M - 1) * nb_1.y;
    mat4 acc = mat4(0.0); // acc[c][r] = dst[n0 + r, m0 + c]
#if defined(VEC4)
    for (int k = 0; k < K; k += 4) {
        vec4 a0 = load_a4(ar.x + k), a1 = load_a4(ar.y + k), a2 = load_a4(ar.z + k), a3 = load_a4(ar.w + k);
        vec4 b0 = uintBitsToFloat(S14[(br.x + k) >> 2]), b1 = uintBitsToFloat(S14[(br.y + k) >> 2]);
        vec4 b2 = uintBitsToFloat(S14[(br.z + k) >> 2]), b3 = uintBitsToFloat(S14[(br.w + k) >> 2]);
        mat4 at4 = transpose(mat4(a0, a1, a2, a3)); // at4[kk] = (a[k+kk, n0..n0+3])
        acc[0] += at4 * b0;
        acc[1] += at4 * b1;
        acc[2] += at4 * b2;
        acc[3] += at4 * b3;
    }
#else
    int sa = nb_0.x, sb = nb_1.x;
    for (int k = 0; k < K; ++k) {
        vec4 av = vec4(LOAD_A(ar.x + k * sa), LOAD_A(ar.y + k * sa), LOAD_A(ar.z + k * sa), LOAD_A(ar.w + k * sa));
        vec4 bv = vec4(LOAD_F32(S1, br.x + k * sb), LOAD_F32(S1, br.y + k * sb), LOAD_F32(S1, br.z + k * sb),
                       LOAD_F32(S1, br.w + k * sb));
        acc[0] += av * bv.x;
        acc[1] += av * bv.y;
        acc[2] += av * bv.z;
        acc[3] += av * bv.w;
    }
#endif
    int d = off_d + i2 * nb_d.z + i3 * nb_d.w;
    for (int c = 0; c < 4; ++c) {
        for (int r = 0; r < 4; ++r) {
            if (n0 + r < N && m0 + c < M) store_f32(d + (n0 + r) * nb_d.x + (m0 + c) * nb_d.y, acc[c][r]);
        }
    }
}
#endif
