// STREAM kernels (McCalpin's copy and triad, and a write-only fill): the bandwidth ceilings `bench ops` holds each
// op's GB/s against (backends/base.py Backend.stream). Shaped like the op kernels: each work item takes a contiguous
// run of CHUNK elements, the loop PoCL vectorises. Every entry takes (out, in0, in1, n, s); unused inputs are out.

#define RUN_BEGIN ((int)get_global_id(0) * CHUNK)
#define RUN_END min(n, RUN_BEGIN + CHUNK)

__kernel void stream_copy(__global float* restrict c, __global const float* restrict a, __global const float* unused,
                          const int n, const float s) {
    for (int i = RUN_BEGIN; i < RUN_END; ++i) c[i] = a[i];
}

__kernel void stream_triad(__global float* restrict a, __global const float* restrict b,
                           __global const float* restrict c, const int n, const float s) {
    for (int i = RUN_BEGIN; i < RUN_END; ++i) a[i] = b[i] + s * c[i];
}

__kernel void stream_fill(__global float* restrict a, __global const float* unused0, __global const float* unused1,
                          const int n, const float s) {
    for (int i = RUN_BEGIN; i < RUN_END; ++i) a[i] = s;
}
