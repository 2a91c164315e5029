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
    ivec4 ne = ne_of(T_DST);
    int n = nelem(ne);
    int f = first_elem();
    if (f >= n) return;
    ivec4 nbd = nb_of(T_DST), nba = nb_of(T_SRC0), neb = ne_of(T_SRC1), nbb = nb_of(T_SRC1);
    int od = off_of(T_DST), oa = off_of(T_SRC0), ob = off_of(T_SRC1);
    ivec4 i = unflatten(f, ne);
    ivec4 j = i % neb; // b's index follows i, wrapping per dim instead of a modulo per element
    int end = min(f + PER, n);
    for (int k = f; k < end; ++k) {
        float a = LOAD_F32(S0, at(i, nba, oa));
        float b = LOAD_F32(S1, at(j, nbb, ob));
        store_f32(at(i, nbd, od), apply(a, b));
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
}
