// CPY and CONT: copy with type conversion, element order kept. The flat logical index (ne0 fastest) is split by
// the source's ne to read and by the destination's ne to write: the shapes may differ, the counts do not.
// f16 travels as its 16-bit pattern; each f16 element is one 2-byte store, never a whole 32-bit word.
#include "common.cuh"

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
