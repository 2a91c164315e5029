// SOFTPLUS, SIGMOID, SILU, EXP, NEG, SCALE: one OP_* define selects the function. Precise exp/log1p (no native_*),
// written so that +-150 gives inf/0 and never inf/inf.
inline float op(float x, __constant int* P) {
#if defined(OP_SOFTPLUS)
    return x > 20.0f ? x : log1p(exp(x));
#elif defined(OP_SIGMOID)
    return 1.0f / (1.0f + exp(-x));
#elif defined(OP_SILU)
    return x / (1.0f + exp(-x));
#elif defined(OP_EXP)
    return exp(x);
#elif defined(OP_NEG)
    return -x;
#elif defined(OP_SCALE)
    return x * WORD_F(0) + WORD_F(1);
#endif
}

__kernel void unary(__global float* d, __global const float* a, __constant int* P) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0), step = get_local_size(0);
    __global float* drow = d + ROW_START(T_DST);
    __global const float* arow = a + ROW_START(T_A);
    int i0 = FIRST_I0;
    if (sd == 1 && sa == 1) {  // the common contiguous case: unit strides the compiler can see
        for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) drow[i0] = op(arow[i0], P);
    } else {
        for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) drow[i0 * sd] = op(arow[i0 * sa], P);
    }
}
