// SSM_CONV: dst[ch, t, s] = sum_{i < d_conv} sx[t + i, ch, s] * c[i, ch]; element-wise grid over dst
// (i0 = ch, i1 = t, i2 = s), so any number of tokens is covered.
__kernel void ssm_conv(__global float* d, __global const float* sx, __global const float* c, __constant int* P) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), step = get_local_size(0), d_conv = NE(T_B, 0);
    const int t = get_global_id(1), s = get_global_id(2);
    const int x0 = NB(T_A, 0), x1 = NB(T_A, 1), c0 = NB(T_B, 0), c1 = NB(T_B, 1);
    __global float* drow = d + ROW_START(T_DST);
    __global const float* xs = sx + OFF(T_A) + t * x0 + s * NB(T_A, 2);
    __global const float* cs = c + OFF(T_B);
    int ch = FIRST_I0;
    for (int k = 0; k < EPT && ch < ne0; ++k, ch += step) {
        float acc = 0.0f;
        for (int i = 0; i < d_conv; ++i) acc += xs[i * x0 + ch * x1] * cs[i * c0 + ch * c1];
        drow[ch * sd] = acc;
    }
}
