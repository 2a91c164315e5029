#version 450
// SSM_CONV: dst[ch,t,s] = sum_{i<d_conv} sx[t+i,ch,s] * c[i,ch]; sx [d_conv-1+n_t, d_inner, n_s], c [d_conv, d_inner].
// One thread per (channel, block of TOKENS tokens, sequence): the channel's taps and a sliding window of sx stay in
// registers (DCONV, the compile-time d_conv, lets the loops unroll), so each input is loaded once per block.
// Without DCONV (d_conv > 16) every output reloads its window.
#extension GL_EXT_control_flow_attributes : enable
#include "common.glsl"
#define TOKENS 16

void main() {
    load_params();
    int nblk = (ne_d.y + TOKENS - 1) / TOKENS;
    int g = group_id() * WG + int(gl_LocalInvocationID.x);
    if (g >= ne_d.x * nblk * ne_d.z) return;
    int ch = g % ne_d.x, rest = g / ne_d.x;
    int t0 = (rest % nblk) * TOKENS, s = rest / nblk;
    int t1 = min(t0 + TOKENS, ne_d.y);
    int xs = off_0 + ch * nb_0.y + s * nb_0.z; // sx [t, ch, s]
    int cs = off_1 + ch * nb_1.y;              // c [i, ch]
    int ds = off_d + ch * nb_d.x + s * nb_d.z; // dst [ch, t, s]
#if defined(DCONV)
    float w[DCONV], win[DCONV];
    [[unroll]] for (int j = 0; j < DCONV; ++j) w[j] = LOAD_F32(S1, cs + j * nb_1.x);
    [[unroll]] for (int j = 0; j + 1 < DCONV; ++j) win[j] = LOAD_F32(S0, xs + (t0 + j) * nb_0.x);
    for (int t = t0; t < t1; ++t) {
        win[DCONV - 1] = LOAD_F32(S0, xs + (t + DCONV - 1) * nb_0.x);
        float acc = 0.0;
        [[unroll]] for (int j = 0; j < DCONV; ++j) acc += win[j] * w[j];
        store_f32(ds + t * nb_d.y, acc);
        [[unroll]] for (int j = 0; j + 1 < DCONV; ++j) win[j] = win[j + 1];
    }
#else
    int d_conv = ne_1.x;
    for (int t = t0; t < t1; ++t) {
        float acc = 0.0;
        for (int j = 0; j < d_conv; ++j) acc += LOAD_F32(S0, xs + (t + j) * nb_0.x) * LOAD_F32(S1, cs + j * nb_1.x);
        store_f32(ds + t * nb_d.y, acc);
    }
#endif
}
