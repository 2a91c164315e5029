// Row reductions along ne0, one block per row (grid-stride over rows) with a block-wide sum. L2_NORM and RMS_NORM
// sum x^2, then divide every element by the row's norm (word0 = eps, float bits); SUM_ROWS writes the row's sum.
#include "common.cuh"

template <bool L2>
__device__ void norm(float* d, const float* a, const int* p) {
    __shared__ float warp_sums[32];
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const float eps = op_float(p, 0);
    const int ne0 = va.ne[0];
    const int rows = nrows(va);
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long ra = row_at(va, row);
        const long long rd = row_at(vd, row);
        float sq = 0.0f;
        for (int i0 = threadIdx.x; i0 < ne0; i0 += blockDim.x) {
            const float x = a[ra + i0 * va.nb[0]];
            sq += x * x;
        }
        const float sum = block_sum(sq, warp_sums);
        // L2: eps clamps the norm (it is not added under the root); RMS: eps is added to the mean.
        const float denom = L2 ? fmaxf(sqrtf(sum), eps) : sqrtf(sum / ne0 + eps);
        for (int i0 = threadIdx.x; i0 < ne0; i0 += blockDim.x) {
            d[rd + i0 * vd.nb[0]] = a[ra + i0 * va.nb[0]] / denom;
        }
        // Every thread has read warp_sums for this row before the next row overwrites it.
        __syncthreads();
    }
}

extern "C" __global__ void l2_norm_f32(float* d, const float* a, const int* p) { norm<true>(d, a, p); }
extern "C" __global__ void rms_norm_f32(float* d, const float* a, const int* p) { norm<false>(d, a, p); }

// SUM_ROWS: dst [1, ne1, ne2, ne3].
extern "C" __global__ void sum_rows_f32(float* d, const float* a, const int* p) {
    __shared__ float warp_sums[32];
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const int ne0 = va.ne[0];
    const int rows = nrows(va);
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const long long ra = row_at(va, row);
        float sum = 0.0f;
        for (int i0 = threadIdx.x; i0 < ne0; i0 += blockDim.x) {
            sum += a[ra + i0 * va.nb[0]];
        }
        sum = block_sum(sum, warp_sums);
        if (threadIdx.x == 0) {
            d[row_at(vd, row)] = sum;
        }
        __syncthreads();  // warp_sums is read by every thread before the next row overwrites it
    }
}
