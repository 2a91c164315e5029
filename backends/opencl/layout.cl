// REPEAT and PAD on the row-chunk grid (one work item = a run of one dst row). Both move raw 32-bit words.
// REPEAT: dst[i] = a[i_k % a.ne_k]. The source row is fixed per dst row; along the row the run is copied in
// stretches that do not wrap (plain copy loops the compiler vectorises), one division per run.
__kernel void repeat(__global uint* d, __global const uint* a, const Params P) {
    if (!ROW_IN_GRID) return;
    const int n0 = NE(T_A, 0), sa = NB(T_A, 0), sd = NB(T_DST, 0), end = CHUNK_END;
    __global uint* dr = d + ROW(T_DST);
    __global const uint* ar = a + OFF(T_A) + (I1 % NE(T_A, 1)) * NB(T_A, 1) + (I2 % NE(T_A, 2)) * NB(T_A, 2)
                              + (I3 % NE(T_A, 3)) * NB(T_A, 3);
    for (int i = CHUNK_BEGIN, j = CHUNK_BEGIN % n0; i < end; j = 0) {
        const int len = min(end - i, n0 - j);
        __global uint* dp = dr + i * sd;
        __global const uint* ap = ar + j * sa;
        for (int x = 0; x < len; ++x) dp[x * sd] = ap[x * sa];
        i += len;
    }
}

// PAD: dst = a inside a's extent, 0 past it. A dst row outside a's rows is all zeros; a row inside copies a's
// row then zero-fills the tail, two plain loops.
__kernel void pad(__global uint* d, __global const uint* a, const Params P) {
    if (!ROW_IN_GRID) return;
    const int i1 = I1, i2 = I2, i3 = I3, sa = NB(T_A, 0), sd = NB(T_DST, 0), begin = CHUNK_BEGIN, end = CHUNK_END;
    const bool inside = i1 < NE(T_A, 1) && i2 < NE(T_A, 2) && i3 < NE(T_A, 3);
    const int copy_end = inside ? min(end, NE(T_A, 0)) : begin;
    __global uint* dr = d + ROW(T_DST);
    __global const uint* ar = a + OFF(T_A) + i1 * NB(T_A, 1) + i2 * NB(T_A, 2) + i3 * NB(T_A, 3);
    int i = begin;
    for (; i < copy_end; ++i) dr[i * sd] = ar[i * sa];
    for (; i < end; ++i) dr[i * sd] = 0u;
}

// CONCAT (word0 = dim): dst = a then b along dim. A dst row is [0, split) from a's row and [split, ne0) from b's:
// along dim 0 split = a.ne0; along dims 1-3 the whole row comes from one of them (split = ne0 or 0), b's row
// index shifted back by a's extent. Two plain copy loops.
__kernel void concat(__global uint* d, __global const uint* a, __global const uint* b, const Params P) {
    if (!ROW_IN_GRID) return;
    const int dim = WORD(0), sd = NB(T_DST, 0), sa = NB(T_A, 0), sb = NB(T_B, 0), end = CHUNK_END;
    int i[4] = {0, I1, I2, I3};
    __global const uint* ar = a + OFF(T_A) + i[1] * NB(T_A, 1) + i[2] * NB(T_A, 2) + i[3] * NB(T_A, 3);
    int split = NE(T_A, 0);
    if (dim > 0) {
        const bool from_a = i[dim] < NE(T_A, dim);
        split = from_a ? NE(T_DST, 0) : 0;
        if (!from_a) i[dim] -= NE(T_A, dim);
    }
    __global const uint* br = b + OFF(T_B) + i[1] * NB(T_B, 1) + i[2] * NB(T_B, 2) + i[3] * NB(T_B, 3);
    __global uint* dr = d + ROW(T_DST);
    int x = CHUNK_BEGIN;
    for (const int e = min(end, split); x < e; ++x) dr[x * sd] = ar[x * sa];
    for (; x < end; ++x) dr[x * sd] = br[(x - split) * sb];
}
