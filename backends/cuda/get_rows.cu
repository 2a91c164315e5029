// GET_ROWS: dst[:, k, i1, i2] = a[:, ids[k, i1, i2], i1, i2]; a f32, f16 or a quantized type of quants.cuh (one
// entry point each), ids i32, dst f32; all arbitrary views. One thread per dst element (a quantized a: per chunk of
// QCHUNK elements, dequantized together) in a 1-D grid-stride loop, so any number of rows K fits (upstream CUDA put
// K on grid y, limited to 65,535).
#include "quants.cuh"

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

// A quantized table: thread item c covers dst elements QCHUNK c .. QCHUNK c + 7 (ne0 is whole blocks, so a chunk
// never crosses a row); the table's offset and strides count blocks.
template <class Q>
__device__ void get_rows_q(float* d, const unsigned char* a, const int* ids, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vi = view_of(p, 2);
    const int chunks = nelements(vd) / QCHUNK;
    for (long long c = first_thread(); c < chunks; c += thread_stride()) {
        const int row = (int)c / (vd.ne[0] / QCHUNK), i0 = (int)c % (vd.ne[0] / QCHUNK) * QCHUNK;
        const int k = row % vd.ne[1], i1 = row / vd.ne[1] % vd.ne[2], i2 = row / vd.ne[1] / vd.ne[2];
        const int r = ids[at(vi, k, i1, i2, 0)];
        float v[QCHUNK];
        Q::chunk(a + block_bytes<Q>(va, i0, r, i1, i2), i0 % Q::BLOCK, v);
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            d[at(vd, i0 + j, k, i1, i2)] = v[j];
        }
    }
}

#define GET_ROWS_ENTRY_POINT(Q)                                                                                    \
    extern "C" __global__ void get_rows_##Q(float* d, const unsigned char* a, const int* ids, const int* p) {       \
        get_rows_q<Q>(d, a, ids, p);                                                                               \
    }
FOR_EACH_QUANT(GET_ROWS_ENTRY_POINT)
