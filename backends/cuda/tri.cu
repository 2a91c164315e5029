// TRI, FILL, DIAG: element-wise writers of structured matrices. Every operand may be an arbitrary view.
#include "common.cuh"

// TRI word0: 0 LOWER (keep i0 < i1), 1 LOWER_DIAG (i0 <= i1), 2 UPPER (i0 > i1), 3 UPPER_DIAG (i0 >= i1);
// any other value acts as LOWER. Dropped elements become 0 by selection, never by multiplying (x may be inf).
extern "C" __global__ void tri_f32(float* d, const float* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const int type = op_int(p, 0);
    for_each_index(vd, [&](int* i) {
        bool keep;
        switch (type) {
            case 1: keep = i[0] <= i[1]; break;
            case 2: keep = i[0] > i[1]; break;
            case 3: keep = i[0] >= i[1]; break;
            default: keep = i[0] < i[1]; break;
        }
        d[at(vd, i[0], i[1], i[2], i[3])] = keep ? a[at(va, i[0], i[1], i[2], i[3])] : 0.0f;
    });
}

// FILL word0 = c (float bits). The source only gives the shape and is never read.
extern "C" __global__ void fill_f32(float* d, const float*, const int* p) {
    const View vd = view_of(p, 0);
    const float c = op_float(p, 0);
    const int n = nelements(vd);
    const bool cd = is_contiguous(vd);
    for (long long flat = first_thread(); flat < n; flat += thread_stride()) {
        d[at_flat(vd, (int)flat, cd)] = c;
    }
}

// DIAG: src [n,1,a,b] -> dst [n,n,a,b], dst[i0,i1,i2,i3] = i0 == i1 ? src[i0,0,i2,i3] : 0.
extern "C" __global__ void diag_f32(float* d, const float* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    for_each_index(vd, [&](int* i) {
        d[at(vd, i[0], i[1], i[2], i[3])] = i[0] == i[1] ? a[at(va, i[0], 0, i[2], i[3])] : 0.0f;
    });
}
