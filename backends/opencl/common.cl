// Prepended to every kernel file. The parameter block of backends/base.py: per tensor (0 dst, 1 src0, 2 src1)
// offset, ne0..ne3, nb0..nb3 in ELEMENTS, then the op's own words at 36. Kernels copy what they need into private
// variables first: on a CPU driver __constant is ordinary memory the compiler cannot prove unaliased.
#define T_DST 0
#define T_A 1
#define T_B 2
#define OFF(t) P[9 * (t)]
#define NE(t, k) P[9 * (t) + 1 + (k)]
#define NB(t, k) P[9 * (t) + 5 + (k)]
#define WORD(k) P[36 + (k)]
#define WORD_F(k) as_float(P[36 + (k)])

// Element-wise grid: (tiles along ne0, ne1, ne2*ne3). Each work item handles EPT elements of one row, spaced by
// the work-group size so that neighbouring work items touch neighbouring elements (PoCL vectorises across them).
#define EPT 4

// Start of the row (i1, i2, i3) of tensor t for the element-wise grid; i2/i3 come from grid dim 2 split by dst ne2.
#define ROW_START(t) (OFF(t) + (int)get_global_id(1) * NB(t, 1) \
                      + ((int)get_global_id(2) % NE(T_DST, 2)) * NB(t, 2) + ((int)get_global_id(2) / NE(T_DST, 2)) * NB(t, 3))
#define FIRST_I0 ((int)get_group_id(0) * (int)get_local_size(0) * EPT + (int)get_local_id(0))
