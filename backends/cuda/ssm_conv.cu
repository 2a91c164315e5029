// SSM_CONV: causal depthwise convolution. sx ne [L, d_inner, n_s], c ne [d_conv, d_inner] -> dst [d_inner, n_t, n_s]
// with n_t = L - d_conv + 1: dst[ch,t,s] = sum_{i<d_conv} sx[t+i,ch,s] * c[i,ch]. One thread per output element,
// so any n_t and d_conv work (no token tiling to get wrong).
#include "common.cuh"

extern "C" __global__ void ssm_conv_f32(float* d, const float* sx, const float* c, const int* p) {
    const View vd = view_of(p, 0);
    const View vs = view_of(p, 1);
    const View vc = view_of(p, 2);
    const int d_conv = vc.ne[0];
    for_each_index(vd, [&](int* i) {
        const int ch = i[0], t = i[1], s = i[2];
        float sum = 0.0f;
        for (int k = 0; k < d_conv; ++k) {
            sum += sx[at(vs, t + k, ch, s, 0)] * c[at(vc, k, ch, 0, 0)];
        }
        d[at(vd, ch, t, s, 0)] = sum;
    });
}
