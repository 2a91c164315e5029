#version 450
// CPY / CONT: dst[flat] = src[flat] with the flat index decomposed by each tensor's own ne (they may differ).
// SRC_F16 / DST_F16 select the element types; same-type copies move raw bits.
// Paths are chosen at compile time (lavapipe runs both sides of a divergent branch, masked): VEC4 when both are
// contiguous and 4-aligned, DST_VEC4 when only dst is, else the general strided path.
#include "common.glsl"
#include "quants.glsl"

#if defined(QK)
// Q_Q8_0 / Q_Q4_0: f32 -> quantized dst as ggml's quantize_row_q8_0_ref / q4_0_ref encode it, a thread per block of
// dst from the 32 elements of src in the same flat positions. The divisions are correctly rounded (div_rn) and the
// products not fused, so the bytes are the reference's bit for bit. Blocks are 34 / 18 bytes, so a block's first or
// last 16 bits may share a word with a neighbour's: those are written with atomics (store_f16_half), the rest whole.
#define QHALVES (QBYTES / 2)

// a / b rounded to nearest: the quotient or a neighbour, whichever leaves the smallest exact (fused) residual.
float div_rn(float a, float b) {
    precise float q = a / b;
    uint u = floatBitsToUint(q);
    precise float lo = uintBitsToFloat(u - 1u), hi = uintBitsToFloat(u + 1u);
    precise float r = abs(fma(-q, b, a)), rlo = abs(fma(-lo, b, a)), rhi = abs(fma(-hi, b, a));
    float best = rlo < r ? lo : q;
    best = rhi < min(r, rlo) ? hi : best;
    return q == 0.0 || isinf(q) || isnan(q) ? q : best;
}

// C's roundf: halves away from zero.
float round_away(float v) {
    float t = trunc(v);
    return t + (abs(v - t) >= 0.5 ? sign(v) : 0.0);
}

void main() {
    load_params();
    int j = group_id() * WG + int(gl_LocalInvocationID.x);
    if (j >= nelem(ne_d) / QK) return;
    float x[QK];
    ivec4 i = unflatten(j * QK, ne_0);
    for (int k = 0; k < QK; ++k) {
        x[k] = LOAD_F32(S0, at(i, nb_0, off_0));
        step4(i, ne_0);
    }
    uint h[QHALVES]; // the block's bytes, two a half
#if defined(Q_Q8_0) // d = amax / 127, qs = round(x / d)
    float amax = 0.0;
    for (int k = 0; k < QK; ++k) amax = max(amax, abs(x[k]));
    float d = div_rn(amax, 127.0);
    precise float id = d != 0.0 ? div_rn(1.0, d) : 0.0;
    h[0] = f32_to_f16(d);
    for (int k = 0; k < QK / 2; ++k) {
        precise float x0 = x[2 * k] * id, x1 = x[2 * k + 1] * id;
        h[k + 1] = (uint(int(round_away(x0))) & 0xFFu) | ((uint(int(round_away(x1))) & 0xFFu) << 8);
    }
#elif defined(Q_Q4_0) // d = (the value of largest magnitude) / -8, qs[l] = x[l] | x[l + 16] << 4 as x / d + 8
    float amax = 0.0, vmax = 0.0;
    for (int k = 0; k < QK; ++k) {
        bool larger = amax < abs(x[k]); // the first of equal magnitudes wins
        vmax = larger ? x[k] : vmax;
        amax = larger ? abs(x[k]) : amax;
    }
    float d = vmax / -8.0; // exact
    precise float id = d != 0.0 ? div_rn(1.0, d) : 0.0;
    h[0] = f32_to_f16(d);
    uint q[QK];
    for (int k = 0; k < QK; ++k) {
        precise float scaled = x[k] * id;
        precise float biased = scaled + 8.5;
        q[k] = uint(min(15, int(biased)));
    }
    for (int k = 0; k < QK / 4; ++k)
        h[k + 1] = (q[2 * k] | (q[2 * k + 16] << 4)) | ((q[2 * k + 1] | (q[2 * k + 17] << 4)) << 8);
#endif
    ivec4 o = unflatten(j * QK, ne_d);
    int first = at(ivec4(o.x / QK, o.y, o.z, o.w), nb_d, off_d) * QHALVES; // in halves (offsets in blocks)
    int k = 0;
    if ((first & 1) != 0) {
        store_f16_half(first, h[0]);
        k = 1;
    }
    for (; k + 1 < QHALVES; k += 2) D[(first + k) >> 1] = h[k] | (h[k + 1] << 16);
    if (k < QHALVES) store_f16_half(first + k, h[k]);
}
#else

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
#endif
