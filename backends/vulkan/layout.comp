#version 450
// REPEAT (dst[i] = a[i_k % ne_a_k]), PAD (dst[i] = a[i] where every i_k < ne_a_k, else 0) and CONCAT (a then b
// along a dim), one of OP_REPEAT / OP_PAD / OP_CONCAT defined.
//
// REPEAT and PAD, f32: a thread takes PER consecutive dst elements; the source index follows the dst index per dim,
// so there is no modulo per element. PAD loads from a clamped (always valid) index and selects 0: no branch around the
// load. DST_VEC4: dst contiguous and 4-aligned, the 4 results go out in one uvec4 store. VEC4 besides: a's rows
// contiguous and its row starts, a.ne0 and dst.ne0 multiples of 4: a run of 4 dst elements maps to 4
// consecutive elements of a (or, PAD, lies wholly in the padding): one 16-byte load.
//
// CONCAT: dst = a then b along dim (word0), 32-bit words moved as they are. A thread takes PER consecutive dst
// elements; dst index i comes from a at i where i[dim] < a.ne[dim], else from b at i with i[dim] - a.ne[dim].
// VEC4: dst, a and b contiguous and 4-aligned, ne0 a multiple of 4 and dim > 0: a thread's 4 elements come from
// one source as one 16-byte load.
#include "common.glsl"

#if defined(OP_CONCAT)
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
#else
ivec4 ne, nea, nbs;
int os;

// The source word for dst index i; a's index j is i wrapped (REPEAT) or clamped (PAD) per dim.
uint value(ivec4 i, ivec4 j) {
    uint x = S0[at(j, nbs, os)];
#if defined(OP_PAD)
    x = all(lessThan(i, nea)) ? x : 0u;
#endif
    return x;
}

// Advance i (dst index) and j (a's index) by one element in flat order.
void next(inout ivec4 i, inout ivec4 j) {
#if defined(OP_REPEAT)
    if (++j.x == nea.x) j.x = 0;
    if (++i.x == ne.x) {
        i.x = 0; j.x = 0;
        if (++j.y == nea.y) j.y = 0;
        if (++i.y == ne.y) {
            i.y = 0; j.y = 0;
            if (++j.z == nea.z) j.z = 0;
            if (++i.z == ne.z) { i.z = 0; j.z = 0; if (++j.w == nea.w) j.w = 0; ++i.w; }
        }
    }
#else
    step4(i, ne);
    j = min(i, nea - 1);
#endif
}

void main() {
    load_params();
    ne = ne_d; nea = ne_0; nbs = nb_0; os = off_0;
    int n = nelem(ne);
    int f = first_elem();
    if (f >= n) return;
    ivec4 i = unflatten(f, ne);
#if defined(OP_REPEAT)
    ivec4 j = i % nea;
#else
    ivec4 j = min(i, nea - 1);
#endif
#if defined(VEC4) // n is a multiple of 4
    uvec4 x = S04[at(j, nbs, os) >> 2]; // PAD: j is clamped into a (the load is valid, the value maybe unused)
#if defined(OP_PAD)
    x = all(lessThan(i, nea)) ? x : uvec4(0u);
#endif
    D4[(off_d + f) >> 2] = x;
    return;
#elif defined(DST_VEC4)
    if (f + 4 <= n) {
        uint b0 = value(i, j); next(i, j);
        uint b1 = value(i, j); next(i, j);
        uint b2 = value(i, j); next(i, j);
        uint b3 = value(i, j);
        D4[(off_d + f) >> 2] = uvec4(b0, b1, b2, b3);
        return;
    }
#endif
    int end = min(f + PER, n);
    for (int k = f; k < end; ++k) {
        D[at(i, nb_d, off_d)] = value(i, j);
        next(i, j);
    }
}
#endif
