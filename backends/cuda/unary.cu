// Element-wise f32 ops: SOFTPLUS, SIGMOID, SILU, EXP, NEG, SCALE, CLAMP. dst and src may be any views of one shape.
#include "common.cuh"

// Precise libm calls only (no fast-math): expf overflows to +inf at x >= 88.7, which every formula below turns into
// the right limit (x, 0, 1 or -0) instead of NaN. Below x = -80 the results fall towards the denormal range, where
// float32 intermediates lose bits (and e^-x overflows, so x / (1 + e^-x) gives -0 instead of x e^x): there the
// value is computed in double and rounded once, like the reference. Only those elements pay for double.
#define DENORMAL_RISK -80.0f

struct Softplus {
    __device__ float operator()(float x, const int*) const {
        if (x < DENORMAL_RISK) {
            return (float)log1p(exp((double)x));
        }
        return x > 20.0f ? x : log1pf(expf(x));
    }
};
struct Sigmoid {
    __device__ float operator()(float x, const int*) const {
        if (x < DENORMAL_RISK) {
            const double e = exp((double)x);
            return (float)(e / (1.0 + e));
        }
        return 1.0f / (1.0f + expf(-x));
    }
};
struct Silu {
    __device__ float operator()(float x, const int*) const {
        if (x < DENORMAL_RISK) {
            const double e = exp((double)x);
            return (float)(x * e / (1.0 + e));
        }
        return x / (1.0f + expf(-x));
    }
};
struct Exp {
    __device__ float operator()(float x, const int*) const {
        return x < DENORMAL_RISK ? (float)exp((double)x) : expf(x);
    }
};
struct Neg {
    __device__ float operator()(float x, const int*) const { return -x; }
};
// words: s, b (float bits)
struct Scale {
    __device__ float operator()(float x, const int* p) const { return x * op_float(p, 0) + op_float(p, 1); }
};
// words: min, max (float bits)
struct Clamp {
    __device__ float operator()(float x, const int* p) const {
        return fminf(fmaxf(x, op_float(p, 0)), op_float(p, 1));
    }
};

template <typename F>
__device__ void unary(float* d, const float* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const int n = nelements(vd);
    const bool cd = is_contiguous(vd);
    const bool ca = is_contiguous(va);
    const F f;
    for (long long i = first_thread(); i < n; i += thread_stride()) {
        d[at_flat(vd, (int)i, cd)] = f(a[at_flat(va, (int)i, ca)], p);
    }
}

extern "C" __global__ void softplus_f32(float* d, const float* a, const int* p) { unary<Softplus>(d, a, p); }
extern "C" __global__ void sigmoid_f32(float* d, const float* a, const int* p) { unary<Sigmoid>(d, a, p); }
extern "C" __global__ void silu_f32(float* d, const float* a, const int* p) { unary<Silu>(d, a, p); }
extern "C" __global__ void exp_f32(float* d, const float* a, const int* p) { unary<Exp>(d, a, p); }
extern "C" __global__ void neg_f32(float* d, const float* a, const int* p) { unary<Neg>(d, a, p); }
extern "C" __global__ void scale_f32(float* d, const float* a, const int* p) { unary<Scale>(d, a, p); }
extern "C" __global__ void clamp_f32(float* d, const float* a, const int* p) { unary<Clamp>(d, a, p); }
