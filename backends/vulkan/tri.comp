#version 450
// TRI (keep one triangle), FILL (constant), DIAG ([n,1,a,b] -> [n,n,a,b]): one of OP_* is defined by the host.
// VEC4 or the general path is chosen at compile time: lavapipe runs both sides of a divergent branch, masked.
#include "common.glsl"

int tri_type; // 0 LOWER i0<i1, 1 LOWER_DIAG i0<=i1, 2 UPPER i0>i1, 3 UPPER_DIAG i0>=i1
float fill_c;

// The output value at dst index i (x: TRI's source element there).
float value(ivec4 i, float x) {
#if defined(OP_TRI)
    bool keep = tri_type == 1 ? i.x <= i.y : tri_type == 2 ? i.x > i.y : tri_type == 3 ? i.x >= i.y : i.x < i.y;
    return keep ? x : 0.0;
#elif defined(OP_FILL)
    return fill_c;
#elif defined(OP_DIAG)
    return i.x == i.y ? LOAD_F32(S0, at(ivec4(i.x, 0, i.z, i.w), nb_0, off_0)) : 0.0;
#endif
}

void main() {
    load_params();
    tri_type = op_int(0);
    fill_c = op_float(0);
    int n = nelem(ne_d);
    int f = first_elem();
    if (f >= n) return;
#if defined(VEC4) // dst (and TRI's src) contiguous, offsets multiples of 4
#if defined(OP_FILL)
    if (f + 4 <= n) {
        D4[(off_d + f) >> 2] = floatBitsToUint(vec4(fill_c));
    } else {
        for (int k = f; k < n; ++k) store_f32(off_d + k, fill_c);
    }
#else
    ivec4 i = unflatten(f, ne_d);
    if (f + 4 <= n) {
#if defined(OP_TRI)
        vec4 v = uintBitsToFloat(S04[(off_0 + f) >> 2]);
#else
        vec4 v = vec4(0.0);
#endif
        // Components written out: a loop over v[k] becomes per-lane memory traffic on lavapipe.
        v.x = value(i, v.x); step4(i, ne_d);
        v.y = value(i, v.y); step4(i, ne_d);
        v.z = value(i, v.z); step4(i, ne_d);
        v.w = value(i, v.w);
        D4[(off_d + f) >> 2] = floatBitsToUint(v);
    } else {
        for (int k = f; k < n; ++k) {
#if defined(OP_TRI)
            store_f32(off_d + k, value(i, LOAD_F32(S0, off_0 + k)));
#else
            store_f32(off_d + k, value(i, 0.0));
#endif
            step4(i, ne_d);
        }
    }
#endif
#else
    ivec4 i = unflatten(f, ne_d);
    int end = min(f + PER, n);
    for (int k = f; k < end; ++k) {
#if defined(OP_TRI)
        float x = LOAD_F32(S0, at(i, nb_0, off_0));
#else
        float x = 0.0;
#endif
        store_f32(at(i, nb_d, off_d), value(i, x));
        step4(i, ne_d);
    }
#endif
}
