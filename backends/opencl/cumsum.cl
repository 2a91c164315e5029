// CUMSUM: one work group per row. Work item l owns the contiguous segment [l*seg, (l+1)*seg) of the row: it sums
// the segment, one work item scans the segment sums in local memory, then each work item rescans its segment
// starting from the sum of everything before it. Two barriers in all; the carry into a segment is read only
// after the barrier that follows the scan (upstream CUDA raced there). Contiguous rows go 8 elements at a time
// with explicit float8 (PoCL does not vectorise a float sum or scan itself).
__kernel void cumsum(__global float* d, __global const float* a, const Params P, __local float* part) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0);
    const int lid = get_local_id(0), lsz = get_local_size(0), seg = (ne0 + lsz - 1) / lsz;
    const int begin = min(ne0, lid * seg), end = min(ne0, begin + seg);
    __global float* dr = d + ROW(T_DST);
    __global const float* ar = a + ROW(T_A);
    part[lid] = segment_sum(ar, begin, end, sa);
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0) {  // exclusive scan of the segment sums
        float run = 0.0f;
        for (int l = 0; l < lsz; ++l) {
            const float t = part[l];
            part[l] = run;
            run += t;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float run = part[lid];
    int i = begin;
    if (sa == 1 && sd == 1) {  // 8 at a time: a log-step scan inside the vector, then the carry
        for (; i + 8 <= end; i += 8) {
            float8 x = vload8(0, ar + i);
            x += (float8)(0.0f, x.s0, x.s12, x.s3456);  // lanes shifted up by 1, 2, 4
            x += (float8)(0.0f, 0.0f, x.s0123, x.s45);
            x += (float8)((float4)(0.0f), x.s0123);
            x += run;
            vstore8(x, 0, dr + i);
            run = x.s7;
        }
    }
    for (; i < end; ++i) {
        run += ar[i * sa];
        dr[i * sd] = run;
    }
}
