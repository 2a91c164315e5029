// ggml's quantized weight types, read in place from src0 (S0) and dequantized in registers. The host selects one type
// with a Q_<TYPE> define (Q_Q4_K, ...); this file then defines QK (elements per block), QBYTES (bytes per block) and
// dq32(b, s, v): elements 32s .. 32s + 31 of the block that starts at byte b, as ggml's dequantize_row_* computes
// them. Layouts are ggml-common.h's block_* structs (reference/quants.py). A block starts at byte QBYTES * (block
// index) - even, and a multiple of 4 only where QBYTES is - so the words are read as uints and split with shifts.
// Include after common.glsl.

#if defined(Q_Q8_0)
#define QK 32
#define QBYTES 34
#elif defined(Q_Q4_0)
#define QK 32
#define QBYTES 18
#elif defined(Q_Q4_1)
#define QK 32
#define QBYTES 20
#elif defined(Q_Q5_0)
#define QK 32
#define QBYTES 22
#elif defined(Q_Q5_1)
#define QK 32
#define QBYTES 24
#elif defined(Q_Q2_K)
#define QK 256
#define QBYTES 84
#elif defined(Q_Q3_K)
#define QK 256
#define QBYTES 110
#elif defined(Q_Q4_K)
#define QK 256
#define QBYTES 144
#elif defined(Q_Q5_K)
#define QK 256
#define QBYTES 176
#elif defined(Q_Q6_K)
#define QK 256
#define QBYTES 210
#endif

#if defined(QK)
#define QSUBS (QK / 32) // dq32 pieces per block

// The 16 bits at even byte b.
uint qbits16(int b) { return (S0[b >> 2] >> uint((b & 2) * 8)) & 0xFFFFu; }
float qhalf(int b) { return f16_to_f32(qbits16(b)); }

// The 4 bytes at even byte b: one load where blocks are word-aligned, else two (the second index clamped: when b is
// 4-aligned it is not used, and may lie past the buffer).
uint qword(int b) {
    int w = b >> 2;
#if QBYTES % 4 == 0
    return S0[w];
#else
    uint lo = S0[w], hi = S0[min(w + 1, int(S0.length()) - 1)];
    return (b & 2) != 0 ? (lo >> 16) | (hi << 16) : lo;
#endif
}

// The 16 bytes at even byte b: one 16-byte load where the field is 16-aligned in 16-aligned blocks (Q4_K, Q5_K
// quants), else word loads (one more, funnel-shifted, where blocks are only 2-aligned).
uvec4 qwords4(int b) {
    int w = b >> 2;
#if QBYTES % 16 == 0
    return S04[w >> 2];
#elif QBYTES % 4 == 0
    return uvec4(S0[w], S0[w + 1], S0[w + 2], S0[w + 3]);
#else
    uvec4 lo = uvec4(S0[w], S0[w + 1], S0[w + 2], S0[w + 3]);
    uvec4 hi = uvec4(lo.yzw, S0[min(w + 4, int(S0.length()) - 1)]);
    return (b & 2) != 0 ? (lo >> 16) | (hi << 16) : lo;
#endif
}

// The 4 bytes of w, each shifted right by `shift` and masked: 4 consecutive quants of one kind.
vec4 bits4(uint w, uint shift, uint mask) { return vec4((uvec4(w) >> (uvec4(0u, 8u, 16u, 24u) + shift)) & mask); }
// The 4 bytes of w as int8.
vec4 sbytes4(uint w) { return vec4(ivec4(uvec4(w) << uvec4(24u, 16u, 8u, 0u)) >> 24); }
uint byte_of(uvec3 w, int i) { return (w[i >> 2] >> uint((i & 3) * 8)) & 0xFFu; }

