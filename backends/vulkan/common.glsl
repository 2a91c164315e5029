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
// The same buffers seen as uvec4 / uvec2 (aliased bindings): the VEC4 fast paths for contiguous, 4-aligned operands.
// lavapipe loads and stores one lane at a time, so moving 16 bytes per access is what makes it fast.
layout(std430, binding = 1) buffer DstBuf4 { uvec4 D4[]; };
layout(std430, binding = 1) buffer DstBuf2 { uvec2 D2[]; };
layout(std430, binding = 2) readonly buffer Src0Buf4 { uvec4 S04[]; };
layout(std430, binding = 2) readonly buffer Src0Buf2 { uvec2 S02[]; };
layout(std430, binding = 3) readonly buffer Src1Buf4 { uvec4 S14[]; };

#define T_DST 0
#define T_SRC0 1
#define T_SRC1 2

// Tensor t: words[9t] = offset, [9t+1..4] = ne, [9t+5..8] = nb; offsets and strides in elements.
int off_of(int t) { return P[9 * t]; }
ivec4 ne_of(int t) { return ivec4(P[9 * t + 1], P[9 * t + 2], P[9 * t + 3], P[9 * t + 4]); }
ivec4 nb_of(int t) { return ivec4(P[9 * t + 5], P[9 * t + 6], P[9 * t + 7], P[9 * t + 8]); }
int op_int(int i) { return P[63 + i]; }
float op_float(int i) { return intBitsToFloat(P[63 + i]); }

// Every kernel calls load_params() first and reads P nowhere else inside branches or loops: at top level a read
// with a constant index is one scalar load, inside divergent control flow lavapipe loads it lane by lane.
int off_d, off_0, off_1;
ivec4 ne_d, nb_d, ne_0, nb_0, ne_1, nb_1;
void load_params() {
    off_d = off_of(T_DST); ne_d = ne_of(T_DST); nb_d = nb_of(T_DST);
    off_0 = off_of(T_SRC0); ne_0 = ne_of(T_SRC0); nb_0 = nb_of(T_SRC0);
    off_1 = off_of(T_SRC1); ne_1 = ne_of(T_SRC1); nb_1 = nb_of(T_SRC1);
}

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
// First flat element of this thread's run of PER consecutive elements (VEC4 kernels: PER is 4, one uvec4).
int first_elem() { return group_id() * (WG * PER) + int(gl_LocalInvocationID.x) * PER; }

// ---- f16, done by hand so results are exact on every implementation; selects, not branches (SIMD lanes) ------
float f16_to_f32(uint h) {
    uint sign = (h & 0x8000u) << 16;
    uint e = (h >> 10) & 0x1Fu;
    uint m = h & 0x3FFu;
    uint bits = mix(((e + 112u) << 23) | (m << 13), 0x7F800000u | (m << 13), e == 0x1Fu);
    float sub = float(m) * 5.9604644775390625e-8; // subnormal: m * 2^-24, exact
    return e == 0u ? uintBitsToFloat(sign | floatBitsToUint(sub)) : uintBitsToFloat(sign | bits);
}

// Round to nearest even, with overflow to inf, subnormals and NaN (kept quiet).
uint f32_to_f16(float f) {
    uint x = floatBitsToUint(f);
    uint ax = x & 0x7FFFFFFFu;
    uint m = ax - 0x38000000u; // normal f16 (>= 2^-14): rebias the exponent, round 13 bits away
    uint normal = (m + 0x0FFFu + ((m >> 13) & 1u)) >> 13;
    // Below 2^-14: adding 0.5 (ulp 2^-24) makes the (correctly rounded, so nearest-even) adder round |f| to whole
    // f16 subnormal steps; the low mantissa bits are then the f16 bits (0x400 = the smallest normal, also right).
    precise float aligned = uintBitsToFloat(ax) + 0.5;
    uint h = ax < 0x38800000u ? floatBitsToUint(aligned) - 0x3F000000u : normal;
    h = ax >= 0x477FF000u ? 0x7C00u : h;                             // >= 65520 rounds to inf
    h = ax > 0x7F800000u ? (0x7E00u | ((ax >> 13) & 0x3FFu)) : h;    // NaN
    return ((x >> 16) & 0x8000u) | h;
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
