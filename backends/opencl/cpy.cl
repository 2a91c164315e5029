// CPY and CONT: f32 <-> f16 conversion or a same-type copy, in flat logical element order. SRC_F16 / DST_F16 pick
// the types; a same-type copy moves raw bits (uint / ushort). Without FLAT, src and dst share ne and the row-chunk
// grid indexes both; with FLAT (different ne) the flat index of each dst element is split by src ne.
// f16 -> f32 is vload_half (exact, and PoCL provides it without the fp16 extension). f32 -> f16 is integer bit
// manipulation: exact (round to nearest even, overflow to inf, subnormals; checked against NumPy on 35M values
// including every boundary) and it vectorises: PoCL's vstore_half_rte took 2x the CPU time.

// f32 -> f16 bits, round to nearest even (F. Giesen's float_to_half_fast3_rtne, with an integer subnormal path so
// it does not depend on the FPU keeping denormals).
inline ushort float_to_half_bits(float f) {
    const uint x = as_uint(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    uint h;
    if (ax >= 0x47800000u) {  // >= 65536 (or inf, nan): inf, or a quiet nan
        h = ax > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (ax < 0x38800000u) {  // below 2^-14: f16 subnormal or zero
        const int e = (int)(ax >> 23), shift = 126 - e;  // value / 2^-24 = mantissa(with hidden bit) >> shift
        if (shift > 24) {
            h = 0u;  // below 2^-25: rounds to zero
        } else {
            const uint m = (ax & 0x7fffffu) | 0x800000u, q = m >> shift, rem = m & ((1u << shift) - 1u);
            const uint halfway = 1u << (shift - 1);
            h = q + (rem > halfway || (rem == halfway && (q & 1u)));
        }
    } else {  // normal (65520 and up round into the inf encoding, as they must)
        h = (ax + 0xc8000fffu + ((ax >> 13) & 1u)) >> 13;
    }
    return (ushort)(sign | h);
}

// MOVE(dst pointer, dst index, src pointer, src index)
#if defined(SRC_F16) && defined(DST_F16)
typedef ushort ST;
typedef ushort DT;
#define MOVE(d, j, s, i) (d[j] = s[i])
#elif defined(SRC_F16)
typedef half ST;
typedef float DT;
#define MOVE(d, j, s, i) (d[j] = vload_half(i, s))
#elif defined(DST_F16)
typedef float ST;
typedef ushort DT;
#define MOVE(d, j, s, i) (d[j] = float_to_half_bits(s[i]))
#else
typedef uint ST;
typedef uint DT;
#define MOVE(d, j, s, i) (d[j] = s[i])
#endif

#ifdef FLAT
// The src element at flat (logical, row-major over src ne) index f.
inline int src_at(const Params P, int f) {
    const int an0 = NE(T_A, 0), an1 = NE(T_A, 1), an2 = NE(T_A, 2);
    const int j0 = f % an0;
    f /= an0;
    const int j1 = f % an1;
    f /= an1;
    return OFF(T_A) + j0 * NB(T_A, 0) + j1 * NB(T_A, 1) + (f % an2) * NB(T_A, 2) + (f / an2) * NB(T_A, 3);
}
#define FLAT_ROW (I1 + NE(T_DST, 1) * (int)get_global_id(2))  // flat index / ne0 of this dst row
#endif

__kernel void cpy(__global DT* d, __global const ST* a, const Params P) {
    if (!ROW_IN_GRID) return;
    const int sd = NB(T_DST, 0), sa = NB(T_A, 0), end = CHUNK_END;
    __global DT* dr = d + ROW(T_DST);
#ifdef FLAT
    const int base = FLAT_ROW * NE(T_DST, 0);
    for (int i = CHUNK_BEGIN; i < end; ++i) MOVE(dr, i * sd, a, src_at(P, base + i));
#else
    __global const ST* ar = a + ROW(T_A);
    for (int i = CHUNK_BEGIN; i < end; ++i) MOVE(dr, i * sd, ar, i * sa);
#endif
}

#ifdef QK
// CPY f32 -> Q8_0 / Q4_0 (host define DST_Q8_0 / DST_Q4_0; dst is quants.cl's blocks, CHUNK whole blocks): each work
// item encodes the blocks of its run of a dst row as ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref (and
// gguf.quants) do, bit for bit: float arithmetic in their order, no fma contraction, divisions correctly rounded
// (the host builds with -cl-fp32-correctly-rounded-divide-sqrt), the scale d stored as half (round to nearest even).
void quantize_block(const float* x, __global uchar* q) {
#pragma OPENCL FP_CONTRACT OFF
    float amax = 0.0f;
#ifdef DST_Q8_0
    for (int j = 0; j < QK; ++j) amax = fmax(amax, fabs(x[j]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; ++j) q[2 + j] = (uchar)(char)round(x[j] * id);  // round: half away from zero, as roundf
#else
    float max = 0.0f;  // the element of largest magnitude, sign kept (the first of equals)
    for (int j = 0; j < QK; ++j)
        if (amax < fabs(x[j])) {
            amax = fabs(x[j]);
            max = x[j];
        }
    const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK / 2; ++j)  // element j in the low nibble of byte j, element j + 16 in the high one
        q[2 + j] = (uchar)min(15.0f, trunc(x[j] * id + 8.5f))
                   | (uchar)min(15.0f, trunc(x[j + QK / 2] * id + 8.5f)) << 4;
#endif
    const ushort h = float_to_half_bits(d);
    q[0] = h & 0xFF;
    q[1] = h >> 8;
}

__kernel void cpy_quantize(__global qblock* d, __global const float* a, const Params P) {
    if (!ROW_IN_GRID) return;
    const int end = CHUNK_END;
    __global qblock* dr = d + ROW(T_DST);
#ifdef FLAT
    const int base = FLAT_ROW * NE(T_DST, 0);
#else
    __global const float* ar = a + ROW(T_A);
#endif
    float x[QK];
    for (int i = CHUNK_BEGIN; i < end; i += QK) {
#ifdef FLAT
        for (int j = 0; j < QK; ++j) x[j] = a[src_at(P, base + i + j)];
#else
        for (int j = 0; j < QK; ++j) x[j] = ar[(i + j) * NB(T_A, 0)];
#endif
        quantize_block(x, dr[i / QK * NB(T_DST, 0)].q);
    }
}
#endif
