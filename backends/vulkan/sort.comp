#version 450
// ARGSORT (ASC, or DESC defined by the host from word0) and TOP_K (word0: k; always DESC) along ne0, i32 out; one of
// OP_ARGSORT / OP_TOP_K defined. One subgroup per row, registers only (no shared memory, no barriers); TOP_K sorts
// DESC and stores only the first k.
// BITONIC (rows of at most SG * CHUNK, SORT_PASS on the host): the row, padded to PADN = SG * CHUNK (a power of
// two) with keys that sort last, is bitonic-sorted as (value, index) keys, unique so ties need no care: lane l holds
// positions l*CHUNK + c; stages with partners closer than CHUNK swap registers (the network is spelled out by
// macros, so register indices are constants), farther ones with subgroupShuffleXor.
// Otherwise rank counting, O(n^2): element i goes to position rank_i = #{j < i : a_j before-or-equal a_i} +
// #{j > i : a_j before a_i} ("before": smaller for ASC, larger for DESC), a permutation even with ties. Each lane
// holds CHUNK elements of a strip of SG * CHUNK; the row streams past once per strip, each lane loading 4 elements
// of every SG * 4 block and subgroupShuffle handing them to the others (lavapipe loads lane by lane inside loops: a
// lane-wide load costs what one broadcast load does). Blocks wholly before or after the strip need no index test.
// Inner loops are unrolled because llvmpipe ends any invocation's loops after 65535 iterations in all (its loop
// limiter): (n / (SG * CHUNK)) * (n / (SG * 4)) iterations must stay below that (the host checks).
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#extension GL_EXT_control_flow_attributes : enable
#define WG 64
#include "common.glsl"

#if defined(DESC) || defined(OP_TOP_K)
#define BEFORE(y, x) ((y) > (x))
#define BEFORE_EQ(y, x) ((y) >= (x))
#define LAST uintBitsToFloat(0xFF800000u) // -inf: padding sorts after every value (and after real -inf by index)
#else
#define BEFORE(y, x) ((y) < (x))
#define BEFORE_EQ(y, x) ((y) <= (x))
#define LAST uintBitsToFloat(0x7F800000u)
#endif

float x[CHUNK];
int n, bs, sx, lane, i0;

#if defined(BITONIC)
int xi[CHUNK];

// Whether key (v, i) goes after key (w, j).
bool after(float v, int i, float w, int j) { return BEFORE(w, v) || (v == w && i > j); }

// One compare-exchange stage of the network (block size K, partner distance J: literals, so every register index is
// a constant once the c loop is unrolled).
void stage_across(int k, int j) { // partner: same register of lane ^ (j / CHUNK)
    bool lower = (lane & (j / CHUNK)) == 0;
    [[unroll]] for (int c = 0; c < CHUNK; ++c) {
        float w = subgroupShuffleXor(x[c], uint(j / CHUNK));
        int wi = subgroupShuffleXor(xi[c], uint(j / CHUNK));
        bool asc = ((lane * CHUNK + c) & k) == 0; // this block sorts up
        bool take = (lower == asc) == after(x[c], xi[c], w, wi); // lower == asc keeps the earlier key
        x[c] = take ? w : x[c];
        xi[c] = take ? wi : xi[c];
    }
}
#define STAGE(K, J) \
    if (J >= CHUNK) { \
        stage_across(K, J); \
    } else { \
        [[unroll]] for (int c = 0; c < CHUNK; ++c) { \
            if ((c & J) == 0) { \
                bool asc = ((lane * CHUNK + c) & K) == 0; \
                bool swap = asc == after(x[c], xi[c], x[c | J], xi[c | J]); \
                float v = x[c]; \
                int vi = xi[c]; \
                x[c] = swap ? x[c | J] : v; \
                xi[c] = swap ? xi[c | J] : vi; \
                x[c | J] = swap ? v : x[c | J]; \
                xi[c | J] = swap ? vi : xi[c | J]; \
            } \
        } \
    }
#define M2(K) STAGE(K, 1)
#define M4(K) STAGE(K, 2) M2(K)
#define M8(K) STAGE(K, 4) M4(K)
#define M16(K) STAGE(K, 8) M8(K)
#define M32(K) STAGE(K, 16) M16(K)
#define M64(K) STAGE(K, 32) M32(K)
#define M128(K) STAGE(K, 64) M64(K)
#define M256(K) STAGE(K, 128) M128(K)
#define M512(K) STAGE(K, 256) M256(K)
#define M1024(K) STAGE(K, 512) M512(K)
#define PADN (SG * CHUNK)

