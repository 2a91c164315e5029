// Prepended to every kernel file. P is the parameter block of backends/base.py, passed BY VALUE: per tensor
// (7 tensors: 0 dst, 1 src0, ..., 6 src5) offset, ne0..ne3, nb0..nb3 in ELEMENTS, then the op's own words at 63.
// By value, the compiler knows no store can change it, so it hoists it out of loops (from a __constant buffer PoCL
// reloads it after every store and gives up vectorising).
typedef struct { int w[75]; } Params;
#define T_DST 0
#define T_A 1
#define T_B 2
#define OFF(t) P.w[9 * (t)]
#define NE(t, k) P.w[9 * (t) + 1 + (k)]
#define NB(t, k) P.w[9 * (t) + 5 + (k)]
#define WORD(k) P.w[63 + (k)]
#define WORD_F(k) as_float(P.w[63 + (k)])

// Row-chunk grid (host: grid "rows"): work item (g0, g1, g2) handles elements [g0*CHUNK, g0*CHUNK + CHUNK) of dst
// row (i1 = g1, i2 = g2 % ne2, i3 = g2 / ne2); dim 1 is rounded up to the work-group size, so kernels start with
// `if (!ROW_IN_GRID) return;`. A plain loop over a contiguous run is what a CPU driver vectorises best (the loop
// vectoriser versions it for unit strides). CHUNK comes from the host (-DCHUNK).
// Kernels with a barrier never return early: PoCL 3.1 miscompiled a return placed before a barrier (a segfault),
// even one no work item took.
#define I1 ((int)get_global_id(1))
#define I2 ((int)get_global_id(2) % NE(T_DST, 2))
#define I3 ((int)get_global_id(2) / NE(T_DST, 2))
#define ROW_IN_GRID (I1 < NE(T_DST, 1))
#define CHUNK_BEGIN ((int)get_global_id(0) * CHUNK)
#define CHUNK_END min(NE(T_DST, 0), CHUNK_BEGIN + CHUNK)
// First element of row (I1, I2, I3) of tensor t.
#define ROW(t) (OFF(t) + I1 * NB(t, 1) + I2 * NB(t, 2) + I3 * NB(t, 3))

// Sum of row[begin..end) at element stride `stride`, with float8 loads when the row is contiguous (PoCL does not
// vectorise a float sum by itself). Shared by the segmented row reductions (CUMSUM, SUM_ROWS).
float segment_sum(__global const float* row, int begin, int end, int stride) {
    int i = begin;
    float s = 0.0f;
    if (stride == 1) {
        float8 s8 = 0.0f;
        for (; i + 8 <= end; i += 8) s8 += vload8(0, row + i);
        const float4 s4 = s8.lo + s8.hi;
        s = (s4.x + s4.y) + (s4.z + s4.w);
    }
    for (; i < end; ++i) s += row[i * stride];
    return s;
}
