// ggml's quantized weight blocks (ggml-common.h's block_* layouts), read in place. Prepended (after common.cl) to a
// kernel file when the host passes a type define: A_<TYPE> for a quantized src0 (MUL_MAT, MUL_MAT_ID, GET_ROWS),
// DST_<TYPE> for a quantized CPY destination. It defines QK (elements per block), QBYTES (bytes per block), the
// block type qblock (the unit the parameter block's offsets and strides count for such a tensor) and
//   float16 dequant16(blk, g): elements [16 g, 16 g + 16) of block blk, as ggml's dequantize_row_* gives them.
// Every type splits into 16-element groups that share one scale (and min) and read 16 consecutive bytes of quants,
// so one helper serves the mat-vec loop, the packed matmul's tile and GET_ROWS alike.
#if defined(A_Q8_0) || defined(DST_Q8_0)
#define QK 32
#define QBYTES 34
#elif defined(A_Q4_0) || defined(DST_Q4_0)
#define QK 32
#define QBYTES 18
#elif defined(A_Q4_1)
#define QK 32
#define QBYTES 20
#elif defined(A_Q5_0)
#define QK 32
#define QBYTES 22
#elif defined(A_Q5_1)
#define QK 32
#define QBYTES 24
#elif defined(A_Q2_K)
#define QK 256
#define QBYTES 84
#elif defined(A_Q3_K)
#define QK 256
#define QBYTES 110
#elif defined(A_Q4_K)
#define QK 256
#define QBYTES 144
#elif defined(A_Q5_K)
#define QK 256
#define QBYTES 176
#elif defined(A_Q6_K)
#define QK 256
#define QBYTES 210
#endif

#ifdef QK
typedef struct { uchar q[QBYTES]; } qblock;  // alignment 1: an array of them is the blocks side by side

// A half-float field at byte p of a block (every block size is even, so the field is 2-byte aligned).
inline float half_at(__global const uchar* p) { return vload_half(0, (__global const half*)p); }

// The 16 bytes of quants at p, and their nibble / 2-bit field `shift` bits up.
inline uchar16 quants16(__global const uchar* p) { return vload16(0, p); }
inline uchar16 bits16(__global const uchar* p, int shift, uchar mask) { return (quants16(p) >> (uchar)shift) & mask; }

// The 5th bit of the legacy 5-bit types: bit (16 g + j) of the little-endian 32-bit qh, for element j of group g.
inline uchar16 high_bit16(__global const uchar* qh, int g) {
    const uint h = (uint)qh[0] | (uint)qh[1] << 8 | (uint)qh[2] << 16 | (uint)qh[3] << 24;
    const uint16 at = (uint16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) + (uint)(16 * g);
    return convert_uchar16(((uint16)h >> at) & 1u) << (uchar)4;
}

