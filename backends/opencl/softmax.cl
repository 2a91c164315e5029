// SOFT_MAX_EXT: dst = softmax(a * scale + mask) along ne0 (word0 = scale). One work group per row, work item l
// owning a contiguous segment: its segment max m_l, then s_l = sum exp(z - m_l) over the segment (the segment is
// still in cache); work item 0 combines them, M = max m_l, S = sum s_l exp(m_l - M), and every work item writes
// exp(z - M) / S. A segment that is all -inf (mask) has m_l = -inf and counts 0 (no -inf - -inf). The mask row
// is i1 of mask plane (i2 % mask.ne2, i3 % mask.ne3).
#define Z(i) (ar[(i) * sa] * scale + mr[(i) * sm])

__kernel void soft_max(__global float* d, __global const float* a, __global const float* m, const Params P,
                       __local float* part) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0), sm = NB(T_B, 0);
    const int lid = get_local_id(0), lsz = get_local_size(0), seg = (ne0 + lsz - 1) / lsz;
    const int begin = min(ne0, lid * seg), end = min(ne0, begin + seg);
    const float scale = WORD_F(0);
    __global float* dr = d + ROW(T_DST);
    __global const float* ar = a + ROW(T_A);
    __global const float* mr = m + OFF(T_B) + I1 * NB(T_B, 1) + (I2 % NE(T_B, 2)) * NB(T_B, 2)
                               + (I3 % NE(T_B, 3)) * NB(T_B, 3);
    float mx = -INFINITY, s = 0.0f;
    int i = begin;
    if (sa == 1 && sm == 1) {  // 8 lanes at a time (PoCL does not reorder a scalar max or sum itself)
        float8 m8 = -INFINITY;
        for (; i + 8 <= end; i += 8) m8 = fmax(m8, vload8(0, ar + i) * scale + vload8(0, mr + i));
        const float4 m4 = fmax(m8.lo, m8.hi);
        mx = fmax(fmax(m4.x, m4.y), fmax(m4.z, m4.w));
    }
    for (; i < end; ++i) mx = fmax(mx, Z(i));
    if (mx > -INFINITY) {
        i = begin;
        if (sa == 1 && sm == 1) {
            float8 s8 = 0.0f;
            for (; i + 8 <= end; i += 8) s8 += exp(vload8(0, ar + i) * scale + vload8(0, mr + i) - mx);
            const float4 s4 = s8.lo + s8.hi;
            s = (s4.x + s4.y) + (s4.z + s4.w);
        }
        for (; i < end; ++i) s += exp(Z(i) - mx);
    }
    part[lid] = mx;
    part[lsz + lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0) {
        float top = -INFINITY, total = 0.0f;
        for (int l = 0; l < lsz; ++l) top = fmax(top, part[l]);
        for (int l = 0; l < lsz; ++l) total += part[l] > -INFINITY ? part[lsz + l] * exp(part[l] - top) : 0.0f;
        part[2 * lsz] = top;
        part[2 * lsz + 1] = total;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float top = part[2 * lsz], total = part[2 * lsz + 1];
    for (i = begin; i < end; ++i) dr[i * sd] = exp(Z(i) - top) / total;
}
