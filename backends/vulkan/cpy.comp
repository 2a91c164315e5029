#version 450
// CPY / CONT: dst[flat] = src[flat] with the flat index decomposed by each tensor's own ne (they may differ).
// SRC_F16 / DST_F16 select the element types; same-type copies move raw bits.
// Paths are chosen at compile time (lavapipe runs both sides of a divergent branch, masked): VEC4 when both are
// contiguous and 4-aligned, DST_VEC4 when only dst is, else the general strided path.
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

void store_bits(int idx, uint bits) {
#if defined(DST_F16)
    store_f16_half(idx, bits);
#else
    D[idx] = bits;
#endif
}

void main() {
    load_params();
    ivec4 ned = ne_d, nes = ne_0, nbd = nb_d, nbs = nb_0;
    int od = off_d, os = off_0;
    int n = nelem(ned);
    int f = first_elem(); // PER is 4: runs start on even flat indices, so f16 pairs share a word
    if (f >= n) return;
#if defined(VEC4) // flat order is memory order: 4 elements per access
    if (f + 4 <= n) {
        int qs = (os + f) >> 2, qd = (od + f) >> 2;
#if defined(SRC_F16) && defined(DST_F16)
        D2[qd] = S02[qs];
#elif defined(SRC_F16)
        uvec2 h = S02[qs];
        D4[qd] = floatBitsToUint(vec4(f16_to_f32(h.x & 0xFFFFu), f16_to_f32(h.x >> 16),
                                      f16_to_f32(h.y & 0xFFFFu), f16_to_f32(h.y >> 16)));
#elif defined(DST_F16)
        vec4 x = uintBitsToFloat(S04[qs]);
        D2[qd] = uvec2(f32_to_f16(x.x) | (f32_to_f16(x.y) << 16), f32_to_f16(x.z) | (f32_to_f16(x.w) << 16));
#else
        D4[qd] = S04[qs];
#endif
    } else {
        for (int k = f; k < n; ++k) store_bits(od + k, load_bits(os + k));
    }
#elif defined(DST_VEC4) // gather 4 source elements, store them at once
    ivec4 i = unflatten(f, nes);
    if (f + 4 <= n) {
        uint b0 = load_bits(at(i, nbs, os)); step4(i, nes);
        uint b1 = load_bits(at(i, nbs, os)); step4(i, nes);
        uint b2 = load_bits(at(i, nbs, os)); step4(i, nes);
        uint b3 = load_bits(at(i, nbs, os));
#if defined(DST_F16)
        D2[(od + f) >> 2] = uvec2(b0 | (b1 << 16), b2 | (b3 << 16));
#else
        D4[(od + f) >> 2] = uvec4(b0, b1, b2, b3);
#endif
    } else {
        for (int k = f; k < n; ++k) {
            store_bits(od + k, load_bits(at(i, nbs, os)));
            step4(i, nes);
        }
    }
#else
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
#endif
}
