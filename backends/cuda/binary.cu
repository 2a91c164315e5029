// ADD, SUB, MUL, DIV: dst = a op b, b repeated over a (b index i_k % ne_b_k). dst has a's shape; all three may be
// arbitrary views.
#include "common.cuh"

struct Add {
    __device__ float operator()(float x, float y) const { return x + y; }
};
struct Sub {
    __device__ float operator()(float x, float y) const { return x - y; }
};
struct Mul {
    __device__ float operator()(float x, float y) const { return x * y; }
};
struct Div {
    __device__ float operator()(float x, float y) const { return x / y; }  // IEEE division (no fast-math)
};

template <typename F>
__device__ void binary(float* d, const float* a, const float* b, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vb = view_of(p, 2);
    const int n = nelements(vd);
    const F f;
    // The common case, all contiguous and no repeat, needs no index arithmetic.
    const bool plain = is_contiguous(vd) && is_contiguous(va) && is_contiguous(vb) && vb.ne[0] == vd.ne[0] &&
                       vb.ne[1] == vd.ne[1] && vb.ne[2] == vd.ne[2] && vb.ne[3] == vd.ne[3];
    for (long long flat = first_thread(); flat < n; flat += thread_stride()) {
        if (plain) {
            d[vd.off + flat] = f(a[va.off + flat], b[vb.off + flat]);
            continue;
        }
        int i[4];
        unflatten(vd, (int)flat, i);
        const float x = a[at(va, i[0], i[1], i[2], i[3])];
        const float y = b[at(vb, i[0] % vb.ne[0], i[1] % vb.ne[1], i[2] % vb.ne[2], i[3] % vb.ne[3])];
        d[at(vd, i[0], i[1], i[2], i[3])] = f(x, y);
    }
}

extern "C" __global__ void add_f32(float* d, const float* a, const float* b, const int* p) { binary<Add>(d, a, b, p); }
extern "C" __global__ void sub_f32(float* d, const float* a, const float* b, const int* p) { binary<Sub>(d, a, b, p); }
extern "C" __global__ void mul_f32(float* d, const float* a, const float* b, const int* p) { binary<Mul>(d, a, b, p); }
extern "C" __global__ void div_f32(float* d, const float* a, const float* b, const int* p) { binary<Div>(d, a, b, p); }
