// MUL_MAT: dst[n,m,i2,i3] = sum_k a[k,n,i2/r2,i3/r3] * b[k,m,i2,i3] with r2 = b.ne2/a.ne2, r3 = b.ne3/a.ne3 (ggml
// broadcasts a by division). a is f32 or f16 (one entry point each), b and dst are f32; all are arbitrary views.
// Tiled: a block of THREADS threads computes a TILE x TILE tile of dst, 4 x 4 outputs per thread, from TILE_K-deep
// slices of a and b staged in shared memory, so each element loaded from memory serves TILE products.
// Blocks take tiles (n tile fastest, then m tile, then the batch) in a grid-stride loop.
#include "common.cuh"

#define TILE 64
#define TILE_K 16
#define PER_THREAD 4                                          // outputs per thread along n and along m
#define THREADS ((TILE / PER_THREAD) * (TILE / PER_THREAD))  // 256; the launch shape in __init__.py matches

__device__ __forceinline__ float load(const float* x, long long i) { return x[i]; }
__device__ __forceinline__ float load(const unsigned short* x, long long i) { return half_to_float(x[i]); }

// Stages the TILE_K x TILE slice [k0, k0 + TILE_K) x [r0, r0 + TILE) of x (contracted dim k = ne0, row dim r = ne1,
// `base` the batch's element 0) in tile[k][r], zeros past K or past rows. Consecutive threads walk the dim with
// unit stride, so the loads coalesce for plain and for transposed views alike.
template <typename T>
__device__ __forceinline__ void stage(float (*tile)[TILE + 1], const T* x, long long base, const View& v, int k0,
                                      int r0) {
    const int K = v.ne[0], rows = v.ne[1];
    const bool k_fast = v.nb[0] == 1;
#pragma unroll
    for (int e = 0; e < TILE * TILE_K / THREADS; ++e) {
        const int id = threadIdx.x + e * THREADS;
        const int kk = k_fast ? id % TILE_K : id / TILE;
        const int rr = k_fast ? id / TILE_K : id % TILE;
        const int k = k0 + kk, r = r0 + rr;
        tile[kk][rr] = k < K && r < rows ? load(x, base + k * v.nb[0] + r * v.nb[1]) : 0.0f;
    }
}

template <typename A>
__device__ void mul_mat(float* d, const A* a, const float* b, const int* p) {
    __shared__ float as[TILE_K][TILE + 1];  // +1: the k-fast staging writes column-wise without bank conflicts
    __shared__ float bs[TILE_K][TILE + 1];
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vb = view_of(p, 2);
    const int K = va.ne[0], N = va.ne[1], M = vb.ne[1];
    const int tiles_n = (N + TILE - 1) / TILE, tiles_m = (M + TILE - 1) / TILE;
    const int tiles = tiles_n * tiles_m * vb.ne[2] * vb.ne[3];
    const int r2 = vb.ne[2] / va.ne[2], r3 = vb.ne[3] / va.ne[3];
    // Thread (tx, ty) owns n = n0 + tx + 16 r and m = m0 + ty + 16 c: a warp reads 16 consecutive as entries and
    // 2 broadcast bs entries per step, and writes runs of 16 consecutive n (dst's ne0).
    const int tx = threadIdx.x % (TILE / PER_THREAD), ty = threadIdx.x / (TILE / PER_THREAD);
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        int rest = tile;
        const int n0 = rest % tiles_n * TILE;
        rest /= tiles_n;
        const int m0 = rest % tiles_m * TILE;
        rest /= tiles_m;
        const int i2 = rest % vb.ne[2], i3 = rest / vb.ne[2];
        const long long a_base = at(va, 0, 0, i2 / r2, i3 / r3);
        const long long b_base = at(vb, 0, 0, i2, i3);
        float acc[PER_THREAD][PER_THREAD] = {};
        for (int k0 = 0; k0 < K; k0 += TILE_K) {
            stage(as, a, a_base, va, k0, n0);
            stage(bs, b, b_base, vb, k0, m0);
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < TILE_K; ++kk) {
                float x[PER_THREAD], y[PER_THREAD];
#pragma unroll
                for (int r = 0; r < PER_THREAD; ++r) {
                    x[r] = as[kk][tx + r * (TILE / PER_THREAD)];
                    y[r] = bs[kk][ty + r * (TILE / PER_THREAD)];
                }
#pragma unroll
                for (int r = 0; r < PER_THREAD; ++r) {
#pragma unroll
                    for (int c = 0; c < PER_THREAD; ++c) {
                        acc[r][c] += x[r] * y[c];
                    }
                }
            }
            __syncthreads();  // everyone is done with this slice before the next one is staged
        }
#pragma unroll
        for (int r = 0; r < PER_THREAD; ++r) {
#pragma unroll
            for (int c = 0; c < PER_THREAD; ++c) {
                const int n = n0 + tx + r * (TILE / PER_THREAD), m = m0 + ty + c * (TILE / PER_THREAD);
                if (n < N && m < M) {
                    d[at(vd, n, m, i2, i3)] = acc[r][c];
                }
            }
        }
    }
}

extern "C" __global__ void mul_mat_f32(float* d, const float* a, const float* b, const int* p) { mul_mat(d, a, b, p); }
extern "C" __global__ void mul_mat_f16(float* d, const unsigned short* a, const float* b, const int* p) {
    mul_mat(d, a, b, p);
}
