// TRI, FILL and DIAG: element-wise over dst; the element's own (i0, i1) decides the value.
__kernel void tri(__global float* d, __global const float* a, const Params P) {
    if (!ROW_IN_GRID) return;
    const int sd = NB(T_DST, 0), sa = NB(T_A, 0), i1 = I1, end = CHUNK_END;
    // the kept columns of row i1 are [lo, hi): LOWER i0 < i1, LOWER_DIAG i0 <= i1, UPPER i0 > i1, UPPER_DIAG i0 >= i1
    const int type = WORD(0);
    const int lo = type == 2 ? i1 + 1 : type == 3 ? i1 : 0;
    const int hi = type == 1 ? i1 + 1 : (type == 2 || type == 3) ? NE(T_DST, 0) : i1;
    __global float* dr = d + ROW(T_DST);
    __global const float* ar = a + ROW(T_A);
    for (int i = CHUNK_BEGIN; i < end; ++i) dr[i * sd] = i >= lo && i < hi ? ar[i * sa] : 0.0f;
}

__kernel void fill(__global float* d, const Params P) {
    if (!ROW_IN_GRID) return;
    const int sd = NB(T_DST, 0), end = CHUNK_END;
    const float c = WORD_F(0);
    __global float* dr = d + ROW(T_DST);
    for (int i = CHUNK_BEGIN; i < end; ++i) dr[i * sd] = c;
}

// src [n,1,a,b] -> dst [n,n,a,b]: row i1 of dst holds src[i1, 0, i2, i3] at i0 = i1 and zeros elsewhere.
__kernel void diag(__global float* d, __global const float* a, const Params P) {
    if (!ROW_IN_GRID) return;
    const int sd = NB(T_DST, 0), i1 = I1, end = CHUNK_END;
    const float v = a[OFF(T_A) + i1 * NB(T_A, 0) + I2 * NB(T_A, 2) + I3 * NB(T_A, 3)];
    __global float* dr = d + ROW(T_DST);
    for (int i = CHUNK_BEGIN; i < end; ++i) dr[i * sd] = i == i1 ? v : 0.0f;
}
