// ARGSORT (word0: 0 ASC, 1 DESC) and TOP_K (-DTOP_K; dst ne0 = k): one work group per row, a bitonic sort of
// (key, index) pairs in local memory padded to NP (a power of two, host define) with +inf keys. DESC sorts -x
// ascending. Ties are broken by the index, so the order is total: pads (index >= ne0) land after every real
// element even next to +inf, and the result is a permutation. Then the first dst ne0 indices are written (all of
// them for ARGSORT, the k largest for TOP_K). Work items loop over the NP / 2 pairs of each step; every loop bound
// is uniform, so all work items meet every barrier.
__kernel void argsort(__global int* d, __global const float* a, const Params P, __local float* key,
                      __local int* idx) {
    const int n = NE(T_A, 0), sa = NB(T_A, 0), lid = get_local_id(0), lsz = get_local_size(0);
#ifdef TOP_K
    const bool desc = true;
#else
    const bool desc = WORD(0) == 1;
#endif
    __global const float* ar = a + ROW(T_A);
    for (int i = lid; i < NP; i += lsz) {
        const float x = i < n ? ar[i * sa] : 0.0f;
        key[i] = i < n ? (desc ? -x : x) : INFINITY;
        idx[i] = i;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = 2; k <= NP; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int p = lid; p < NP / 2; p += lsz) {
                const int i = ((p & ~(j - 1)) << 1) | (p & (j - 1)), l = i + j;  // the pair (i, i + j)
                const float ki = key[i], kl = key[l];
                const int ii = idx[i], il = idx[l];
                const bool after = ki > kl || (ki == kl && ii > il);  // i belongs after l in ascending order
                if (after == ((i & k) == 0)) {  // blocks with bit k clear go up, the others down
                    key[i] = kl;
                    key[l] = ki;
                    idx[i] = il;
                    idx[l] = ii;
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    __global int* dr = d + ROW(T_DST);
    const int sd = NB(T_DST, 0), nout = NE(T_DST, 0);
    for (int i = lid; i < nout; i += lsz) dr[i * sd] = idx[i];
}