// K-quants' 6-bit scale and min of sub-block j (0..7) packed in 12 bytes (ggml's get_scale_min_k4).
inline void scale_min_k4(__global const uchar* s, int j, float* sc, float* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

float16 dequant16(__global const qblock* block, int g) {
    __global const uchar* blk = block->q;
#if defined(A_Q8_0) || defined(DST_Q8_0)
    return half_at(blk) * convert_float16(as_char16(quants16(blk + 2 + 16 * g)));
#elif defined(A_Q4_0) || defined(DST_Q4_0)
    return (convert_float16(bits16(blk + 2, 4 * g, 0xF)) - 8.0f) * half_at(blk);
#elif defined(A_Q4_1)
    return convert_float16(bits16(blk + 4, 4 * g, 0xF)) * half_at(blk) + half_at(blk + 2);
#elif defined(A_Q5_0)
    const uchar16 q = bits16(blk + 6, 4 * g, 0xF) | high_bit16(blk + 2, g);
    return (convert_float16(q) - 16.0f) * half_at(blk);
#elif defined(A_Q5_1)
    const uchar16 q = bits16(blk + 8, 4 * g, 0xF) | high_bit16(blk + 4, g);
    return convert_float16(q) * half_at(blk) + half_at(blk + 2);
#elif defined(A_Q2_K) || defined(A_Q3_K) || defined(A_Q6_K)
    // Halves of 128 elements; in a half, 4 runs of 32 (h, s); a run's 16-element groups are upper = 0, 1.
    const int h = g >> 3, s = (g >> 1) & 3, upper = g & 1;
#if defined(A_Q2_K)  // scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin
    const uchar sm = blk[g];
    const float16 q = convert_float16(bits16(blk + 16 + 32 * h + 16 * upper, 2 * s, 3));
    return half_at(blk + 80) * (sm & 0xF) * q - half_at(blk + 82) * (sm >> 4);
#elif defined(A_Q3_K)  // hmask[32], qs[64], scales[12] (16 6-bit scales), d
    __global const uchar* sc = blk + 96;
    const int scale = (((sc[g & 7] >> (4 * (g >> 3))) & 0xF) | (((sc[8 + (g & 3)] >> (2 * (g >> 2))) & 3) << 4)) - 32;
    const uchar16 q = bits16(blk + 32 + 32 * h + 16 * upper, 2 * s, 3)
                      | bits16(blk + 16 * upper, 4 * h + s, 1) << (uchar)2;
    return half_at(blk + 108) * scale * convert_float16(as_char16(q - (uchar)4));  // a clear hmask bit subtracts 4
#else  // Q6_K: ql[128] (low nibbles), qh[64] (2 high bits), int8 scales[16], d
    const uchar16 q = bits16(blk + 64 * h + 32 * (s & 1) + 16 * upper, 4 * (s >> 1), 0xF)
                      | bits16(blk + 128 + 32 * h + 16 * upper, 2 * s, 3) << (uchar)4;
    return half_at(blk + 208) * (float)as_char(blk[192 + g]) * convert_float16(as_char16(q - (uchar)32));
#endif
#else  // Q4_K, Q5_K: d, dmin, scales[12] (8 6-bit scale/min pairs), [qh[32] (Q5_K)], qs[128]; runs of 64 = 2 sub-blocks
    const int sub = g >> 1, half16 = 16 * (g & 1);
    float sc, m;
    scale_min_k4(blk + 4, sub, &sc, &m);
#if defined(A_Q4_K)
    const uchar16 q = bits16(blk + 16 + 32 * (g >> 2) + half16, 4 * (sub & 1), 0xF);
#else
    const uchar16 q = bits16(blk + 48 + 32 * (g >> 2) + half16, 4 * (sub & 1), 0xF)
                      | bits16(blk + 16 + half16, sub, 1) << (uchar)4;
#endif
    return half_at(blk) * sc * convert_float16(q) - half_at(blk + 2) * m;
#endif
}

// The mat-vec's side (matmul.cl's mul_mat_vec_q): stage_b copies one block's QK values of b into local memory in the
// order block_dot reads them, with the sums of their 32-element runs (bs) for a type that takes its min term out of
// the element loop; block_dot adds a block's dot product with the staged values onto acc's 16 lanes.
#if defined(A_Q4_K)
// Q4_K: lane L of a 64-byte half of qs read as uint16 holds nibble t of 8 elements, element 64 (L / 8) + 32 (t % 2)
// + 4 (L % 8) + t / 2 of the half, so b is staged at 16 t + L and block_dot takes a whole nibble plane with one mask.
// The masked nibble comes out 2^(4t) too large: b is staged times 2^-4t (exact for |b| >= 2^-98). Each 32-element
// run's scale multiplies its partial sum once, and its min term is dmin * m times the run's sum of b.
void stage_b(__local float* bl, __local float* bs, __global const float* b) {
    for (int h = 0; h < 2; ++h, b += 128, bl += 128, bs += 4) {
        float16 v[8];
        _Pragma("unroll") for (int i = 0; i < 8; ++i) v[i] = vload16(i, b);
        _Pragma("unroll") for (int t = 0; t < 8; ++t) {
            const uint8 every4th = (uint8)(0, 4, 8, 12, 16, 20, 24, 28) + (uint)(t / 2);
            const float16 planes = (float16)(shuffle2(v[2 * (t % 2)], v[2 * (t % 2) + 1], every4th),
                                             shuffle2(v[4 + 2 * (t % 2)], v[5 + 2 * (t % 2)], every4th));
            vstore16(planes * as_float((127 - 4 * t) << 23), t, bl);
        }
        _Pragma("unroll") for (int j = 0; j < 4; ++j) {
            const float16 w = v[2 * j] + v[2 * j + 1];
            const float8 s8 = w.lo + w.hi;
            const float4 s4 = s8.lo + s8.hi;
            bs[j] = (s4.x + s4.y) + (s4.z + s4.w);
        }
    }
}

// 8 6-bit values from K-quants' packed scales: lo = bytes 0-3 masked to 6 bits (entries 0-3); hi = the low nibbles
// of `nibbles` (bytes 8-11) with the top 2 bits of lo's bytes above them (entries 4-7), 4 at a time in a uint.
inline float8 six_bit8(uint lo, uint nibbles) {
    const uint hi = (nibbles & 0x0F0F0F0Fu) | ((lo >> 2) & 0x30303030u);
    return convert_float8((uchar8)(as_uchar4(lo & 0x3F3F3F3Fu), as_uchar4(hi)));
}

float16 block_dot(__global const qblock* block, __local const float* bl, __local const float* bs, float16 acc) {
    __global const uchar* blk = block->q;
    __global const uint* s = (__global const uint*)(blk + 4);
    const float2 d = vload_half2(0, (__global const half*)blk);  // d, dmin
    const float8 ds = d.x * six_bit8(s[0], s[2]), dm = d.y * six_bit8(s[1], s[2] >> 4);
    _Pragma("unroll") for (int h = 0; h < 2; ++h) {
        const uint16 w = vload16(0, (__global const uint*)(blk + 16 + 64 * h));
        __local const float* bp = bl + 128 * h;
        float16 low = convert_float16(w & 0xFu) * vload16(0, bp);  // runs 4h and 4h + 2 (lanes 0-7, 8-15)
        float16 high = convert_float16(w & 0xF0u) * vload16(1, bp);  // runs 4h + 1 and 4h + 3
        _Pragma("unroll") for (int t = 2; t < 8; t += 2) {
            low = fma(convert_float16(w & (0xFu << (4 * t))), vload16(t, bp), low);
            high = fma(convert_float16(w & (0xF0u << (4 * t))), vload16(t + 1, bp), high);
        }
        acc = fma((float16)((float8)(h ? ds.s4 : ds.s0), (float8)(h ? ds.s6 : ds.s2)), low, acc);
        acc = fma((float16)((float8)(h ? ds.s5 : ds.s1), (float8)(h ? ds.s7 : ds.s3)), high, acc);
    }
    acc.lo = fma(-dm, vload8(0, bs), acc.lo);
    return acc;
}
#else
// Other types: b in its own order, no sums; each 16-element group dequantized and multiplied in.
void stage_b(__local float* bl, __local float* bs, __global const float* b) {
    for (int g = 0; g < QK / 16; ++g) vstore16(vload16(g, b), g, bl);
}

float16 block_dot(__global const qblock* block, __local const float* bl, __local const float* bs, float16 acc) {
#if defined(A_Q8_0)  // one scale per block: multiplied once into the block's partial sum
    __global const uchar* blk = block->q;
    const float16 p = convert_float16(as_char16(quants16(blk + 2))) * vload16(0, bl);
    return fma(half_at(blk), fma(convert_float16(as_char16(quants16(blk + 18))), vload16(1, bl), p), acc);
#else
    _Pragma("unroll") for (int g = 0; g < QK / 16; ++g) acc = fma(dequant16(block, g), vload16(g, bl), acc);
    return acc;
#endif
}
#endif
#endif
