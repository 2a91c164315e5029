// SOFT_MAX_EXT: dst = softmax(a * scale + mask) along ne0, one block per row (grid-stride over rows).
// word0 = scale (float bits). The mask row is i1 (mask.ne1 >= a.ne1), its plane i2 % mask.ne2, i3 % mask.ne3.
// Three passes over the row: the max (so exp never overflows, and -inf mask entries give exp(-inf) = 0), the sum
// of the exponentials, then the normalised values; the scores are recomputed rather than staged.
#include "common.cuh"

extern "C" __global__ void soft_max_f32(float* d, const float* a, const float* mask, const int* p) {
    __shared__ float warp_scratch[32];
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vm = view_of(p, 2);
    const float scale = op_float(p, 0);
    const int ne0 = va.ne[0];
    const int rows = nrows(va);
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const int i1 = row % va.ne[1], i2 = row / va.ne[1] % va.ne[2], i3 = row / va.ne[1] / va.ne[2];
        const long long ra = at(va, 0, i1, i2, i3);
        const long long rm = at(vm, 0, i1, i2 % vm.ne[2], i3 % vm.ne[3]);
        const long long rd = at(vd, 0, i1, i2, i3);
        float m = __int_as_float(0xff800000);  // -inf
        for (int i0 = threadIdx.x; i0 < ne0; i0 += blockDim.x) {
            m = fmaxf(m, a[ra + i0 * va.nb[0]] * scale + mask[rm + i0 * vm.nb[0]]);
        }
        m = block_max(m, warp_scratch);
        __syncthreads();  // every thread has read the maxima before the sum reuses the scratch
        float sum = 0.0f;
        for (int i0 = threadIdx.x; i0 < ne0; i0 += blockDim.x) {
            sum += expf(a[ra + i0 * va.nb[0]] * scale + mask[rm + i0 * vm.nb[0]] - m);
        }
        sum = block_sum(sum, warp_scratch);
        for (int i0 = threadIdx.x; i0 < ne0; i0 += blockDim.x) {
            d[rd + i0 * vd.nb[0]] = expf(a[ra + i0 * va.nb[0]] * scale + mask[rm + i0 * vm.nb[0]] - m) / sum;
        }
        __syncthreads();  // likewise before the next row
    }
}
