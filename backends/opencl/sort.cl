// ARGSORT (word0: 0 ASC, 1 DESC) and TOP_K (-DTOP_K; dst ne0 = k): a bitonic sort of each row padded to NP (a power
// of two, host define), then the first dst ne0 indices are written (all of them for ARGSORT, the k largest for
// TOP_K). An element sorts as one 64-bit key: the float made an order-preserving int (negated first for DESC) in the
// high half, its index in the low half. So ties break by index, the order is total, the result is a permutation,
// and pads (key INT_MAX, index >= ne0) land after every real element, +inf and NaN included.
#ifdef TOP_K
#define DESC true
#else
#define DESC (WORD(0) == 1)
#endif

inline long sort_key(float x, int i, bool desc) {
    int k = as_int(desc ? -x : x);
    k ^= (k >> 31) & 0x7fffffff;  // negative floats: reverse their order below the positive ones
    return ((long)k << 32) | i;
}

// Element i of the row, or a pad past ne0.
#define KEY(ar, i) ((i) < n ? sort_key((ar)[(i) * sa], (i), DESC) : (((long)INT_MAX << 32) | (i)))

// First element of flat row r (over ne1, ne2, ne3) of tensor t.
#define ROW_N(t, r) (OFF(t) + (r) % NE(t, 1) * NB(t, 1) + (r) / NE(t, 1) % NE(t, 2) * NB(t, 2) \
                     + (r) / NE(t, 1) / NE(t, 2) * NB(t, 3))

// Compare-exchange the pairs (i, i + j) of v[0, len) in blocks of 2j, ascending where bit `dir` of the block start
// is clear, else descending (?: rather than min/max/select, which PoCL makes calls on long8).
inline void cx_step(__local long8* v, int len, int j, int dir) {
    for (int b = 0; b < len; b += 2 * j) {
        const bool up = (b & dir) == 0;
        for (int i = b; i < b + j; ++i) {
            const long8 x = v[i], y = v[i + j], gt = x > y;
            const long8 lo = gt ? y : x, hi = gt ? x : y;
            v[i] = up ? lo : hi;
            v[i + j] = up ? hi : lo;
        }
    }
}

// Rows that fit 8 * NP keys in local memory: each work item sorts 8 rows at once, one per lane of long8 keys, with
// no barrier; the network is the same for every row, so a compare-exchange is a few vector instructions (a CPU
// driver runs this ~50x faster than work items sharing one row). Rows past the end repeat the last (not written).
// The network sorts blocks of KP (NP for ARGSORT; for TOP_K the power of two >= k), alternately up and down; then,
// while more than one block is left, each (up, down) pair of blocks is pruned to their element-wise min (a bitonic
// block that holds the KP smallest keys of the pair) and re-merged: a bitonic top-k, ~3x less work than a full
// sort for 8 of 256.
__kernel void argsort8(__global int* d, __global const float* a, const Params P, __local long8* buf) {
    const int n = NE(T_A, 0), sa = NB(T_A, 0), rows = NE(T_A, 1) * NE(T_A, 2) * NE(T_A, 3);
    const int r0 = get_global_id(0) * 8;
    __local long8* v = buf + get_local_id(0) * NP;
    __global const float* ar[8];
    for (int lane = 0; lane < 8; ++lane) ar[lane] = a + ROW_N(T_A, min(r0 + lane, rows - 1));
    for (int i = 0; i < n; ++i) {  // 8 rows' element i as one vector: the key transform runs on 8 lanes
        const int o = i * sa;
        const float8 x = (float8)(ar[0][o], ar[1][o], ar[2][o], ar[3][o], ar[4][o], ar[5][o], ar[6][o], ar[7][o]);
        int8 k = as_int8(DESC ? -x : x);
        k ^= (k >> 31) & 0x7fffffff;  // negative floats: reverse their order below the positive ones
        const long8 kl = (long8)(k.s0, k.s1, k.s2, k.s3, k.s4, k.s5, k.s6, k.s7);  // not convert_long8: a call
        v[i] = (kl << 32) | i;
    }
    for (int i = n; i < NP; ++i) v[i] = ((long)INT_MAX << 32) | i;  // pads: after every real key
    for (int k = 2; k <= KP; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) cx_step(v, NP, j, k);
    for (int len = NP / 2; len >= KP; len >>= 1) {
        for (int q = 0; q < len; q += KP)  // blocks 2q and 2q + 1 (in units of KP) -> block q; q < 2q: read already
            for (int i = 0; i < KP; ++i) {
                const long8 x = v[2 * q + i], y = v[2 * q + KP + i];
                v[q + i] = x > y ? y : x;
            }
        for (int j = KP / 2; j > 0; j >>= 1) cx_step(v, len, j, KP);
    }
    const int sd = NB(T_DST, 0), nout = NE(T_DST, 0);
    __local int* lanes = (__local int*)v;  // the low (index) half of lane l of v[i] is int 16 i + 2 l (little endian)
    for (int lane = 0; lane < 8 && r0 + lane < rows; ++lane) {
        __global int* dr = d + ROW_N(T_DST, r0 + lane);
        for (int i = 0; i < nout; ++i) dr[i * sd] = lanes[16 * i + 2 * lane];
    }
}

// Longer rows: one work group per row, its work items sharing the compare-exchanges of each step in local memory
// (NP keys). Every loop bound is uniform, so all work items meet every barrier.
__kernel void argsort(__global int* d, __global const float* a, const Params P, __local long* v) {
    const int n = NE(T_A, 0), sa = NB(T_A, 0), lid = get_local_id(0), lsz = get_local_size(0);
    __global const float* ar = a + ROW(T_A);
    for (int i = lid; i < NP; i += lsz) v[i] = KEY(ar, i);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = 2; k <= NP; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int p = lid; p < NP / 2; p += lsz) {
                const int i = ((p & ~(j - 1)) << 1) | (p & (j - 1));  // the pair (i, i + j)
                const long x = v[i], y = v[i + j];
                const bool up = (i & k) == 0;
                v[i] = up ? min(x, y) : max(x, y);
                v[i + j] = up ? max(x, y) : min(x, y);
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    __global int* dr = d + ROW(T_DST);
    const int sd = NB(T_DST, 0), nout = NE(T_DST, 0);
    for (int i = lid; i < nout; i += lsz) dr[i * sd] = (int)v[i];
}
