// ACC and SET: dst = a, then b added to (ACC) or stored over (SET) the block of a at element strides nb1, nb2, nb3
// from element `offset` (op words 0..3). a is contiguous; dst is a fresh contiguous tensor or a itself (in place,
// same buffer and descriptor). acc_f32/set_b32 write every dst element, each thread only its own; in place the
// *_in_place entries write b's block alone.
#include "common.cuh"

// Where flat element e of a falls in b's block: false when it is outside, else b's logical index in i[0..3].
// The host guarantees nb1 >= ne_b0, nb2 >= nb1 * ne_b1, nb3 >= nb2 * ne_b2, so this decomposition is exact.
__device__ __forceinline__ bool block_index(const View& vb, const int* p, int e, int i[4]) {
    const int nb1 = op_int(p, 0), nb2 = op_int(p, 1), nb3 = op_int(p, 2), offset = op_int(p, 3);
    int o = e - offset;
    if (o < 0) {
        return false;
    }
    i[3] = o / nb3;
    o %= nb3;
    i[2] = o / nb2;
    o %= nb2;
    i[1] = o / nb1;
    i[0] = o % nb1;
    return i[0] < vb.ne[0] && i[1] < vb.ne[1] && i[2] < vb.ne[2] && i[3] < vb.ne[3];
}

extern "C" __global__ void acc_f32(float* d, const float* a, const float* b, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vb = view_of(p, 2);
    const int n = nelements(vd);
    for (long long e = first_thread(); e < n; e += thread_stride()) {
        float value = a[va.off + e];
        int i[4];
        if (block_index(vb, p, (int)e, i)) {
            value += b[at(vb, i[0], i[1], i[2], i[3])];
        }
        d[at_flat(vd, (int)e, true)] = value;
    }
}

// SET moves raw 32-bit words, so one kernel serves f32 and i32.
extern "C" __global__ void set_b32(unsigned int* d, const unsigned int* a, const unsigned int* b, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vb = view_of(p, 2);
    const int n = nelements(vd);
    for (long long e = first_thread(); e < n; e += thread_stride()) {
        int i[4];
        d[at_flat(vd, (int)e, true)] = block_index(vb, p, (int)e, i) ? b[at(vb, i[0], i[1], i[2], i[3])] : a[va.off + e];
    }
}

// In place (dst is a itself) only b's block changes: one thread per element of b, writing its element of the block
// and nothing else. `a` is the same buffer as d and goes unread.
__device__ __forceinline__ long long block_at(const View& vd, const int* p, const int* i) {
    return vd.off + op_int(p, 3) + i[0] + (long long)i[1] * op_int(p, 0) + (long long)i[2] * op_int(p, 1) +
           (long long)i[3] * op_int(p, 2);
}

extern "C" __global__ void acc_f32_in_place(float* d, const float*, const float* b, const int* p) {
    const View vd = view_of(p, 0);
    const View vb = view_of(p, 2);
    for_each_index(vb, [&](int* i) { d[block_at(vd, p, i)] += b[at(vb, i[0], i[1], i[2], i[3])]; });
}

extern "C" __global__ void set_b32_in_place(unsigned int* d, const unsigned int*, const unsigned int* b, const int* p) {
    const View vd = view_of(p, 0);
    const View vb = view_of(p, 2);
    for_each_index(vb, [&](int* i) { d[block_at(vd, p, i)] = b[at(vb, i[0], i[1], i[2], i[3])]; });
}
