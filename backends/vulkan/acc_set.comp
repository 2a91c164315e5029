#version 450
// ACC (dst = a, block += b) and SET (dst = a, block = b; raw 32-bit words, so f32 and i32 alike).
// Op words: nb1, nb2, nb3, offset (elements of a) place b's block inside a. dst is contiguous like a, or is a itself.
// BROKEN_NB3 reproduces llama.cpp Vulkan bug #19426 on purpose (variant "broken_acc_nb3"): the offset is split
// with nb2/nb1 only, i3 is never bounded and b is read as if contiguous.
#include "common.glsl"

void main() {
    ivec4 ne = ne_of(T_DST);
    int n = nelem(ne);
    int f = first_elem();
    if (f >= n) return;
    ivec4 nbd = nb_of(T_DST), nba = nb_of(T_SRC0), neb = ne_of(T_SRC1), nbb = nb_of(T_SRC1);
    int od = off_of(T_DST), oa = off_of(T_SRC0), ob = off_of(T_SRC1);
    int bnb1 = op_int(0), bnb2 = op_int(1), bnb3 = op_int(2), boff = op_int(3);
    ivec4 i = unflatten(f, ne);
    int end = min(f + PER, n);
    for (int e = f; e < end; ++e) {
        uint v = S0[at(i, nba, oa)]; // in place, this is dst's own element
        int o = e - boff;            // a is contiguous: its flat index is its element offset
        if (o >= 0) {
#if defined(BROKEN_NB3)
            int i2 = o / bnb2, r = o % bnb2;
            int i1 = r / bnb1, i0 = r % bnb1;
            if (i0 < neb.x && i1 < neb.y && i2 < neb.z) {
                uint w = S1[ob + i0 + neb.x * (i1 + neb.y * i2)];
#else
            int i3 = o / bnb3, r = o % bnb3;
            int i2 = r / bnb2; r %= bnb2;
            int i1 = r / bnb1, i0 = r % bnb1;
            if (i0 < neb.x && i1 < neb.y && i2 < neb.z && i3 < neb.w) {
                uint w = S1[at(ivec4(i0, i1, i2, i3), nbb, ob)];
#endif
#if defined(OP_ACC)
                v = floatBitsToUint(uintBitsToFloat(v) + uintBitsToFloat(w));
#else
                v = w;
#endif
            }
        }
        D[at(i, nbd, od)] = v;
        step4(i, ne);
    }
}
