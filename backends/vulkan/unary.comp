#version 450
// Element-wise f32 maps: SOFTPLUS, SIGMOID, SILU, EXP, NEG, SCALE (one of OP_* is defined by the host).
#include "common.glsl"

// exp with Cody-Waite range reduction and a Taylor polynomial: a few ulp everywhere, so the finite/inf boundary
// near 88.72 matches a float64 reference (a driver's exp2(x*log2e) is off by up to |x|*2^-24 relative there).
float exp_precise(float x) {
    if (isnan(x)) return x;
    if (x > 88.8) return uintBitsToFloat(0x7F800000u);
    if (x < -104.0) return 0.0;
    float k = roundEven(x * 1.4426950408889634);
    float r = (x - k * 0.693145751953125) - k * 1.4286068203094172e-06; // ln2 split: k * hi is exact
    float p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0
              + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    int ki = int(k);
    int k1 = ki / 2; // 2^k in two exact factors so 2^128 does not overflow before the product does
    return p * uintBitsToFloat(uint(k1 + 127) << 23) * uintBitsToFloat(uint(ki - k1 + 127) << 23);
}

float log1p_precise(float u) {
    float w = 1.0 + u;
    if (w == 1.0) return u;
    return log(w) * (u / (w - 1.0)); // corrects the rounding of 1 + u
}

float apply(float x) {
#if defined(OP_SOFTPLUS)
    return x > 20.0 ? x : log1p_precise(exp_precise(x));
#elif defined(OP_SIGMOID)
    return 1.0 / (1.0 + exp_precise(-x));
#elif defined(OP_SILU)
    return x / (1.0 + exp_precise(-x));
#elif defined(OP_EXP)
    return exp_precise(x);
#elif defined(OP_NEG)
    return -x;
#elif defined(OP_SCALE)
    return x * op_float(0) + op_float(1);
#endif
}

void main() {
    ivec4 ne = ne_of(T_DST);
    int n = nelem(ne);
    int f = first_elem();
    if (f >= n) return;
    ivec4 nbd = nb_of(T_DST), nbs = nb_of(T_SRC0);
    int od = off_of(T_DST), os = off_of(T_SRC0);
    ivec4 i = unflatten(f, ne);
    int end = min(f + PER, n);
    for (int k = f; k < end; ++k) {
        store_f32(at(i, nbd, od), apply(LOAD_F32(S0, at(i, nbs, os))));
        step4(i, ne);
    }
}
