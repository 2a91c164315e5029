// ADD, SUB, MUL, DIV with b repeated over a (b index = i_k % ne_b_k). BCAST0 is defined when b.ne0 != a.ne0, so
// the per-element modulo is only paid when it is needed.
#if defined(OP_ADD)
#define OP(x, y) ((x) + (y))
#elif defined(OP_SUB)
#define OP(x, y) ((x) - (y))
#elif defined(OP_MUL)
#define OP(x, y) ((x) * (y))
#elif defined(OP_DIV)
#define OP(x, y) ((x) / (y))
#endif

__kernel void binary(__global float* d, __global const float* a, __global const float* b, __constant int* P) {
    const int ne0 = NE(T_DST, 0), ne2 = NE(T_DST, 2), step = get_local_size(0);
    const int sd = NB(T_DST, 0), sa = NB(T_A, 0), sb = NB(T_B, 0), neb0 = NE(T_B, 0);
    const int i1 = get_global_id(1), i2 = (int)get_global_id(2) % ne2, i3 = (int)get_global_id(2) / ne2;
    __global float* drow = d + ROW_START(T_DST);
    __global const float* arow = a + ROW_START(T_A);
    __global const float* brow = b + OFF(T_B) + (i1 % NE(T_B, 1)) * NB(T_B, 1) + (i2 % NE(T_B, 2)) * NB(T_B, 2)
                                 + (i3 % NE(T_B, 3)) * NB(T_B, 3);
    int i0 = FIRST_I0;
#ifdef BCAST0
    for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) drow[i0 * sd] = OP(arow[i0 * sa], brow[(i0 % neb0) * sb]);
#else
    if (sd == 1 && sa == 1 && sb == 1) {
        for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) drow[i0] = OP(arow[i0], brow[i0]);
    } else {
        for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) drow[i0 * sd] = OP(arow[i0 * sa], brow[i0 * sb]);
    }
#endif
}
