// TRI, FILL and DIAG: element-wise over dst with the element's own (i0, i1) deciding the value.
__kernel void tri(__global float* d, __global const float* a, __constant int* P) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0), type = WORD(0), step = get_local_size(0);
    const int i1 = get_global_id(1);
    __global float* drow = d + ROW_START(T_DST);
    __global const float* arow = a + ROW_START(T_A);
    int i0 = FIRST_I0;
    for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) {
        const bool keep = type == 1 ? i0 <= i1 : type == 2 ? i0 > i1 : type == 3 ? i0 >= i1 : i0 < i1;
        drow[i0 * sd] = keep ? arow[i0 * sa] : 0.0f;
    }
}

__kernel void fill(__global float* d, __constant int* P) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), step = get_local_size(0);
    const float c = WORD_F(0);
    __global float* drow = d + ROW_START(T_DST);
    int i0 = FIRST_I0;
    for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step) drow[i0 * sd] = c;
}

// src [n,1,a,b] -> dst [n,n,a,b]: src row (i2, i3) has i1 = 0, so ROW_START(T_A) with get_global_id(1) = i1 is
// not usable; index src explicitly.
__kernel void diag(__global float* d, __global const float* a, __constant int* P) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), step = get_local_size(0);
    const int i1 = get_global_id(1), i2 = (int)get_global_id(2) % NE(T_DST, 2), i3 = (int)get_global_id(2) / NE(T_DST, 2);
    __global float* drow = d + ROW_START(T_DST);
    int i0 = FIRST_I0;
    for (int k = 0; k < EPT && i0 < ne0; ++k, i0 += step)
        drow[i0 * sd] = i0 == i1 ? a[OFF(T_A) + i0 * NB(T_A, 0) + i2 * NB(T_A, 2) + i3 * NB(T_A, 3)] : 0.0f;
}
