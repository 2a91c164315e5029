// ACC (f32) and SET (32-bit words, so f32 and i32 alike) on contiguous a. One work item per dst element e
// (EPT of them): value = a[e]; if e - offset lies in b's block (strides nb1, nb2, nb3 in elements, nesting
// guaranteed by the host) it gets b added (ACC) or replaces it (SET). INPLACE: dst is a itself, so a is not bound.
// BROKEN_ACC_NB3 reproduces llama.cpp Vulkan bug #19426 on purpose (offset split by nb2/nb1 only, i3 never
// bounded, b read as if contiguous): the suite must catch it.
#ifdef SET
typedef uint T;
#define COMBINE(v, x) (x)
#else
typedef float T;
#define COMBINE(v, x) ((v) + (x))
#endif

#ifdef INPLACE
__kernel void acc_set(__global T* d, __global const T* b, __constant int* P) {
#else
__kernel void acc_set(__global T* d, __global const T* a, __global const T* b, __constant int* P) {
#endif
    const int n = NE(T_DST, 0) * NE(T_DST, 1) * NE(T_DST, 2) * NE(T_DST, 3);
    const int nb1 = WORD(0), nb2 = WORD(1), nb3 = WORD(2), offset = WORD(3);
    const int neb0 = NE(T_B, 0), neb1 = NE(T_B, 1), neb2 = NE(T_B, 2), neb3 = NE(T_B, 3);
    const bool has_b = neb0 > 0 && neb1 > 0 && neb2 > 0 && neb3 > 0;  // an empty b has zero strides: no division
    const int step = get_local_size(0);
    int e = FIRST_I0;
    for (int k = 0; k < EPT && e < n; ++k, e += step) {
#ifdef INPLACE
        T v = d[OFF(T_DST) + e];
#else
        T v = a[OFF(T_A) + e];
#endif
        const int o = e - offset;
        if (o >= 0 && has_b) {
#ifdef BROKEN_ACC_NB3
            const int i2 = o / nb2, i1 = (o - i2 * nb2) / nb1, i0 = o % nb1;
            if (i0 < neb0 && i1 < neb1 && i2 < neb2) v = COMBINE(v, b[OFF(T_B) + i0 + i1 * neb0 + i2 * neb0 * neb1]);
#else
            const int i3 = o / nb3;
            int r = o - i3 * nb3;
            const int i2 = r / nb2;
            r -= i2 * nb2;
            const int i1 = r / nb1, i0 = r - i1 * nb1;
            if (i0 < neb0 && i1 < neb1 && i2 < neb2 && i3 < neb3)
                v = COMBINE(v, b[OFF(T_B) + i0 * NB(T_B, 0) + i1 * NB(T_B, 1) + i2 * NB(T_B, 2) + i3 * NB(T_B, 3)]);
#endif
        }
        d[OFF(T_DST) + e] = v;
    }
}
