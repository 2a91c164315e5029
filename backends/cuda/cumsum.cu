// CUMSUM: inclusive prefix sum along ne0, one block per row (grid-stride over rows), rows of any length.
// A row is scanned in tiles of blockDim.x * ITEMS elements: each thread sums ITEMS consecutive elements, the block
// scans those sums, and a running carry (kept in registers, identical in every thread) joins the tiles.
#include "common.cuh"

#define ITEMS 4

extern "C" __global__ void cumsum_f32(float* d, const float* a, const int* p) {
    __shared__ float warp_sums[32];
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const int ne0 = vd.ne[0];
    const int rows = nrows(vd);
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long da = row_at(vd, row);
        const long long aa = row_at(va, row);
        float carry = 0.0f;
        for (int tile = 0; tile < ne0; tile += blockDim.x * ITEMS) {
            const int first = tile + threadIdx.x * ITEMS;
            float x[ITEMS];
            float sum = 0.0f;
#pragma unroll
            for (int k = 0; k < ITEMS; ++k) {
                const int i0 = first + k;
                x[k] = i0 < ne0 ? a[aa + i0 * va.nb[0]] : 0.0f;
                sum += x[k];
            }
            float total;
            // Prefix of everything before this thread's items, within the tile.
            float run = carry + block_exclusive_scan(sum, warp_sums, &total);
#pragma unroll
            for (int k = 0; k < ITEMS; ++k) {
                const int i0 = first + k;
                run += x[k];
                if (i0 < ne0) {
                    d[da + i0 * vd.nb[0]] = run;
                }
            }
            carry += total;
            // Every thread has read warp_sums for this tile before the next tile overwrites it.
            __syncthreads();
        }
    }
}
