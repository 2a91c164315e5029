// MUL_MAT: dst[n,m,i2,i3] = sum_k a[k,n,i2/r2,i3/r3] * b[k,m,i2,i3] with r2 = b.ne2/a.ne2, r3 = b.ne3/a.ne3 (ggml
// broadcasts a by division). a is f32, f16 or a quantized type of quants.cuh (one entry point each), b and dst are
// f32; all are arbitrary views (a quantized a: rows of whole blocks, any row and matrix strides).
// Tiled: a block of THREADS threads computes a TILE x TILE tile of dst, 4 x 4 outputs per thread, from DEPTH-deep
// slices of a and b staged in shared memory, so each element loaded from memory serves TILE products. A quantized a
// is dequantized while it is staged (Quant::stage), a chunk per thread, never as a whole matrix in memory.
// Blocks take tiles (n tile fastest, then m tile, then the batch) in a grid-stride loop.
// Mat-vec (quantized a, at most MMV_COLS columns of b, mul_mat_vec_*): one warp per row of a, which is read once.
// MUL_MAT_ID (below) runs the same tiles with its columns gathered per expert, and its own mat-vec.
#include "quants.cuh"

#define TILE 64
#define TILE_K 16                                             // slice depth of f32/f16 a
#define PER_THREAD 4                                          // outputs per thread along n and along m
#define THREADS ((TILE / PER_THREAD) * (TILE / PER_THREAD))  // 256; the launch shape in __init__.py matches
#define WARPS (THREADS / 32)
#define MMV_COLS 8  // the most b columns (MUL_MAT's M, MUL_MAT_ID's tokens) the mat-vec paths take (__init__.py)

__device__ __forceinline__ float load(const float* x, long long i) { return x[i]; }
__device__ __forceinline__ float load(const unsigned short* x, long long i) { return half_to_float(x[i]); }

// Stages the DEPTH x TILE slice [k0, k0 + DEPTH) x [r0, r0 + TILE) of x (contracted dim k = ne0, row dim r = ne1,
// `base` the batch's element 0) in tile[k][r], zeros past K or past rows. Consecutive threads walk the dim with
// unit stride, so the loads coalesce for plain and for transposed views alike.
template <int DEPTH, typename T>
__device__ __forceinline__ void stage(float (*tile)[TILE + 1], const T* x, long long base, const View& v, int k0,
                                      int r0) {
    const int K = v.ne[0], rows = v.ne[1];
    const bool k_fast = v.nb[0] == 1;
#pragma unroll
    for (int e = 0; e < TILE * DEPTH / THREADS; ++e) {
        const int id = threadIdx.x + e * THREADS;
        const int kk = k_fast ? id % DEPTH : id / TILE;
        const int rr = k_fast ? id / DEPTH : id % TILE;
        const int k = k0 + kk, r = r0 + rr;
        tile[kk][rr] = k < K && r < rows ? load(x, base + k * v.nb[0] + r * v.nb[1]) : 0.0f;
    }
}

