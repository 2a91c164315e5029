// ARGSORT and TOP_K: one block per row (grid-stride over rows). TOP_K is a descending argsort of which the first k
// indices are written. Keys are compared as (value, index) pairs, a total order, so equal values still give a
// permutation (in index order); DESC sorts the negated values (exact, and it reverses the order).
//
// Rows of up to SHARED_SORT elements are sorted in shared memory by a bitonic network in its "mirror" form, whose
// comparators all put the smaller key at the lower position: padding the row to a power of two with keys above
// every real one would leave those pads in place, so comparators that reach past the row are simply skipped and no
// padding is stored. Longer rows fall back to a rank count: element i goes to position
// #{j : key_j < key_i} (O(n^2) per row, but no storage).
#include "common.cuh"

#define SHARED_SORT 4096  // 32 KiB of keys and indices

__device__ __forceinline__ bool before(float x, int i, float y, int j) { return x < y || (x == y && i < j); }

// Writes the first `count` indices of the sorted row (ascending keys) to dst row `rd`.
__device__ void sort_row(int* d, const View& vd, long long rd, const float* a, const View& va, long long ra,
                         bool desc, int count) {
    __shared__ float keys[SHARED_SORT];
    __shared__ int idx[SHARED_SORT];
    const int n = va.ne[0];
    if (n > SHARED_SORT) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float x = desc ? -a[ra + i * va.nb[0]] : a[ra + i * va.nb[0]];
            int rank = 0;
            for (int j = 0; j < n; ++j) {
                const float y = desc ? -a[ra + j * va.nb[0]] : a[ra + j * va.nb[0]];
                rank += before(y, j, x, i);
            }
            if (rank < count) {
                d[rd + rank * vd.nb[0]] = i;
            }
        }
        return;
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        keys[i] = desc ? -a[ra + i * va.nb[0]] : a[ra + i * va.nb[0]];
        idx[i] = i;
    }
    __syncthreads();
    int width = 1;  // the row padded to a power of two
    while (width < n) {
        width <<= 1;
    }
    for (int k = 2; k <= width; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            // Comparator c of the width / 2 in this step: lower position lo, upper position hi.
            for (int c = threadIdx.x; c < width >> 1; c += blockDim.x) {
                const int lo = c / j * 2 * j + c % j;
                const int hi = j == k >> 1 ? (lo | (k - 1)) - (lo & (k - 1)) : lo + j;  // the mirror, then halves
                if (hi < n && before(keys[hi], idx[hi], keys[lo], idx[lo])) {
                    const float x = keys[lo];
                    const int i = idx[lo];
                    keys[lo] = keys[hi];
                    idx[lo] = idx[hi];
                    keys[hi] = x;
                    idx[hi] = i;
                }
            }
            __syncthreads();
        }
    }
    for (int r = threadIdx.x; r < count; r += blockDim.x) {
        d[rd + r * vd.nb[0]] = idx[r];
    }
    __syncthreads();  // every index is written out before the next row is loaded
}

// word0: 0 ASC, 1 DESC. dst has a's shape.
extern "C" __global__ void argsort_f32(int* d, const float* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    for (int row = blockIdx.x; row < nrows(va); row += gridDim.x) {
        sort_row(d, vd, row_at(vd, row), a, va, row_at(va, row), op_int(p, 0) == 1, va.ne[0]);
    }
}

// word0: k. dst [k, ne1, ne2, ne3].
extern "C" __global__ void top_k_f32(int* d, const float* a, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    for (int row = blockIdx.x; row < nrows(va); row += gridDim.x) {
        sort_row(d, vd, row_at(vd, row), a, va, row_at(va, row), true, vd.ne[0]);
    }
}
