#version 450
// GET_ROWS: dst[i0, k, i1, i2] = a[i0, ids[k, i1, i2], i1, i2]; a f32 (or f16 with SRC_F16), ids i32, dst f32.
// A thread takes PER consecutive dst elements and loads the row index once per dst row it touches.
// VEC4: dst contiguous and 4-aligned, a f32 with contiguous rows, a.ne0, its strides and offset multiples of 4:
// a thread's 4 elements lie in one row of a (16-byte load and store).
// Q_<TYPE> (a quantized table, quants.glsl): a thread dequantizes 32 consecutive elements of one row (a piece of a
// block) and stores them, 16 bytes at a time with DST_VEC4 (dst contiguous and 4-aligned).
#include "common.glsl"
#include "quants.glsl"

#if defined(SRC_F16)
#define LOAD_A(i) LOAD_F16(S0, i)
#else
#define LOAD_A(i) LOAD_F32(S0, i)
#endif

#if defined(QK)
void main() {
    load_params();
    int n = nelem(ne_d) / 32;
    int f = group_id() * WG + int(gl_LocalInvocationID.x);
    if (f >= n) return;
    ivec4 i = unflatten(f * 32, ne_d); // ne_d.x is whole blocks, so the 32 elements share a row
    int row = int(S1[at(ivec4(i.y, i.z, i.w, 0), nb_1, off_1)]);
    int block = at(ivec4(i.x / QK, row, i.z, i.w), nb_0, off_0); // offsets and strides in blocks
    vec4 v[8];
    dq32(block * QBYTES, (i.x % QK) / 32, v);
#if defined(DST_VEC4)
    for (int k = 0; k < 8; ++k) D4[((off_d + f * 32) >> 2) + k] = floatBitsToUint(v[k]);
#else
    int d = at(i, nb_d, off_d);
    for (int k = 0; k < 32; ++k) store_f32(d + k * nb_d.x, v[k >> 2][k & 3]);
#endif
}
#else
void main() {
    load_params();
    int n = nelem(ne_d);
    int f = first_elem();
    if (f >= n) return;
    ivec4 i = unflatten(f, ne_d);
#if defined(VEC4)
    int row = int(S1[at(ivec4(i.y, i.z, i.w, 0), nb_1, off_1)]);
    D4[(off_d + f) >> 2] = S04[at(ivec4(i.x, row, i.z, i.w), nb_0, off_0) >> 2];
#else
    int end = min(f + PER, n);
    int row = int(S1[at(ivec4(i.y, i.z, i.w, 0), nb_1, off_1)]);
    for (int k = f; k < end; ++k) {
        store_f32(at(i, nb_d, off_d), LOAD_A(at(ivec4(i.x, row, i.z, i.w), nb_0, off_0)));
        step4(i, ne_d);
        if (i.x == 0 && k + 1 < end) row = int(S1[at(ivec4(i.y, i.z, i.w, 0), nb_1, off_1)]); // a new dst row
    }
#endif
}
#endif
