#version 450
// SSM_CONV: dst[ch,t,s] = sum_{i<d_conv} sx[t+i,ch,s] * c[i,ch]; sx [d_conv-1+n_t, d_inner, n_s], c [d_conv, d_inner].
// Element-wise over dst, so any number of tokens works the same way.
#include "common.glsl"

void main() {
    ivec4 ne = ne_of(T_DST);
    int n = nelem(ne);
    int f = first_elem();
    if (f >= n) return;
    ivec4 nbd = nb_of(T_DST), nbx = nb_of(T_SRC0), nbc = nb_of(T_SRC1);
    int od = off_of(T_DST), ox = off_of(T_SRC0), oc = off_of(T_SRC1);
    int d_conv = ne_of(T_SRC1).x;
    ivec4 i = unflatten(f, ne); // (ch, t, s, 0)
    int end = min(f + PER, n);
    for (int k = f; k < end; ++k) {
        int xs = ox + i.y * nbx.x + i.x * nbx.y + i.z * nbx.z;
        int cs = oc + i.x * nbc.y;
        float acc = 0.0;
        for (int j = 0; j < d_conv; ++j) acc += LOAD_F32(S0, xs + j * nbx.x) * LOAD_F32(S1, cs + j * nbc.x);
        store_f32(at(i, nbd, od), acc);
        step4(i, ne);
    }
}