void sort_row() {
    M2(2)
#if PADN >= 4
    M4(4)
#endif
#if PADN >= 8
    M8(8)
#endif
#if PADN >= 16
    M16(16)
#endif
#if PADN >= 32
    M32(32)
#endif
#if PADN >= 64
    M64(64)
#endif
#if PADN >= 128
    M128(128)
#endif
#if PADN >= 256
    M256(256)
#endif
#if PADN >= 512
    M512(512)
#endif
#if PADN >= 1024
    M1024(1024)
#endif
}
#else
// Rank this lane's elements against blocks [jb, je) of SG * 4 (je <= n rounded up); MODE 0: every j < i, 1: every
// j > i, 2: compare indices. Lane u loads j0 + 4u .. + 3 (NaN past the row: compares false).
#define STREAM(MODE) \
    for (int j0 = jb; j0 < je; j0 += SG * 4) { \
        float mine[4]; \
        [[unroll]] for (int q = 0; q < 4; ++q) { \
            int j = j0 + 4 * lane + q; \
            float v = LOAD_F32(S0, bs + min(j, n - 1) * sx); \
            mine[q] = j < n ? v : uintBitsToFloat(0x7FC00000u); \
        } \
        [[unroll]] for (int u = 0; u < SG; ++u) { \
            [[unroll]] for (int q = 0; q < 4; ++q) { \
                float y = subgroupShuffle(mine[q], u); \
                int d = j0 + 4 * u + q - i0; \
                [[unroll]] for (int c = 0; c < CHUNK; ++c) { \
                    bool b = MODE == 0 ? BEFORE_EQ(y, x[c]) : MODE == 1 ? BEFORE(y, x[c]) \
                                       : (d < c ? BEFORE_EQ(y, x[c]) : BEFORE(y, x[c])); \
                    rank[c] += b ? 1 : 0; \
                } \
            } \
        } \
    }
#endif

void main() {
    load_params();
    ivec4 ne = ne_0;
    n = ne.x;
    int nrows = ne.y * ne.z * ne.w;
    ivec4 nbd = nb_d;
    sx = nb_0.x;
    int od = off_d, os = off_0;
#if defined(OP_TOP_K)
    int keep = op_int(0);
#else
    int keep = n;
#endif
    lane = int(gl_SubgroupInvocationID);
    int per_group = int(gl_NumSubgroups);
    int stride = int(gl_NumWorkGroups.x * gl_NumWorkGroups.y) * per_group;
    for (int row = group_id() * per_group + int(gl_SubgroupID); row < nrows; row += stride) {
        ivec4 r = ivec4(0, row % ne.y, (row / ne.y) % ne.z, row / (ne.y * ne.z));
        int bd = at(r, nbd, od);
        bs = at(r, nb_0, os);
#if defined(BITONIC)
        i0 = lane * CHUNK;
        [[unroll]] for (int c = 0; c < CHUNK; ++c) {
            float v = LOAD_F32(S0, bs + min(i0 + c, n - 1) * sx);
            x[c] = i0 + c < n ? v : LAST;
            xi[c] = i0 + c;
        }
        sort_row();
        [[unroll]] for (int c = 0; c < CHUNK; ++c) {
            if (i0 + c < keep) D[bd + (i0 + c) * nbd.x] = uint(xi[c]);
        }
#else
        for (int s0 = 0; s0 < n; s0 += SG * CHUNK) {
            i0 = s0 + lane * CHUNK; // this lane's elements i0 .. i0 + CHUNK - 1 (past n: clamped, not stored)
            int s1 = min(s0 + SG * CHUNK, n);
            int rank[CHUNK];
            [[unroll]] for (int c = 0; c < CHUNK; ++c) {
                x[c] = LOAD_F32(S0, bs + min(i0 + c, n - 1) * sx);
                rank[c] = 0;
            }
            int jb = 0, je = s0; // blocks before the strip (CHUNK >= 4: strips are whole blocks)
            STREAM(0)
            jb = s0; je = s1;
            STREAM(2)
            jb = s1; je = n;
            STREAM(1)
            [[unroll]] for (int c = 0; c < CHUNK; ++c) {
                if (i0 + c < n && rank[c] < keep) D[bd + rank[c] * nbd.x] = uint(i0 + c);
            }
        }
#endif
    }
}
