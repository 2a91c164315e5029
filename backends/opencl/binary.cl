// ADD, SUB, MUL, DIV with b repeated over a (b index i_k % ne_b_k). BCAST0 is defined when b.ne0 != a.ne0: the b
// index along the row then wraps with a counter (no per-element modulo).
#if defined(OP_ADD)
#define OP(x, y) ((x) + (y))
#elif defined(OP_SUB)
#define OP(x, y) ((x) - (y))
#elif defined(OP_MUL)
#define OP(x, y) ((x) * (y))
#elif defined(OP_DIV)
#define OP(x, y) ((x) / (y))
#endif

__kernel void binary(__global float* d, __global const float* a, __global const float* b, const Params P) {
    if (!ROW_IN_GRID) return;
    const int sd = NB(T_DST, 0), sa = NB(T_A, 0), sb = NB(T_B, 0), begin = CHUNK_BEGIN, end = CHUNK_END;
    __global float* dr = d + ROW(T_DST);
    __global const float* ar = a + ROW(T_A);
    __global const float* br = b + OFF(T_B) + (I1 % NE(T_B, 1)) * NB(T_B, 1) + (I2 % NE(T_B, 2)) * NB(T_B, 2)
                               + (I3 % NE(T_B, 3)) * NB(T_B, 3);
#ifdef BCAST0
    const int neb0 = NE(T_B, 0);
    for (int i = begin, j = begin % neb0; i < end; ++i) {
        dr[i * sd] = OP(ar[i * sa], br[j * sb]);
        if (++j == neb0) j = 0;
    }
#else
    for (int i = begin; i < end; ++i) dr[i * sd] = OP(ar[i * sa], br[i * sb]);
#endif
}
