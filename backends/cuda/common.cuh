// Shared by every kernel file: the parameter block layout (backends/base.py) and view indexing.
// The runtime inlines this file into each .cu source before compiling (see backends/cuda/build.py), so the
// sources need no include path and no CUDA toolkit headers.
#pragma once

// words[9*t : 9*t+9] describe tensor t (0 = dst, 1 = src0, ..., 6 = src5): offset, ne0..ne3, nb0..nb3,
// offset and strides in ELEMENTS; words[63 : 75] are the op's own words (7 tensors: dst, src0..src5).
#define OP_WORDS_AT 63

// Offsets and strides are 64-bit: element counts stay below 2^31, but i * nb products of a view need not.
struct View {
    long long off;
    int ne[4];
    long long nb[4];
};

__device__ __forceinline__ View view_of(const int* p, int t) {
    const int* w = p + 9 * t;
    View v;
    v.off = w[0];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        v.ne[k] = w[1 + k];
        v.nb[k] = w[5 + k];
    }
    return v;
}

__device__ __forceinline__ int op_int(const int* p, int k) { return p[OP_WORDS_AT + k]; }
__device__ __forceinline__ float op_float(const int* p, int k) { return __int_as_float(p[OP_WORDS_AT + k]); }

__device__ __forceinline__ int nelements(const View& v) { return v.ne[0] * v.ne[1] * v.ne[2] * v.ne[3]; }
__device__ __forceinline__ int nrows(const View& v) { return v.ne[1] * v.ne[2] * v.ne[3]; }

// Element offset of logical index (i0, i1, i2, i3).
__device__ __forceinline__ long long at(const View& v, int i0, int i1, int i2, int i3) {
    return v.off + i0 * v.nb[0] + i1 * v.nb[1] + i2 * v.nb[2] + i3 * v.nb[3];
}

// Splits a flat logical index (ne0 fastest) into i[0..3].
__device__ __forceinline__ void unflatten(const View& v, int flat, int i[4]) {
    i[0] = flat % v.ne[0];
    flat /= v.ne[0];
    i[1] = flat % v.ne[1];
    flat /= v.ne[1];
    i[2] = flat % v.ne[2];
    i[3] = flat / v.ne[2];
}

__device__ __forceinline__ bool is_contiguous(const View& v) {
    return v.nb[0] == 1 && v.nb[1] == v.ne[0] && v.nb[2] == (long long)v.ne[0] * v.ne[1] &&
           v.nb[3] == (long long)v.ne[0] * v.ne[1] * v.ne[2];
}

// Element offset of the flat logical index `flat`; one branch saves the div/mod chain for contiguous views.
__device__ __forceinline__ long long at_flat(const View& v, int flat, bool contiguous) {
    if (contiguous) {
        return v.off + flat;
    }
    int i[4];
    unflatten(v, flat, i);
    return at(v, i[0], i[1], i[2], i[3]);
}

// Row `row` (= i1 + ne1 * (i2 + ne2 * i3)) of a view: the offset of its element 0.
__device__ __forceinline__ long long row_at(const View& v, int row) {
    int i1 = row % v.ne[1];
    row /= v.ne[1];
    return at(v, 0, i1, row % v.ne[2], row / v.ne[2]);
}

// Grid-stride loops over [0, n) with a 64-bit counter, so `i += stride` cannot overflow near 2^31.
__device__ __forceinline__ long long first_thread() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long thread_stride() { return (long long)gridDim.x * blockDim.x; }

// Calls f(i) with the 4-D index i of every element of v, grid-stride over the whole launch: the loop of every
// one-thread-per-element kernel.
template <class F>
__device__ __forceinline__ void for_each_index(const View& v, F f) {
    const int n = nelements(v);
    for (long long flat = first_thread(); flat < n; flat += thread_stride()) {
        int i[4];
        unflatten(v, (int)flat, i);
        f(i);
    }
}

// f16 is stored as its 16-bit pattern; conversions are the PTX instructions behind __half2float/__float2half_rn
// (cuda_fp16.h is not shipped with NVRTC's pip wheel). cvt.rn rounds to nearest even. host_emulation.h has its own.
#ifndef HOST_EMULATION
__device__ __forceinline__ float half_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short float_to_half(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

// Exclusive prefix sum over the block of one float per thread (blockDim.x a multiple of 32, at most 1024).
// `warp_sums` is shared scratch of 32 floats; the caller must __syncthreads() before reusing it.
// Returns the sum of x over the threads before this one and sets *total to the block's sum, the same value in every
// thread (each thread adds the warp sums in the same order).
__device__ __forceinline__ float block_exclusive_scan(float x, float* warp_sums, float* total) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    float incl = x;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const float y = __shfl_up_sync(0xffffffffu, incl, d);
        if (lane >= d) {
            incl += y;
        }
    }
    float excl = __shfl_up_sync(0xffffffffu, incl, 1);
    if (lane == 0) {
        excl = 0.0f;
    }
    if (lane == 31) {
        warp_sums[warp] = incl;
    }
    __syncthreads();
    float before = 0.0f;
    float sum = 0.0f;
    for (int w = 0; w < nwarps; ++w) {
        const float s = warp_sums[w];
        if (w < warp) {
            before += s;
        }
        sum += s;
    }
    *total = sum;
    return before + excl;
}

// Sum over the warp of one float per lane, the same value in every lane (butterfly: every lane must call it).
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) {
        x += __shfl_xor_sync(0xffffffffu, x, d);
    }
    return x;
}

// Sum over the block of one float per thread (same contract as block_exclusive_scan).
__device__ __forceinline__ float block_sum(float x, float* warp_sums) {
    x = warp_sum(x);
    if ((threadIdx.x & 31) == 0) {
        warp_sums[threadIdx.x >> 5] = x;
    }
    __syncthreads();
    float sum = 0.0f;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) {
        sum += warp_sums[w];
    }
    return sum;
}

// Maximum over the block of one float per thread (same contract as block_sum).
__device__ __forceinline__ float block_max(float x, float* warp_maxes) {
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) {
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, d));
    }
    if ((threadIdx.x & 31) == 0) {
        warp_maxes[threadIdx.x >> 5] = x;
    }
    __syncthreads();
    float m = warp_maxes[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) {
        m = fmaxf(m, warp_maxes[w]);
    }
    return m;
}
