// STREAM kernels (McCalpin's copy and triad, and a write-only fill): the bandwidth ceilings `bench ops` holds each
// op's GB/s against (backends/base.py Backend.stream). Every entry takes (out, in0, in1, p) with p = {n, bits of s};
// inputs a kernel does not read are passed as out. Grid-stride loops, so the grid may be capped.

extern "C" __global__ void stream_copy(float* c, const float* a, const float*, const int* p) {
    const int n = p[0];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        c[i] = a[i];
    }
}

extern "C" __global__ void stream_triad(float* a, const float* b, const float* c, const int* p) {
    const int n = p[0];
    const float s = __int_as_float(p[1]);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        a[i] = b[i] + s * c[i];
    }
}

extern "C" __global__ void stream_fill(float* a, const float*, const float*, const int* p) {
    const int n = p[0];
    const float s = __int_as_float(p[1]);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        a[i] = s;
    }
}
