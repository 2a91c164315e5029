#version 450
// CPY / CONT: dst[flat] = src[flat] with the flat index decomposed by each tensor's own ne (they may differ).
// SRC_F16 / DST_F16 select the element types; same-type copies move raw bits.
#include "common.glsl"

// The source element as the destination's bits (f32 word or f16 half in the low 16 bits).
uint load_bits(int idx) {
#if defined(SRC_F16) && defined(DST_F16)
    return (S0[idx >> 1] >> (uint(idx & 1) * 16u)) & 0xFFFFu;
#elif defined(SRC_F16)
    return floatBitsToUint(LOAD_F16(S0, idx));
#elif defined(DST_F16)
    return f32_to_f16(LOAD_F32(S0, idx));
#else
    return S0[idx];
#endif
}

void main() {
    ivec4 ned = ne_of(T_DST), nes = ne_of(T_SRC0);
    int n = nelem(ned);
    int f = first_elem(); // PER is even, so a thread's pairs start on even flat indices
    if (f >= n) return;
    ivec4 nbd = nb_of(T_DST), nbs = nb_of(T_SRC0);
    int od = off_of(T_DST), os = off_of(T_SRC0);
    ivec4 i = unflatten(f, nes), o = unflatten(f, ned);
    int end = min(f + PER, n);
#if defined(DST_F16)
    for (int k = f; k < end; k += 2) {
        uint h0 = load_bits(at(i, nbs, os));
        int d0 = at(o, nbd, od);
        step4(i, nes); step4(o, ned);
        if (k + 1 < end) {
            uint h1 = load_bits(at(i, nbs, os));
            int d1 = at(o, nbd, od);
            step4(i, nes); step4(o, ned);
            if ((d0 & 1) == 0 && d1 == d0 + 1) {
                D[d0 >> 1] = h0 | (h1 << 16); // this thread owns both halves of the word
            } else {
                store_f16_half(d0, h0);
                store_f16_half(d1, h1);
            }
        } else {
            store_f16_half(d0, h0);
        }
    }
#else
    for (int k = f; k < end; ++k) {
        D[at(o, nbd, od)] = load_bits(at(i, nbs, os));
        step4(i, nes); step4(o, ned);
    }
#endif
}
