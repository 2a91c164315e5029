// ggml's quantized weight types, read in place: one struct per type (named by its ggml label, the {src} of an entry
// point) with BLOCK elements per block stored in TYPE_SIZE bytes, laid out as ggml-common.h's block_* structs
// (reference/quants.py checks the same layouts against ggml). Kernels pick a type as a template argument, so each
// entry point is compiled for its type alone, and dequantize in registers:
//   Q::chunk(block, i0, v)  v[0..8) = elements i0 .. i0 + 7 of the block (i0 a multiple of QCHUNK)
// Eight consecutive elements share one scale in every type (sub-blocks are 16 or 32 long), so a chunk costs one scale
// decode and reads 8 consecutive weight bytes (or nibbles, or 2-bit fields) where the type packs them side by side.
// The parameter block counts a quantized tensor's offset and strides in blocks (its ggml_type_size units), so
// at(view, i0 / BLOCK, ...) is a block index; block_bytes() turns it into the block's first byte.
#pragma once
#include "common.cuh"

#define QCHUNK 8  // elements a chunk dequantizes together

// Blocks are not aligned (34, 18, 22, 110 or 210 bytes): read little-endian fields a byte at a time.
__device__ __forceinline__ float f16_at(const unsigned char* b, int at) {
    return half_to_float((unsigned short)(b[at] | b[at + 1] << 8));
}

__device__ __forceinline__ unsigned u32_at(const unsigned char* b, int at) {
    return b[at] | b[at + 1] << 8 | b[at + 2] << 16 | (unsigned)b[at + 3] << 24;
}

// The first byte of the block holding element i0 of row (i1, i2, i3) of v.
template <class Q>
__device__ __forceinline__ long long block_bytes(const View& v, int i0, int i1, int i2, int i3) {
    return at(v, i0 / Q::BLOCK, i1, i2, i3) * Q::TYPE_SIZE;
}

// ---- 32-element types: a half-float scale d (and min m), 16 bytes of nibbles: element j in the low nibble of
// byte j, element j + 16 in its high nibble; Q5 types keep the fifth bits in a 32-bit word (bit j = element j).
struct q8_0 {
    enum { BLOCK = 32, TYPE_SIZE = 34 };  // d, int8 qs[32]
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        const float d = f16_at(b, 0);
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = d * (float)(signed char)b[2 + i0 + j];
        }
    }
    // ggml's quantize_row_q8_0_ref: d = max |x| / 127, q = round-half-away(x / d); d stored as f16
    static __device__ __forceinline__ void quantize(const float* x, unsigned char* b) {
        float amax = 0.0f;
        for (int j = 0; j < BLOCK; ++j) {
            amax = fmaxf(amax, fabsf(x[j]));
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const unsigned short h = float_to_half(d);
        b[0] = h & 0xff;
        b[1] = h >> 8;
        for (int j = 0; j < BLOCK; ++j) {
            b[2 + j] = (unsigned char)(signed char)roundf(x[j] * id);
        }
    }
};

// The nibble of element i0 + j: low nibbles hold elements 0..15, high nibbles 16..31.
__device__ __forceinline__ int nibble(const unsigned char* qs, int i0, int j) {
    return qs[(i0 & 15) + j] >> (i0 & 16 ? 4 : 0) & 15;
}

// x / d + 8.5 rounded as written, then truncated (int8_t in ggml) and capped at 15
__device__ __forceinline__ int q4_0_level(float x, float id) {
    const int q = (int)__fadd_rn(__fmul_rn(x, id), 8.5f);
    return q < 15 ? q : 15;
}

struct q4_0 {
    enum { BLOCK = 32, TYPE_SIZE = 18 };  // d, qs[16]; x = d (q - 8)
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        const float d = f16_at(b, 0);
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = d * (float)(nibble(b + 2, i0, j) - 8);
        }
    }
    // ggml's quantize_row_q4_0_ref: d = (the value of largest magnitude, first one on ties) / -8,
    // q = min(15, trunc(x / d + 8.5)). Products and sums rounded as written (no fused multiply-add), as on the CPU.
    static __device__ __forceinline__ void quantize(const float* x, unsigned char* b) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < BLOCK; ++j) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const unsigned short h = float_to_half(d);
        b[0] = h & 0xff;
        b[1] = h >> 8;
        for (int j = 0; j < BLOCK / 2; ++j) {
            b[2 + j] = (unsigned char)(q4_0_level(x[j], id) | q4_0_level(x[j + BLOCK / 2], id) << 4);
        }
    }
};

struct q4_1 {
    enum { BLOCK = 32, TYPE_SIZE = 20 };  // d, m, qs[16]; x = d q + m
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        const float d = f16_at(b, 0), m = f16_at(b, 2);
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = d * (float)nibble(b + 4, i0, j) + m;
        }
    }
};

struct q5_0 {
    enum { BLOCK = 32, TYPE_SIZE = 22 };  // d, qh (32 fifth bits), qs[16]; x = d (q - 16)
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        const float d = f16_at(b, 0);
        const unsigned qh = u32_at(b, 2) >> i0;
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = d * (float)((nibble(b + 6, i0, j) | (int)(qh >> j & 1) << 4) - 16);
        }
    }
};

struct q5_1 {
    enum { BLOCK = 32, TYPE_SIZE = 24 };  // d, m, qh, qs[16]; x = d q + m
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        const float d = f16_at(b, 0), m = f16_at(b, 2);
        const unsigned qh = u32_at(b, 4) >> i0;
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = d * (float)(nibble(b + 8, i0, j) | (int)(qh >> j & 1) << 4) + m;
        }
    }
};

