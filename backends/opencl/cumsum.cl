// CUMSUM: one work group per row, walking the row in tiles of (work-group size * CS_EPT) elements. Each work item
// sums CS_EPT consecutive elements, the work group scans those partial sums in local memory (Hillis-Steele), and
// a running carry joins the tiles. The carry is read from local memory before the barrier that lets the next
// tile overwrite it (upstream CUDA updated it before the barrier: a race).
#define CS_EPT 8

__kernel void cumsum(__global float* d, __global const float* a, __constant int* P, __local float* part) {
    const int ne0 = NE(T_DST, 0), sd = NB(T_DST, 0), sa = NB(T_A, 0);
    const int lid = get_local_id(0), lsz = get_local_size(0);
    __global float* drow = d + ROW_START(T_DST);
    __global const float* arow = a + ROW_START(T_A);
    float carry = 0.0f;
    for (int base = 0; base < ne0; base += lsz * CS_EPT) {
        const int first = base + lid * CS_EPT;
        float v[CS_EPT];
        float s = 0.0f;
        for (int k = 0; k < CS_EPT; ++k) {
            s += first + k < ne0 ? arow[(first + k) * sa] : 0.0f;
            v[k] = s;
        }
        part[lid] = s;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int off = 1; off < lsz; off <<= 1) {
            const float t = lid >= off ? part[lid - off] : 0.0f;
            barrier(CLK_LOCAL_MEM_FENCE);
            part[lid] += t;
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        const float before = carry + (lid > 0 ? part[lid - 1] : 0.0f);
        for (int k = 0; k < CS_EPT && first + k < ne0; ++k) drow[(first + k) * sd] = before + v[k];
        carry += part[lsz - 1];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}
