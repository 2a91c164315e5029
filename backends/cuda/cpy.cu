// CPY and CONT: copy with type conversion, element order kept. The flat logical index (ne0 fastest) is split by
// the source's ne to read and by the destination's ne to write: the shapes may differ, the counts do not.
// f16 travels as its 16-bit pattern; each f16 element is one 2-byte store, never a whole 32-bit word.
// f32 -> q8_0 / q4_0 (quantize): one thread per destination block, quantized as ggml's CPU reference does.
#include "quants.cuh"

template <typename S, typename D>
__device__ __forceinline__ D convert(S x);
template <>
__device__ __forceinline__ float convert<float, float>(float x) { return x; }
template <>
__device__ __forceinline__ unsigned short convert<unsigned short, unsigned short>(unsigned short x) { return x; }
template <>
__device__ __forceinline__ unsigned short convert<float, unsigned short>(float x) { return float_to_half(x); }
template <>
__device__ __forceinline__ float convert<unsigned short, float>(unsigned short x) { return half_to_float(x); }

template <typename S, typename D>
__device__ void cpy(D* d, const S* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const int n = nelements(vd);
    const bool cd = is_contiguous(vd);
    const bool ca = is_contiguous(va);
    for (long long i = first_thread(); i < n; i += thread_stride()) {
        d[at_flat(vd, (int)i, cd)] = convert<S, D>(a[at_flat(va, (int)i, ca)]);
    }
}

extern "C" __global__ void cpy_f32_f32(float* d, const float* a, const int* p) { cpy(d, a, p); }
extern "C" __global__ void cpy_f32_f16(unsigned short* d, const float* a, const int* p) { cpy(d, a, p); }
extern "C" __global__ void cpy_f16_f32(float* d, const unsigned short* a, const int* p) { cpy(d, a, p); }
extern "C" __global__ void cpy_f16_f16(unsigned short* d, const unsigned short* a, const int* p) { cpy(d, a, p); }

// Thread item `blk` encodes the flat elements BLOCK blk .. BLOCK blk + BLOCK - 1 (dst rows are whole blocks, so a
// block is one run of a dst row); dst's offset and strides count blocks.
template <class Q>
__device__ void cpy_quantize(unsigned char* d, const float* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const int blocks = nelements(vd) / Q::BLOCK;
    const bool ca = is_contiguous(va);
    for (long long blk = first_thread(); blk < blocks; blk += thread_stride()) {
        float x[Q::BLOCK];
        for (int j = 0; j < Q::BLOCK; ++j) {
            x[j] = a[at_flat(va, (int)blk * Q::BLOCK + j, ca)];
        }
        int i[4];
        unflatten(vd, (int)blk * Q::BLOCK, i);
        Q::quantize(x, d + block_bytes<Q>(vd, i[0], i[1], i[2], i[3]));
    }
}

extern "C" __global__ void cpy_f32_q8_0(unsigned char* d, const float* a, const int* p) { cpy_quantize<q8_0>(d, a, p); }
extern "C" __global__ void cpy_f32_q4_0(unsigned char* d, const float* a, const int* p) { cpy_quantize<q4_0>(d, a, p); }
