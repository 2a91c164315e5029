// MUL_MAT: dst[n,m,i2,i3] = sum_k a[k,n,i2/r2,i3/r3] * b[k,m,i2,i3] with r2 = b.ne2/a.ne2, r3 = b.ne3/a.ne3 (ggml
// broadcasts a by division). a is f32 or f16 (one entry point each), b and dst are f32; all are arbitrary views.
// Tiled: a block of THREADS threads computes a TILE x TILE tile of dst, 4 x 4 outputs per thread, from TILE_K-deep
// slices of a and b staged in shared memory, so each element loaded from memory serves TILE products.
// Blocks take tiles (n tile fastest, then m tile, then the batch) in a grid-stride loop.
// MUL_MAT_ID (below) runs the same tiles with its columns gathered per expert.
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

// acc += the staged slices' product: thread (tx, ty) owns rows tx + 16 r of as and columns ty + 16 c of bs.
__device__ __forceinline__ void multiply_slice(float (&acc)[PER_THREAD][PER_THREAD], const float (*as)[TILE + 1],
                                               const float (*bs)[TILE + 1], int tx, int ty) {
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
            multiply_slice(acc, as, bs, tx, ty);
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

// MUL_MAT_ID: dst[n, e, t] = sum_k w[k, n, ids[e, t]] * b[k, e % n_b1, t]; w (experts [K, N, n_exp]) f32 or f16,
// b f32 [K, n_b1, T], ids i32 [n_used, T], all arbitrary views. A block takes one (n tile, expert) item at a time
// (grid-stride) and scans the (e, t) pairs, PAIR_WINDOW at a time in pair order (e fastest): it compacts the pairs
// routed to its expert, then multiplies the expert's n tile with those pairs' b columns, TILE columns per pass.
// Each expert is read once per window that routes a pair to it, and experts no pair uses are never read.
#define PAIR_ITEMS 4                          // pairs a thread examines per window
#define PAIR_WINDOW (THREADS * PAIR_ITEMS)

// Stages b's columns of pairs[0 .. min(count, TILE)) as stage() does a row range; zeros past them or past K.
__device__ __forceinline__ void stage_pairs(float (*tile)[TILE + 1], const float* b, const View& vb, const int* pairs,
                                            int count, int n_used, int k0) {
    const bool k_fast = vb.nb[0] == 1;
#pragma unroll
    for (int e = 0; e < TILE * TILE_K / THREADS; ++e) {
        const int id = threadIdx.x + e * THREADS;
        const int kk = k_fast ? id % TILE_K : id / TILE;
        const int cc = k_fast ? id / TILE_K : id % TILE;
        const int k = k0 + kk;
        float x = 0.0f;
        if (k < vb.ne[0] && cc < count) {
            const int pair = pairs[cc];
            x = b[at(vb, k, pair % n_used % vb.ne[1], pair / n_used, 0)];
        }
        tile[kk][cc] = x;
    }
}

template <typename W>
__device__ void mul_mat_id(float* d, const W* w, const float* b, const int* ids, const int* p) {
    __shared__ float ws[TILE_K][TILE + 1];
    __shared__ float bs[TILE_K][TILE + 1];
    __shared__ int pairs[PAIR_WINDOW];  // the window's pairs routed to this block's expert, in order
    __shared__ float warp_sums[32];
    const View vd = view_of(p, 0);
    const View vw = view_of(p, 1);
    const View vb = view_of(p, 2);
    const View vi = view_of(p, 3);
    const int K = vw.ne[0], N = vw.ne[1];
    const int n_used = vi.ne[0], n_pairs = vi.ne[0] * vi.ne[1];
    const int tiles_n = (N + TILE - 1) / TILE;
    const int tx = threadIdx.x % (TILE / PER_THREAD), ty = threadIdx.x / (TILE / PER_THREAD);
    for (int item = blockIdx.x; item < tiles_n * vw.ne[2]; item += gridDim.x) {
        const int n0 = item % tiles_n * TILE, expert = item / tiles_n;
        const long long w_base = at(vw, 0, 0, expert, 0);
        for (int p0 = 0; p0 < n_pairs; p0 += PAIR_WINDOW) {
            const int first = p0 + threadIdx.x * PAIR_ITEMS;
            bool hit[PAIR_ITEMS];
            float hits = 0.0f;  // the block scan adds floats: exact for counts this small
#pragma unroll
            for (int q = 0; q < PAIR_ITEMS; ++q) {
                const int pair = first + q;
                hit[q] = pair < n_pairs && ids[at(vi, pair % n_used, pair / n_used, 0, 0)] == expert;
                hits += hit[q];
            }
            float total;
            int slot = (int)block_exclusive_scan(hits, warp_sums, &total);
#pragma unroll
            for (int q = 0; q < PAIR_ITEMS; ++q) {
                if (hit[q]) {
                    pairs[slot++] = first + q;
                }
            }
            __syncthreads();
            const int count = (int)total;
            for (int c0 = 0; c0 < count; c0 += TILE) {
                float acc[PER_THREAD][PER_THREAD] = {};
                for (int k0 = 0; k0 < K; k0 += TILE_K) {
                    stage(ws, w, w_base, vw, k0, n0);
                    stage_pairs(bs, b, vb, pairs + c0, count - c0, n_used, k0);
                    __syncthreads();
                    multiply_slice(acc, ws, bs, tx, ty);
                    __syncthreads();
                }
#pragma unroll
                for (int r = 0; r < PER_THREAD; ++r) {
#pragma unroll
                    for (int c = 0; c < PER_THREAD; ++c) {
                        const int n = n0 + tx + r * (TILE / PER_THREAD), col = c0 + ty + c * (TILE / PER_THREAD);
                        if (n < N && col < count) {
                            const int pair = pairs[col];
                            d[at(vd, n, pair % n_used, pair / n_used, 0)] = acc[r][c];
                        }
                    }
                }
            }
            __syncthreads();  // everyone is done with pairs and warp_sums before the next window rewrites them
        }
    }
}

extern "C" __global__ void mul_mat_f32(float* d, const float* a, const float* b, const int* p) { mul_mat(d, a, b, p); }
extern "C" __global__ void mul_mat_f16(float* d, const unsigned short* a, const float* b, const int* p) {
    mul_mat(d, a, b, p);
}
extern "C" __global__ void mul_mat_id_f32(float* d, const float* w, const float* b, const int* ids, const int* p) {
    mul_mat_id(d, w, b, ids, p);
}
extern "C" __global__ void mul_mat_id_f16(float* d, const unsigned short* w, const float* b, const int* ids,
                                          const int* p) {
    mul_mat_id(d, w, b, ids, p);
}