// ---- K-quants: 256-element super-blocks. Q2_K/Q3_K pack 2-bit fields four to a byte: element i lives in byte
// 32 (i / 128) + i % 32 of the field array at bit 2 ((i % 128) / 32). Q3_K/Q5_K keep one high bit per element in
// 32 bytes: element i in byte i % 32 at bit i / 32.
__device__ __forceinline__ int crumb(const unsigned char* qs, int i0, int j) {
    return qs[32 * (i0 / 128) + i0 % 32 + j] >> 2 * (i0 % 128 / 32) & 3;
}

__device__ __forceinline__ int high_bit(const unsigned char* qh, int i0, int j) {
    return qh[i0 % 32 + j] >> i0 / 32 & 1;
}

struct q2_K {
    enum { BLOCK = 256, TYPE_SIZE = 84 };  // scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        const int s = b[i0 / 16];
        const float dl = f16_at(b, 80) * (float)(s & 15), ml = f16_at(b, 82) * (float)(s >> 4);
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = dl * (float)crumb(b + 16, i0, j) - ml;
        }
    }
};

struct q3_K {
    enum { BLOCK = 256, TYPE_SIZE = 110 };  // hmask[32], qs[64], scales[12] (16 x 6 bits), d
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        // scale s: low 4 bits in byte s % 8 (low nibble for s < 8, else high), high 2 bits in byte 8 + s % 4 at
        // bit 2 (s / 4); stored offset by 32
        const unsigned char* sc = b + 96;
        const int s = i0 / 16;
        const int low = s < 8 ? sc[s] & 15 : sc[s - 8] >> 4;
        const int high = sc[8 + s % 4] >> 2 * (s / 4) & 3;
        const float dl = f16_at(b, 108) * (float)((low | high << 4) - 32);
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = dl * (float)(crumb(b + 32, i0, j) - (high_bit(b, i0, j) ? 0 : 4));
        }
    }
};

// Q4_K/Q5_K: eight 6-bit (scale, min) pairs in 12 bytes: pair j < 4 in the low 6 bits of bytes j and j + 4; pair
// j >= 4 has its low 4 bits in byte j + 4 (scale low nibble, min high nibble) and its top 2 bits in the top bits of
// bytes j - 4 (scale) and j (min).
__device__ __forceinline__ void scale_min_k4(const unsigned char* s, int j, float d, float dmin, float* scale,
                                             float* minimum) {
    const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
    const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    *scale = d * (float)sc;
    *minimum = dmin * (float)m;
}

// Q4_K/Q5_K nibbles: 64-element groups over 32 bytes, the group's first 32 elements in the low nibbles.
__device__ __forceinline__ int group_nibble(const unsigned char* qs, int i0, int j) {
    return qs[32 * (i0 / 64) + i0 % 32 + j] >> (i0 & 32 ? 4 : 0) & 15;
}

struct q4_K {
    enum { BLOCK = 256, TYPE_SIZE = 144 };  // d, dmin, scales[12], qs[128]; x = d sc q - dmin m per 32 elements
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        float scale, minimum;
        scale_min_k4(b + 4, i0 / 32, f16_at(b, 0), f16_at(b, 2), &scale, &minimum);
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = scale * (float)group_nibble(b + 16, i0, j) - minimum;
        }
    }
};

struct q5_K {
    enum { BLOCK = 256, TYPE_SIZE = 176 };  // d, dmin, scales[12], qh[32], qs[128]
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        float scale, minimum;
        scale_min_k4(b + 4, i0 / 32, f16_at(b, 0), f16_at(b, 2), &scale, &minimum);
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = scale * (float)(group_nibble(b + 48, i0, j) | high_bit(b + 16, i0, j) << 4) - minimum;
        }
    }
};

struct q6_K {
    enum { BLOCK = 256, TYPE_SIZE = 210 };  // ql[128], qh[64], int8 scales[16], d; x = d scale (q - 32)
    static __device__ __forceinline__ void chunk(const unsigned char* b, int i0, float* v) {
        // per 128-element half h: low nibbles in 64 bytes (elements 0..63 low, 64..127 high nibble), top 2 bits
        // in 32 bytes at bit 2 ((i % 128) / 32)
        const unsigned char* ql = b + 64 * (i0 / 128) + i0 % 64;
        const unsigned char* qh = b + 128 + 32 * (i0 / 128) + i0 % 32;
        const int ql_shift = i0 % 128 / 64 * 4, qh_shift = i0 % 128 / 32 * 2;
        const float dl = f16_at(b, 208) * (float)(signed char)b[192 + i0 / 16];
#pragma unroll
        for (int j = 0; j < QCHUNK; ++j) {
            v[j] = dl * (float)(((ql[j] >> ql_shift & 15) | (qh[j] >> qh_shift & 3) << 4) - 32);
        }
    }
};

// Instantiates X(type) for the types a program has entry points for (matmul.cu, get_rows.cu): every type above (the
// compile check, the host emulation) unless the runtime names the one its module is for (a -D of this macro, empty
// for plain types, __init__.py quant_define), so a process compiles only the types its weights use.
#ifndef FOR_EACH_QUANT
#define FOR_EACH_QUANT(X) X(q8_0) X(q4_0) X(q4_1) X(q5_0) X(q5_1) X(q2_K) X(q3_K) X(q4_K) X(q5_K) X(q6_K)
#endif
