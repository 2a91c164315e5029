#version 450
// dst = a OP b for OP_ADD / OP_SUB / OP_MUL / OP_DIV, b repeated over a (b index i_k % ne_b_k).
#include "common.glsl"

float apply(float a, float b) {
#if defined(OP_ADD)
    return a + b;
#elif defined(OP_SUB)
    return a - b;
#elif defined(OP_MUL)
    return a * b;
#elif defined(OP_DIV)
    return a / b;
#endif
}

void main() {
    load_params();
    int n = nelem(ne_d);
    int f = first_elem();
    if (f >= n) return;
#if defined(VEC4) // a, b, dst contiguous with the same shape, offsets multiples of 4
    if (f + 4 <= n) {
        vec4 a = uintBitsToFloat(S04[(off_0 + f) >> 2]), b = uintBitsToFloat(S14[(off_1 + f) >> 2]);
        vec4 r = vec4(apply(a.x, b.x), apply(a.y, b.y), apply(a.z, b.z), apply(a.w, b.w));
        D4[(off_d + f) >> 2] = floatBitsToUint(r);
    } else {
        for (int k = f; k < n; ++k) store_f32(off_d + k, apply(LOAD_F32(S0, off_0 + k), LOAD_F32(S1, off_1 + k)));
    }
#else
    ivec4 ne = ne_d, neb = ne_1;
    ivec4 i = unflatten(f, ne);
    ivec4 j = i % neb; // b's index follows i, wrapping per dim instead of a modulo per element
    int end = min(f + PER, n);
    for (int k = f; k < end; ++k) {
        float a = LOAD_F32(S0, at(i, nb_0, off_0));
        float b = LOAD_F32(S1, at(j, nb_1, off_1));
        store_f32(at(i, nb_d, off_d), apply(a, b));
        if (++j.x == neb.x) j.x = 0;
        if (++i.x == ne.x) {
            i.x = 0; j.x = 0;
            if (++j.y == neb.y) j.y = 0;
            if (++i.y == ne.y) {
                i.y = 0; j.y = 0;
                if (++j.z == neb.z) j.z = 0;
                if (++i.z == ne.z) {
                    i.z = 0; j.z = 0;
                    if (++j.w == neb.w) j.w = 0;
                    ++i.w;
                }
            }
        }
    }
#endif
}
