// Shared by every kernel: the parameter block (backends/base.py KERNEL ABI), the buffer bindings, tensor indexing
// and exact f16 conversions. Buffers are uint arrays reinterpreted per element type (no optional Vulkan features).
#ifndef WG
#define WG 256
#endif
#ifndef PER
#define PER 4 // consecutive elements per thread in element-wise kernels: one 4-D index decomposition per run
#endif
layout(local_size_x = WG) in;

// Binding order is fixed for every kernel: params, dst, src0, src1 (the host binds src0 again when an op has one
// source). dst and src0 may be the same buffer (in-place ACC/SET): no restrict, so the compiler assumes aliasing.
layout(std430, binding = 0) readonly buffer ParamBuf { int P[]; };
layout(std430, binding = 1) buffer DstBuf { uint D[]; };
layout(std430, binding = 2) readonly buffer Src0Buf { uint S0[]; };
layout(std430, binding = 3) readonly buffer Src1Buf { uint S1[]; };

#define T_DST 0
#define T_SRC0 1
#define T_SRC1 2

// Tensor t: words[9t] = offset, [9t+1..4] = ne, [9t+5..8] = nb; offsets and strides in elements.
int off_of(int t) { return P[9 * t]; }
ivec4 ne_of(int t) { return ivec4(P[9 * t + 1], P[9 * t + 2], P[9 * t + 3], P[9 * t + 4]); }
ivec4 nb_of(int t) { return ivec4(P[9 * t + 5], P[9 * t + 6], P[9 * t + 7], P[9 * t + 8]); }
int op_int(int i) { return P[36 + i]; }
float op_float(int i) { return intBitsToFloat(P[36 + i]); }

int nelem(ivec4 ne) { return ne.x * ne.y * ne.z * ne.w; }
int at(ivec4 i, ivec4 nb, int off) { return off + i.x * nb.x + i.y * nb.y + i.z * nb.z + i.w * nb.w; }

ivec4 unflatten(int f, ivec4 ne) {
    ivec4 i;
    i.x = f % ne.x; f /= ne.x;
    i.y = f % ne.y; f /= ne.y;
    i.z = f % ne.z;
    i.w = f / ne.z;
    return i;
}

// Next 4-D index in flat order (ne0 fastest), without any division.
void step4(inout ivec4 i, ivec4 ne) {
    if (++i.x == ne.x) {
        i.x = 0;
        if (++i.y == ne.y) {
            i.y = 0;
            if (++i.z == ne.z) { i.z = 0; ++i.w; }
        }
    }
}

// Workgroups are dispatched as a 2-D grid (x <= 65535); this is the flat workgroup number.
int group_id() { return int(gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x); }
// First flat element of this thread's run of PER consecutive elements.
int first_elem() { return group_id() * (WG * PER) + int(gl_LocalInvocationID.x) * PER; }

// ---- f16, done by hand so results are exact on every implementation ----------------------------------------------
float f16_to_f32(uint h) {
    uint sign = (h & 0x8000u) << 16;
    uint e = (h >> 10) & 0x1Fu;
    uint m = h & 0x3FFu;
    if (e == 0x1Fu) return uintBitsToFloat(sign | 0x7F800000u | (m << 13));
    if (e != 0u) return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
    float v = float(m) * 5.9604644775390625e-8; // subnormal: m * 2^-24, exact
    return sign != 0u ? -v : v;
}

// Round to nearest even, with overflow to inf, subnormals and NaN (kept quiet).
uint f32_to_f16(float f) {
    uint x = floatBitsToUint(f);
    uint sign = (x >> 16) & 0x8000u;
    uint ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00u | ((ax >> 13) & 0x3FFu);
    if (ax >= 0x477FF000u) return sign | 0x7C00u; // >= 65520 rounds to inf
    if (ax >= 0x38800000u) {                       // normal f16 (>= 2^-14): rebias exponent, round 13 bits away
        uint m = ax - 0x38000000u;
        return sign | ((m + 0x0FFFu + ((m >> 13) & 1u)) >> 13);
    }
    if (ax <= 0x33000000u) return sign; // <= 2^-25 rounds (ties to even) to zero
    uint e = ax >> 23;
    uint mant = (ax & 0x7FFFFFu) | 0x800000u;
    uint shift = 126u - e; // value in units of 2^-24 is mant >> shift
    uint r = mant >> shift;
    uint rem = mant & ((1u << shift) - 1u);
    uint half_ulp = 1u << (shift - 1u);
    if (rem > half_ulp || (rem == half_ulp && (r & 1u) != 0u)) r += 1u;
    return sign | r;
}

#define LOAD_F32(BUF, i) uintBitsToFloat(BUF[i])
#define LOAD_F16(BUF, i) f16_to_f32((BUF[(i) >> 1] >> (uint((i) & 1) * 16u)) & 0xFFFFu)

void store_f32(int i, float v) { D[i] = floatBitsToUint(v); }

// Two f16 share a word and a neighbouring thread may own the other half: clear ours, then OR it in.
void store_f16_half(int i, uint h) {
    uint sh = uint(i & 1) * 16u;
    atomicAnd(D[i >> 1], ~(0xFFFFu << sh));
    atomicOr(D[i >> 1], h << sh);
}
