// SOFTPLUS, SIGMOID, SILU, EXP, NEG, SCALE, CLAMP: one OP_* define selects the function of x. Precise exp (no
// native_*), written so that +-150 gives inf or 0, never inf/inf. Every function is branch-free so the loop
// vectorises.

// ln(u) for finite u >= 1: Cephes logf (polynomial on the mantissa, ~1 ulp). PoCL's log/log1p do not vectorise:
// SOFTPLUS with them took over 10x the time of EXP, with this 2x.
inline float log_ge1(float u) {
    int e = (as_int(u) >> 23) - 126;  // u = m * 2^e, m in [0.5, 1)
    float m = as_float((as_int(u) & 0x007fffff) | 0x3f000000);
    const bool low = m < 0.707106781186547524f;  // keep m - 1 in [sqrt(1/2) - 1, sqrt(2) - 1)
    e -= low;
    m = low ? m + m - 1.0f : m - 1.0f;
    const float z = m * m, fe = (float)e;
    float y = ((((((((7.0376836292E-2f * m - 1.1514610310E-1f) * m + 1.1676998740E-1f) * m - 1.2420140846E-1f) * m
                   + 1.4249322787E-1f) * m - 1.6668057665E-1f) * m + 2.0000714765E-1f) * m - 2.4999993993E-1f) * m
               + 3.3333331174E-1f) * m * z;
    y += -2.12194440e-4f * fe - 0.5f * z;
    return m + y + 0.693359375f * fe;
}

// log(1 + y) for y >= 0, to a few ulp: ln(u) * y / (u - 1) with u = 1 + y cancels u's rounding error (Goldberg).
inline float log1p_ge0(float y) {
    const float u = 1.0f + y;
    return u == 1.0f ? y : log_ge1(u) * (y / (u - 1.0f));
}

// min(x, 20) that keeps a NaN (fmin would turn it into 20)
inline float min20(float x) {
    return x > 20.0f ? 20.0f : x;
}

inline float softplus(float x) {
    const float r = log1p_ge0(exp(min20(x)));
    return x > 20.0f ? x : r;
}

#if defined(OP_SOFTPLUS)
#define OP(x) softplus(x)
#elif defined(OP_SIGMOID)  // exp(-min(x, 20)): for x > 20, 1 + exp(-x) is 1.0f either way, without denormal exps
#define OP(x) (1.0f / (1.0f + exp(-min20(x))))
#elif defined(OP_SILU)
#define OP(x) ((x) / (1.0f + exp(-min20(x))))
#elif defined(OP_EXP)
#define OP(x) exp(x)
#elif defined(OP_NEG)
#define OP(x) (-(x))
#elif defined(OP_SCALE)
#define OP(x) ((x) * s + b)
#elif defined(OP_CLAMP)  // words min, max (as SCALE's s, b); compares keep a NaN, as np.clip does
#define OP(x) ((x) < s ? s : (x) > b ? b : (x))
#endif

__kernel void unary(__global float* d, __global const float* a, const Params P) {
    if (!ROW_IN_GRID) return;
    const int sd = NB(T_DST, 0), sa = NB(T_A, 0), end = CHUNK_END;
    const float s = WORD_F(0), b = WORD_F(1);  // SCALE's and CLAMP's words
    __global float* dr = d + ROW(T_DST);
    __global const float* ar = a + ROW(T_A);
    for (int i = CHUNK_BEGIN; i < end; ++i) {
        const float x = ar[i * sa];
        dr[i * sd] = OP(x);
    }
}
