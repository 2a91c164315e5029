// Host (CPU) emulation of the CUDA subset the kernels use, for checking kernel logic on machines without a GPU
// (see host_emulation.py). One OS thread per CUDA thread; the blocks of a launch run one after another, so
// __shared__ variables can be function statics. Not emulated: warp divergence rules, the GPU memory model.
#pragma once
#include <math.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#define HOST_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

struct Dim3 {
    unsigned x, y, z;
};
thread_local Dim3 threadIdx, blockIdx;
Dim3 blockDim, gridDim;

struct Barrier {
    std::mutex m;
    std::condition_variable cv;
    int n = 0, count = 0;
    long generation = 0;
    void wait() {
        std::unique_lock<std::mutex> lock(m);
        const long g = generation;
        if (++count == n) {
            count = 0;
            ++generation;
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != g; });
        }
    }
};
Barrier block_barrier;
float shuffle_slots[2][1024];
thread_local int shuffle_round;

inline void __syncthreads() { block_barrier.wait(); }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
// Float operations rounded as written, which the GPU never fuses into an FMA; host_emulation.py compiles with
// -ffp-contract=off, so the host does not fuse them either (aarch64 would by default).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

// Shuffles exchange values through block-wide slots: valid because the kernels call them with the whole block.
// Two slot sets alternate, so one barrier per shuffle suffices: a set is rewritten only after the next shuffle's
// barrier, which every thread reaches after reading it.
inline float shuffle_from(float v, int src, bool valid) {
    float* slots = shuffle_slots[shuffle_round++ & 1];
    slots[threadIdx.x] = v;
    block_barrier.wait();
    return valid ? slots[src] : v;
}
inline float __shfl_up_sync(unsigned, float v, int d) {
    return shuffle_from(v, threadIdx.x - d, (int)(threadIdx.x & 31) >= d);
}
inline float __shfl_xor_sync(unsigned, float v, int d) { return shuffle_from(v, threadIdx.x ^ d, true); }

// The f16 conversions (common.cuh uses PTX cvt on the GPU): _Float16 converts with the same round-to-nearest-even.
inline float half_to_float(unsigned short h) {
    _Float16 x;
    std::memcpy(&x, &h, 2);
    return (float)x;
}
inline unsigned short float_to_half(float f) {
    const _Float16 x = (_Float16)f;
    unsigned short h;
    std::memcpy(&h, &x, 2);
    return h;
}

// Entry points take (dst, src0, ..., params): 3, 4, 5 or 8 pointers (GATED_DELTA_NET binds dst + 6 sources).
typedef void (*Kernel3)(void*, void*, void*);
typedef void (*Kernel4)(void*, void*, void*, void*);
typedef void (*Kernel5)(void*, void*, void*, void*, void*);
typedef void (*Kernel8)(void*, void*, void*, void*, void*, void*, void*, void*);

inline void call_kernel(void* kernel, int nargs, void** a) {
    switch (nargs) {
        case 3:
            ((Kernel3)kernel)(a[0], a[1], a[2]);
            break;
        case 4:
            ((Kernel4)kernel)(a[0], a[1], a[2], a[3]);
            break;
        case 5:
            ((Kernel5)kernel)(a[0], a[1], a[2], a[3], a[4]);
            break;
        case 8:
            ((Kernel8)kernel)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
            break;
        default:
            std::abort();  // a new argument count: add its signature above
    }
}

extern "C" void emulate_launch(void* kernel, int nargs, void** args, int grid, int block) {
    blockDim = {(unsigned)block, 1, 1};
    gridDim = {(unsigned)grid, 1, 1};
    for (int b = 0; b < grid; ++b) {
        block_barrier.n = block;
        std::vector<std::thread> threads;
        for (int t = 0; t < block; ++t) {
            threads.emplace_back([=] {
                threadIdx = {(unsigned)t, 0, 0};
                shuffle_round = 0;
                blockIdx = {(unsigned)b, 0, 0};
                call_kernel(kernel, nargs, args);
            });
        }
        for (auto& th : threads) {
            th.join();
        }
    }
}
