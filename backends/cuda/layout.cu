// REPEAT, PAD and CONCAT: one thread per dst element, any views. All move raw 32-bit words (f32 bits are copied,
// not computed with). The dst descriptor carries the output shape; only CONCAT has an op word (its dim).
#include "common.cuh"

// REPEAT: dst[i] = a[i_k % a.ne_k] (dst.ne_k is a multiple of a.ne_k).
extern "C" __global__ void repeat_b32(unsigned* d, const unsigned* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    for_each_index(vd, [&](int* i) {
        const long long src = at(va, i[0] % va.ne[0], i[1] % va.ne[1], i[2] % va.ne[2], i[3] % va.ne[3]);
        d[at(vd, i[0], i[1], i[2], i[3])] = a[src];
    });
}

// PAD: dst = a where every i_k < a.ne_k, else 0 (the pads sit at the end of each dim).
extern "C" __global__ void pad_b32(unsigned* d, const unsigned* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    for_each_index(vd, [&](int* i) {
        const bool inside = i[0] < va.ne[0] && i[1] < va.ne[1] && i[2] < va.ne[2] && i[3] < va.ne[3];
        d[at(vd, i[0], i[1], i[2], i[3])] = inside ? a[at(va, i[0], i[1], i[2], i[3])] : 0u;
    });
}

// CONCAT word0 = dim: dst = a, then b along dim (every other dim equal).
extern "C" __global__ void concat_b32(unsigned* d, const unsigned* a, const unsigned* b, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vb = view_of(p, 2);
    const int dim = op_int(p, 0);
    for_each_index(vd, [&](int* i) {
        const long long out = at(vd, i[0], i[1], i[2], i[3]);
        if (i[dim] < va.ne[dim]) {
            d[out] = a[at(va, i[0], i[1], i[2], i[3])];
        } else {
            i[dim] -= va.ne[dim];
            d[out] = b[at(vb, i[0], i[1], i[2], i[3])];
        }
    });
}
