// L2_NORM and RMS_NORM: one work group per row, work item l owning a contiguous segment of it: segment sums of
// squares (8 lanes at a time with vload8 when the row is contiguous; PoCL will not reorder a scalar float sum
// itself), their total by work item 0 in local memory, then every element divided by the row's norm. word0 = eps.
__kernel void norm(__global float* d, __global const float* a, const Params P, __local float* part) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0);
    const int lid = get_local_id(0), lsz = get_local_size(0), seg = (ne0 + lsz - 1) / lsz;
    const int begin = min(ne0, lid * seg), end = min(ne0, begin + seg);
    const float eps = WORD_F(0);
    __global float* dr = d + ROW(T_DST);
    __global const float* ar = a + ROW(T_A);
    int i = begin;
    float s = 0.0f;
    if (sa == 1) {
        float8 s8 = 0.0f;
        for (; i + 8 <= end; i += 8) {
            const float8 x = vload8(0, ar + i);
            s8 += x * x;
        }
        const float4 s4 = s8.lo + s8.hi;
        s = (s4.x + s4.y) + (s4.z + s4.w);
    }
    for (; i < end; ++i) {
        const float x = ar[i * sa];
        s += x * x;
    }
    part[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0) {
        float total = 0.0f;
        for (int l = 0; l < lsz; ++l) total += part[l];
        part[lsz] = total;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float total = part[lsz];
#ifdef L2
    const float den = fmax(sqrt(total), eps);  // eps clamps the norm; it is not added under the root
#else
    const float den = sqrt(total / (float)ne0 + eps);
#endif
    for (i = begin; i < end; ++i) dr[i * sd] = ar[i * sa] / den;
}

// SUM_ROWS: the same segment sums (of x, not x^2) and their total, written by work item 0 to dst [1, ne1, ne2, ne3].
__kernel void sum_rows(__global float* d, __global const float* a, const Params P, __local float* part) {
    const int ne0 = NE(T_A, 0), sa = NB(T_A, 0);
    const int lid = get_local_id(0), lsz = get_local_size(0), seg = (ne0 + lsz - 1) / lsz;
    const int begin = min(ne0, lid * seg), end = min(ne0, begin + seg);
    __global const float* ar = a + ROW(T_A);
    part[lid] = segment_sum(ar, begin, end, sa);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0) {
        float total = 0.0f;
        for (int l = 0; l < lsz; ++l) total += part[l];
        d[ROW(T_DST)] = total;
    }
}