#if defined(Q_Q4_K) || defined(Q_Q5_K)
// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block s from the 12 scale bytes at byte b + 4.
void scale_min_k4(int b, int s, out float sc, out float m) {
    uvec3 q = uvec3(S0[(b >> 2) + 1], S0[(b >> 2) + 2], S0[(b >> 2) + 3]);
    uint lo = s < 4 ? byte_of(q, s) & 63u : (byte_of(q, s + 4) & 0xFu) | ((byte_of(q, s - 4) >> 6) << 4);
    uint hi = s < 4 ? byte_of(q, s + 4) & 63u : (byte_of(q, s + 4) >> 4) | ((byte_of(q, s) >> 6) << 4);
    sc = float(lo);
    m = float(hi);
}
#endif

void dq32(int b, int s, out vec4 v[8]) {
#if defined(Q_Q8_0) // d, qs[32] int8
    float d = qhalf(b);
    uvec4 q0 = qwords4(b + 2), q1 = qwords4(b + 18);
    for (int i = 0; i < 4; ++i) {
        v[i] = sbytes4(q0[i]) * d;
        v[i + 4] = sbytes4(q1[i]) * d;
    }
#elif defined(Q_Q4_0) || defined(Q_Q4_1) // d, (m,) qs[16]: element l low nibble of qs[l], element l + 16 high
#if defined(Q_Q4_0)
    float d = qhalf(b), m = -8.0 * d;
    uvec4 q = qwords4(b + 2);
#else
    float d = qhalf(b), m = qhalf(b + 2);
    uvec4 q = qwords4(b + 4);
#endif
    for (int i = 0; i < 4; ++i) {
        v[i] = bits4(q[i], 0u, 0xFu) * d + m;
        v[i + 4] = bits4(q[i], 4u, 0xFu) * d + m;
    }
#elif defined(Q_Q5_0) || defined(Q_Q5_1) // d, (m,) qh (bit l: 5th bit of element l), qs[16] as Q4
#if defined(Q_Q5_0)
    float d = qhalf(b), m = -16.0 * d;
    uint qh = qword(b + 2);
    uvec4 q = qwords4(b + 6);
#else
    float d = qhalf(b), m = qhalf(b + 2);
    uint qh = qword(b + 4);
    uvec4 q = qwords4(b + 8);
#endif
    for (int i = 0; i < 4; ++i) {
        uvec4 l = uvec4(4 * i) + uvec4(0u, 1u, 2u, 3u);
        v[i] = (bits4(q[i], 0u, 0xFu) + vec4(((uvec4(qh) >> l) & 1u) << 4)) * d + m;
        v[i + 4] = (bits4(q[i], 4u, 0xFu) + vec4(((uvec4(qh) >> (l + 16u)) & 1u) << 4)) * d + m;
    }
#elif defined(Q_Q2_K) // scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin
    int n = s >> 2, j = s & 3; // piece s: bits 2j of qs[32n + l], scales 2s and 2s + 1 (l < 16, l >= 16)
    float d = qhalf(b + 80), dmin = qhalf(b + 82);
    uint sc = qbits16(b + 2 * s);
    uvec4 q0 = qwords4(b + 16 + 32 * n), q1 = qwords4(b + 32 + 32 * n);
    float dl0 = d * float(sc & 0xFu), ml0 = dmin * float((sc >> 4) & 0xFu);
    float dl1 = d * float((sc >> 8) & 0xFu), ml1 = dmin * float(sc >> 12);
    for (int i = 0; i < 4; ++i) {
        v[i] = dl0 * bits4(q0[i], uint(2 * j), 3u) - ml0;
        v[i + 4] = dl1 * bits4(q1[i], uint(2 * j), 3u) - ml1;
    }
#elif defined(Q_Q3_K) // hmask[32], qs[64], scales[12] (16 6-bit scales, biased by 32), d
    int n = s >> 2, j = s & 3; // piece s: bits 2j of qs[32n + l], high bit 4n + j of hmask[l], scales 2s, 2s + 1
    float d = qhalf(b + 108);
    uint lo = qbits16(b + 96 + (2 * s & 7)) >> uint(4 * n);     // scale bits 0-3: nibble n of bytes 2s % 8, +1
    uint hi = qbits16(b + 104 + 2 * (s & 1)) >> uint(2 * (s >> 1)); // bits 4-5: 2 bits of bytes 8 + 2s % 4, +1
    float dl0 = d * float(int((lo & 0xFu) | ((hi & 3u) << 4)) - 32);
    float dl1 = d * float(int(((lo >> 8) & 0xFu) | (((hi >> 8) & 3u) << 4)) - 32);
    uvec4 q0 = qwords4(b + 32 + 32 * n), q1 = qwords4(b + 48 + 32 * n);
    uvec4 h0 = qwords4(b), h1 = qwords4(b + 16);
    for (int i = 0; i < 4; ++i) {
        v[i] = dl0 * (bits4(q0[i], uint(2 * j), 3u) - 4.0 + 4.0 * bits4(h0[i], uint(4 * n + j), 1u));
        v[i + 4] = dl1 * (bits4(q1[i], uint(2 * j), 3u) - 4.0 + 4.0 * bits4(h1[i], uint(4 * n + j), 1u));
    }
#elif defined(Q_Q4_K) || defined(Q_Q5_K) // d, dmin, scales[12], (qh[32],) qs[128]
    int p = s >> 1; // piece s: nibble s & 1 of qs[32p + l] (Q5_K: + 16 * bit s of qh[l]), scale and min s
    float d = qhalf(b), dmin = qhalf(b + 2), sc, mn;
    scale_min_k4(b, s, sc, mn);
    float dl = d * sc, ml = dmin * mn;
#if defined(Q_Q4_K)
    uvec4 q0 = qwords4(b + 16 + 32 * p), q1 = qwords4(b + 32 + 32 * p);
    for (int i = 0; i < 4; ++i) {
        v[i] = dl * bits4(q0[i], uint(4 * (s & 1)), 0xFu) - ml;
        v[i + 4] = dl * bits4(q1[i], uint(4 * (s & 1)), 0xFu) - ml;
    }
#else
    uvec4 q0 = qwords4(b + 48 + 32 * p), q1 = qwords4(b + 64 + 32 * p);
    uvec4 h0 = qwords4(b + 16), h1 = qwords4(b + 32);
    for (int i = 0; i < 4; ++i) {
        v[i] = dl * (bits4(q0[i], uint(4 * (s & 1)), 0xFu) + 16.0 * bits4(h0[i], uint(s), 1u)) - ml;
        v[i + 4] = dl * (bits4(q1[i], uint(4 * (s & 1)), 0xFu) + 16.0 * bits4(h1[i], uint(s), 1u)) - ml;
    }
#endif
#elif defined(Q_Q6_K) // ql[128], qh[64], scales[16] int8, d
    int n = s >> 2, t = s & 3; // piece s: nibble t >> 1 of ql[64n + 32(t & 1) + l], bits 2t of qh[32n + l]
    float d = qhalf(b + 208);
    uint sc = qbits16(b + 192 + 2 * s); // int8 scales 2s (l < 16) and 2s + 1
    float dl0 = d * float(int(sc << 24) >> 24), dl1 = d * float(int(sc << 16) >> 24);
    int ql = b + 64 * n + 32 * (t & 1);
    uvec4 q0 = qwords4(ql), q1 = qwords4(ql + 16);
    uvec4 h0 = qwords4(b + 128 + 32 * n), h1 = qwords4(b + 144 + 32 * n);
    for (int i = 0; i < 4; ++i) {
        v[i] = dl0 * (bits4(q0[i], uint(4 * (t >> 1)), 0xFu) + 16.0 * bits4(h0[i], uint(2 * t), 3u) - 32.0);
        v[i + 4] = dl1 * (bits4(q1[i], uint(4 * (t >> 1)), 0xFu) + 16.0 * bits4(h1[i], uint(2 * t), 3u) - 32.0);
    }
#endif
}
#endif
