// CPY and CONT: f32 <-> f16 conversion or a same-type copy, in flat logical element order. SRC_F16 / DST_F16 pick
// the types; a same-type copy moves raw bits (uint / ushort). Without FLAT src and dst share ne and the element-wise
// grid indexes both; with FLAT (different ne) the flat index of each dst element is split by src ne.
// f16 goes through vload_half / vstore_half_rte (exact, round to nearest even, one half at a time), which PoCL
// provides without the fp16 extension.
#if defined(SRC_F16) && defined(DST_F16)
typedef ushort ST;
typedef ushort DT;
#define MOVE(d, j, s, i) (d[j] = s[i])
#elif defined(SRC_F16)
typedef half ST;
typedef float DT;
#define MOVE(d, j, s, i) (d[j] = vload_half(i, s))
#elif defined(DST_F16)
typedef float ST;
typedef half DT;
#define MOVE(d, j, s, i) vstore_half_rte(s[i], j, d)
#else
typedef uint ST;
typedef uint DT;
#define MOVE(d, j, s, i) (d[j] = s[i])
#endif

__kernel void cpy(__global DT* d, __global const ST* a, __constant int* P) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0), step = get_local_size(0);
    __global DT* drow = d + ROW_START(T_DST);
    int i0 = FIRST_I0;
#ifdef FLAT
    const int an0 = NE(T_A, 0), an1 = NE(T_A, 1), an2 = NE(T_A, 2);
    const int row = (int)get_global_id(1) + NE(T_DST, 1) * (int)get_global_id(2);  // flat index of i0 = 0
    for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) {
        int f = row * ne0 + i0;
        const int j0 = f % an0;
        f /= an0;
        const int j1 = f % an1;
        f /= an1;
        const int j = OFF(T_A) + j0 * sa + j1 * NB(T_A, 1) + (f % an2) * NB(T_A, 2) + (f / an2) * NB(T_A, 3);
        MOVE(drow, i0 * sd, a, j);
    }
#else
    __global const ST* arow = a + ROW_START(T_A);
    if (sd == 1 && sa == 1) {
        for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) MOVE(drow, i0, arow, i0);
    } else {
        for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) MOVE(drow, i0 * sd, arow, i0 * sa);
    }
#endif
}
