// SOFT_MAX_EXT: dst = softmax(a * scale + mask) along ne0 (word0 = scale). One work group per row, work item l
// owning a contiguous segment: its segment max m_l, then e = exp(z - m_l) stored to dst and summed to s_l (the
// segment's a and mask are still in cache); work item 0 combines them, M = max m_l, S = sum s_l exp(m_l - M), and
// each work item scales its segment of dst by exp(m_l - M) / S: one exp per element. A segment that is all -inf
// (mask) has m_l = -inf: it subtracts 0 instead (exp(-inf) = 0, no -inf - -inf) and counts 0. The mask row is i1 of
// mask plane (i2 % mask.ne2, i3 % mask.ne3).
#define Z(i) (ar[(i) * sa] * scale + mr[(i) * sm])

__kernel void soft_max(__global float* d, __global const float* a, __global const float* m, const Params P,
                       __local float* part) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0), sm = NB(T_B, 0);
    const int lid = get_local_id(0), lsz = get_local_size(0), seg = (ne0 + lsz - 1) / lsz;
    const int begin = min(ne0, lid * seg), end = min(ne0, begin + seg);
    const bool unit = sa == 1 && sm == 1 && sd == 1;  // 8 lanes at a time (PoCL will not reorder a max or sum)
    const float scale = WORD_F(0);
    __global float* dr = d + ROW(T_DST);
    __global const float* ar = a + ROW(T_A);
    __global const float* mr = m + OFF(T_B) + I1 * NB(T_B, 1) + (I2 % NE(T_B, 2)) * NB(T_B, 2)
                               + (I3 % NE(T_B, 3)) * NB(T_B, 3);
    float mx = -INFINITY, s = 0.0f;
    int i = begin;
    if (unit) {
        float8 m8 = -INFINITY;
        for (; i + 8 <= end; i += 8) m8 = fmax(m8, vload8(0, ar + i) * scale + vload8(0, mr + i));
        const float4 m4 = fmax(m8.lo, m8.hi);
        mx = fmax(fmax(m4.x, m4.y), fmax(m4.z, m4.w));
    }
    for (; i < end; ++i) mx = fmax(mx, Z(i));
    const float base = mx > -INFINITY ? mx : 0.0f;
    i = begin;
    if (unit) {
        float8 s8 = 0.0f;
        for (; i + 8 <= end; i += 8) {
            const float8 e = exp(vload8(0, ar + i) * scale + vload8(0, mr + i) - base);
            vstore8(e, 0, dr + i);
            s8 += e;
        }
        const float4 s4 = s8.lo + s8.hi;
        s = (s4.x + s4.y) + (s4.z + s4.w);
    }
    for (; i < end; ++i) {
        const float e = exp(Z(i) - base);
        dr[i * sd] = e;
        s += e;
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
    const float f = mx > -INFINITY ? exp(mx - part[2 * lsz]) / part[2 * lsz + 1] : 0.0f;
    for (i = begin; i < end; ++i) dr[i * sd] *= f;
}
