#version 450
// Element-wise f32 maps: SOFTPLUS, SIGMOID, SILU, EXP, NEG, SCALE, CLAMP (one of OP_* is defined by the host).
#include "common.glsl"
#include "expf.glsl"

// `precise`: see expf.glsl.
float log1p_precise(float u) {
    precise float w = 1.0 + u;
    precise float wm1 = w - 1.0;
    return w == 1.0 ? u : log(w) * (u / wm1); // corrects the rounding of 1 + u
}

// e^-|x| never overflows, so +-150 give 0 or 1 (and SILU 0 or x) instead of inf/inf.
float sigmoid(float x) {
    float e = exp_precise(-abs(x));
    return (x >= 0.0 ? 1.0 : e) / (1.0 + e);
}

float scale_s, scale_b; // op words 0 and 1: SCALE's s, b or CLAMP's min, max

float apply(float x) {
#if defined(OP_SOFTPLUS)
    return x > 20.0 ? x : log1p_precise(exp_precise(x));
#elif defined(OP_SIGMOID)
    return sigmoid(x);
#elif defined(OP_SILU)
    return x * sigmoid(x);
#elif defined(OP_EXP)
    return exp_precise(x);
#elif defined(OP_NEG)
    return -x;
#elif defined(OP_SCALE)
    return x * scale_s + scale_b;
#elif defined(OP_CLAMP) // words: min, max
    return min(max(x, scale_s), scale_b);
#endif
}

void main() {
    load_params();
    scale_s = op_float(0);
    scale_b = op_float(1);
    int n = nelem(ne_d);
    int f = first_elem();
    if (f >= n) return;
#if defined(VEC4) // dst and src contiguous, offsets multiples of 4
    if (f + 4 <= n) {
        vec4 x = uintBitsToFloat(S04[(off_0 + f) >> 2]);
        D4[(off_d + f) >> 2] = floatBitsToUint(vec4(apply(x.x), apply(x.y), apply(x.z), apply(x.w)));
    } else {
        for (int k = f; k < n; ++k) store_f32(off_d + k, apply(LOAD_F32(S0, off_0 + k)));
    }
#else
    ivec4 i = unflatten(f, ne_d);
    int end = min(f + PER, n);
    for (int k = f; k < end; ++k) {
        store_f32(at(i, nb_d, off_d), apply(LOAD_F32(S0, at(i, nb_0, off_0))));
        step4(i, ne_d);
    }
#endif
}
