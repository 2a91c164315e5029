#version 450
// CONCAT: dst = a then b along dim (word0), 32-bit words moved as they are. A thread takes PER consecutive dst
// elements; dst index i comes from a at i where i[dim] < a.ne[dim], else from b at i with i[dim] - a.ne[dim].
// VEC4: dst, a and b contiguous and 4-aligned, ne0 a multiple of 4 and dim > 0: a thread's 4 elements come from
// one source as one 16-byte load.
#include "common.glsl"

void main() {
    load_params();
    int dim = op_int(0);
    int n = nelem(ne_d);
    int f = first_elem();
    if (f >= n) return;
    ivec4 i = unflatten(f, ne_d);
    int cut = ne_0[dim];
    ivec4 shift = ivec4(equal(ivec4(0, 1, 2, 3), ivec4(dim))) * cut;
#if defined(VEC4)
    if (i[dim] < cut) D4[(off_d + f) >> 2] = S04[at(i, nb_0, off_0) >> 2];
    else D4[(off_d + f) >> 2] = S14[at(i - shift, nb_1, off_1) >> 2];
#else
    int end = min(f + PER, n);
    for (int k = f; k < end; ++k) {
        uint x;
        if (i[dim] < cut) x = S0[at(i, nb_0, off_0)];
        else x = S1[at(i - shift, nb_1, off_1)];
        D[at(i, nb_d, off_d)] = x;
        step4(i, ne_d);
    }
#endif
}
