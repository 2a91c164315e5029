// L2_NORM and RMS_NORM: one work group per row; sum of squares by strided partial sums and a tree in local memory
// (work-group size is a power of two), then every element divided by the row's norm. word0 = eps.
__kernel void norm(__global float* d, __global const float* a, __constant int* P, __local float* part) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0);
    const int lid = get_local_id(0), lsz = get_local_size(0);
    const float eps = WORD_F(0);
    __global float* drow = d + ROW_START(T_DST);
    __global const float* arow = a + ROW_START(T_A);
    float s = 0.0f;
    for (int i = lid; i < ne0; i += lsz) {
        const float x = arow[i * sa];
        s += x * x;
    }
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int half_n = lsz / 2; half_n > 0; half_n >>= 1) {
        if (lid < half_n) part[lid] += part[lid + half_n];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#ifdef L2
    const float den = fmax(sqrt(part[0]), eps);  // eps clamps the norm; it is not added under the root
#else
    const float den = sqrt(part[0] / (float)ne0 + eps);
#endif
    for (int i = lid; i < ne0; i += lsz) drow[i * sd] = arow[i * sa] / den;
}
