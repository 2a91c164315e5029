#version 450
// TRI (keep one triangle), FILL (constant), DIAG ([n,1,a,b] -> [n,n,a,b]): one of OP_* is defined by the host.
#include "common.glsl"

void main() {
    ivec4 ne = ne_of(T_DST);
    int n = nelem(ne);
    int f = first_elem();
    if (f >= n) return;
    ivec4 nbd = nb_of(T_DST), nbs = nb_of(T_SRC0);
    int od = off_of(T_DST), os = off_of(T_SRC0);
    ivec4 i = unflatten(f, ne);
    int end = min(f + PER, n);
#if defined(OP_TRI)
    int type = op_int(0); // 0 LOWER i0<i1, 1 LOWER_DIAG i0<=i1, 2 UPPER i0>i1, 3 UPPER_DIAG i0>=i1
#elif defined(OP_FILL)
    float c = op_float(0);
#endif
    for (int k = f; k < end; ++k) {
#if defined(OP_TRI)
        bool keep = type == 1 ? i.x <= i.y : type == 2 ? i.x > i.y : type == 3 ? i.x >= i.y : i.x < i.y;
        store_f32(at(i, nbd, od), keep ? LOAD_F32(S0, at(i, nbs, os)) : 0.0);
#elif defined(OP_FILL)
        store_f32(at(i, nbd, od), c);
#elif defined(OP_DIAG)
        store_f32(at(i, nbd, od), i.x == i.y ? LOAD_F32(S0, at(ivec4(i.x, 0, i.z, i.w), nbs, os)) : 0.0);
#endif
        step4(i, ne);
    }
}