// acc += the staged slices' product: thread (tx, ty) owns rows tx + 16 r of as and columns ty + 16 c of bs.
template <int DEPTH>
__device__ __forceinline__ void multiply_slice(float (&acc)[PER_THREAD][PER_THREAD], const float (*as)[TILE + 1],
                                               const float (*bs)[TILE + 1], int tx, int ty) {
#pragma unroll
    for (int kk = 0; kk < DEPTH; ++kk) {
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

// How the tiled kernels read a (MUL_MAT) or the experts (MUL_MAT_ID): element type, slice depth, staging.
template <typename T>
struct Plain {
    typedef T Elem;
    enum { DEPTH = TILE_K };
    static __device__ __forceinline__ void stage(float (*tile)[TILE + 1], const T* x, long long base, const View& v,
                                                 int k0, int r0) {
        ::stage<DEPTH>(tile, x, base, v, k0, r0);
    }
};

// A quantized slice: each thread dequantizes one chunk (row rr, elements k0 + QCHUNK cc ..) of the TILE rows; K is
// whole blocks, so a slice never passes it. `base` and the strides count blocks.
template <class Q>
struct Quant {
    typedef unsigned char Elem;
    enum { DEPTH = THREADS / TILE * QCHUNK };  // 32: one chunk per thread
    static __device__ __forceinline__ void stage(float (*tile)[TILE + 1], const unsigned char* x, long long base,
                                                 const View& v, int k0, int r0) {
        const int rr = threadIdx.x / (DEPTH / QCHUNK), cc = threadIdx.x % (DEPTH / QCHUNK);
        const int k = k0 + cc * QCHUNK, r = r0 + rr;
        float w[QCHUNK] = {};
        if (r < v.ne[1]) {
            Q::chunk(x + (base + k / Q::BLOCK * v.nb[0] + r * v.nb[1]) * Q::TYPE_SIZE, k % Q::BLOCK, w);
        }
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            tile[cc * QCHUNK + j][rr] = w[j];
        }
    }
};

template <class W>
__device__ void mul_mat(float* d, const typename W::Elem* a, const float* b, const int* p) {
    __shared__ float as[W::DEPTH][TILE + 1];  // +1: the k-fast staging writes column-wise without bank conflicts
    __shared__ float bs[W::DEPTH][TILE + 1];
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
        for (int k0 = 0; k0 < K; k0 += W::DEPTH) {
            W::stage(as, a, a_base, va, k0, n0);
            stage<W::DEPTH>(bs, b, b_base, vb, k0, m0);
            __syncthreads();
            multiply_slice<W::DEPTH>(acc, as, bs, tx, ty);
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

// acc[c] (c < cols) += this lane's share of the dot of the quantized row w (K elements) with column c of b, whose
// element k is at y[c * col_stride + k * k_stride]: lane l takes chunks l, l + 32, ..., so a warp reads the row's
// bytes in order, and each chunk is dequantized once for all the columns.
template <class Q>
__device__ __forceinline__ void lane_dots(float (&acc)[MMV_COLS], const unsigned char* w, int K, const float* y,
                                          long long k_stride, long long col_stride, int cols) {
    for (int k = (threadIdx.x & 31) * QCHUNK; k < K; k += 32 * QCHUNK) {
        float x[QCHUNK];
        Q::chunk(w + k / Q::BLOCK * Q::TYPE_SIZE, k % Q::BLOCK, x);
#pragma unroll
        for (int c = 0; c < MMV_COLS; ++c) {
            if (c < cols) {
                const float* yk = y + c * col_stride + k * k_stride;
#pragma unroll
                for (int j = 0; j < QCHUNK; ++j) {
                    acc[c] += x[j] * yk[j * k_stride];
                }
            }
        }
    }
}

// MUL_MAT mat-vec: warp `row` of the launch computes dst[n, 0 .. M) of batch (i2, i3) for row = n + N (i2 + ne2 i3).
// The loop runs to the block's bounds, not the warp's, so every thread of the block reaches every shuffle.
template <class Q>
__device__ void mul_mat_vec(float* d, const unsigned char* a, const float* b, const int* p) {
    const View vd = view_of(p, 0);
    const View va = view_of(p, 1);
    const View vb = view_of(p, 2);
    const int K = va.ne[0], N = va.ne[1], M = vb.ne[1];
    const int rows = N * vb.ne[2] * vb.ne[3];
    for (int row0 = blockIdx.x * WARPS; row0 < rows; row0 += gridDim.x * WARPS) {
        const int row = row0 + threadIdx.x / 32;
        const bool live = row < rows;
        const int n = row % N, i2 = row / N % vb.ne[2], i3 = row / N / vb.ne[2];
        float acc[MMV_COLS] = {};
        if (live) {  // a's matrix by division (ggml's broadcast); a row is whole blocks side by side (nb0 = 1 block)
            const long long a_row = at(va, 0, n, i2 / (vb.ne[2] / va.ne[2]), i3 / (vb.ne[3] / va.ne[3]));
            lane_dots<Q>(acc, a + a_row * Q::TYPE_SIZE, K, b + at(vb, 0, 0, i2, i3), vb.nb[0], vb.nb[1], M);
        }
#pragma unroll
        for (int c = 0; c < MMV_COLS; ++c) {
            if (c < M) {  // the same M in every thread: the block stays together through the shuffles
                const float dot = warp_sum(acc[c]);
                if (live && (threadIdx.x & 31) == 0) {
                    d[at(vd, n, c, i2, i3)] = dot;
                }
            }
        }
    }
}

// MUL_MAT_ID: dst[n, e, t] = sum_k w[k, n, ids[e, t]] * b[k, e % n_b1, t]; w (experts [K, N, n_exp]) f32, f16 or
// quantized, b f32 [K, n_b1, T], ids i32 [n_used, T], all arbitrary views. A block takes one (n tile, expert) item
// at a time (grid-stride) and scans the (e, t) pairs, PAIR_WINDOW at a time in pair order (e fastest): it compacts the
// pairs routed to its expert, then multiplies the expert's n tile with those pairs' b columns, TILE columns per pass.
// Each expert is read once per window that routes a pair to it, and experts no pair uses are never read.
#define PAIR_ITEMS 4                          // pairs a thread examines per window
#define PAIR_WINDOW (THREADS * PAIR_ITEMS)

// Stages b's columns of pairs[0 .. min(count, TILE)) as stage() does a row range; zeros past them or past K.
template <int DEPTH>
__device__ __forceinline__ void stage_pairs(float (*tile)[TILE + 1], const float* b, const View& vb, const int* pairs,
                                            int count, int n_used, int k0) {
    const bool k_fast = vb.nb[0] == 1;
#pragma unroll
    for (int e = 0; e < TILE * DEPTH / THREADS; ++e) {
        const int id = threadIdx.x + e * THREADS;
        const int kk = k_fast ? id % DEPTH : id / TILE;
        const int cc = k_fast ? id / DEPTH : id % TILE;
        const int k = k0 + kk;
        float x = 0.0f;
        if (k < vb.ne[0] && cc < count) {
            const int pair = pairs[cc];
            x = b[at(vb, k, pair % n_used % vb.ne[1], pair / n_used, 0)];
        }
        tile[kk][cc] = x;
    }
}

template <class W>
__device__ void mul_mat_id(float* d, const typename W::Elem* w, const float* b, const int* ids, const int* p) {
    __shared__ float ws[W::DEPTH][TILE + 1];
    __shared__ float bs[W::DEPTH][TILE + 1];
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
                for (int k0 = 0; k0 < K; k0 += W::DEPTH) {
                    W::stage(ws, w, w_base, vw, k0, n0);
                    stage_pairs<W::DEPTH>(bs, b, vb, pairs + c0, count - c0, n_used, k0);
                    __syncthreads();
                    multiply_slice<W::DEPTH>(acc, ws, bs, tx, ty);
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

// MUL_MAT_ID mat-vec (quantized experts, few tokens): warp `item` of the launch computes dst[n, e, t] for
// item = n + N (e + n_used t), n fastest so that neighbouring warps read neighbouring rows of one expert.
template <class Q>
__device__ void mul_mat_id_vec(float* d, const unsigned char* w, const float* b, const int* ids, const int* p) {
    const View vd = view_of(p, 0);
    const View vw = view_of(p, 1);
    const View vb = view_of(p, 2);
    const View vi = view_of(p, 3);
    const int K = vw.ne[0], N = vw.ne[1], n_used = vi.ne[0];
    const int items = N * n_used * vi.ne[1];
    for (int item0 = blockIdx.x * WARPS; item0 < items; item0 += gridDim.x * WARPS) {
        const int item = item0 + threadIdx.x / 32;
        const bool live = item < items;
        const int n = item % N, e = item / N % n_used, t = item / N / n_used;
        float acc[MMV_COLS] = {};
        if (live) {
            const int expert = ids[at(vi, e, t, 0, 0)];
            lane_dots<Q>(acc, w + at(vw, 0, n, expert, 0) * Q::TYPE_SIZE, K, b + at(vb, 0, e % vb.ne[1], t, 0),
                         vb.nb[0], 0, 1);
        }
        const float dot = warp_sum(acc[0]);
        if (live && (threadIdx.x & 31) == 0) {
            d[at(vd, n, e, t, 0)] = dot;
        }
    }
}

extern "C" __global__ void mul_mat_f32(float* d, const float* a, const float* b, const int* p) {
    mul_mat<Plain<float>>(d, a, b, p);
}
extern "C" __global__ void mul_mat_f16(float* d, const unsigned short* a, const float* b, const int* p) {
    mul_mat<Plain<unsigned short>>(d, a, b, p);
}
extern "C" __global__ void mul_mat_id_f32(float* d, const float* w, const float* b, const int* ids, const int* p) {
    mul_mat_id<Plain<float>>(d, w, b, ids, p);
}
extern "C" __global__ void mul_mat_id_f16(float* d, const unsigned short* w, const float* b, const int* ids,
                                          const int* p) {
    mul_mat_id<Plain<unsigned short>>(d, w, b, ids, p);
}

// Quantized a / experts: the tiled and the mat-vec entry points of every type of quants.cuh.
#define QUANT_ENTRY_POINTS(Q)                                                                                      \
    extern "C" __global__ void mul_mat_##Q(float* d, const unsigned char* a, const float* b, const int* p) {        \
        mul_mat<Quant<Q>>(d, a, b, p);                                                                             \
    }                                                                                                              \
    extern "C" __global__ void mul_mat_vec_##Q(float* d, const unsigned char* a, const float* b, const int* p) {    \
        mul_mat_vec<Q>(d, a, b, p);                                                                                \
    }                                                                                                              \
    extern "C" __global__ void mul_mat_id_##Q(float* d, const unsigned char* w, const float* b, const int* ids,     \
                                              const int* p) {                                                      \
        mul_mat_id<Quant<Q>>(d, w, b, ids, p);                                                                     \
    }                                                                                                              \
    extern "C" __global__ void mul_mat_id_vec_##Q(float* d, const unsigned char* w, const float* b, const int* ids, \
                                                  const int* p) {                                                  \
        mul_mat_id_vec<Q>(d, w, b, ids, p);                                                                        \
    }
FOR_EACH_QUANT(QUANT_ENTRY_POINTS)
