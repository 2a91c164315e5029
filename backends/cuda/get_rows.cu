// GET_ROWS: dst[:, k, i1, i2] = a[:, ids[k, i1, i2], i1, i2]; a f32 or f16 (one entry point each), ids i32,
// dst f32; all arbitrary views. One thread per dst element in a 1-D grid-stride loop, so any number of rows K fits
// (upstream CUDA put K on grid y, limited to 65,535).
#include "common.cuh"

__device__ __forceinline__ float load(const float* x, long long i) { return x[i]; }
__device__ __forceinline__ float load(const unsigned short* x, long long i) { return half_to_float(x[i]); }

template <typename T>
__device__ void get_rows(float* d, const T* a, const int* ids, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vi = view_of(p, 2);
    for_each_index(vd, [&](int* i) {
        const int r = ids[at(vi, i[1], i[2], i[3], 0)];
        d[at(vd, i[0], i[1], i[2], i[3])] = load(a, at(va, i[0], r, i[2], i[3]));
    });
}

extern "C" __global__ void get_rows_f32(float* d, const float* a, const int* ids, const int* p) {
    get_rows(d, a, ids, p);
}
extern "C" __global__ void get_rows_f16(float* d, const unsigned short* a, const int* ids, const int* p) {
    get_rows(d, a, ids, p);
}
