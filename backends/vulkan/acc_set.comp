#version 450
// ACC (dst = a, block += b) and SET (dst = a, block = b; raw 32-bit words, so f32 and i32 alike).
// Op words: nb1, nb2, nb3, offset (elements of a) place b's block inside a. dst is contiguous like a, or is a itself.
// One thread per PER consecutive dst elements e. o = e - offset is split by nb3, nb2, nb1 once per thread and then
// stepped with carries, no division (lavapipe executes both sides of a branch, so a conditional split costs always).
// IN_PLACE_BLOCK (dst is a itself, default impl): only b's block changes, so one thread per PER consecutive
// elements of b writes its elements of the block and nothing else is touched.
#include "common.glsl"

int bnb1, bnb2, bnb3;
ivec4 bi; // block coordinates (i0, i1, i2, i3) of o
ivec2 br; // o's remainders within its nb2 and nb3 blocks, for the carries

void block_split(int o) {
    bi.w = o / bnb3; br.y = o - bi.w * bnb3;
    bi.z = br.y / bnb2; br.x = br.y - bi.z * bnb2;
    bi.y = br.x / bnb1; bi.x = br.x - bi.y * bnb1;
}

void block_step() { // o -> o + 1
    ++bi.x; ++br.x; ++br.y;
    if (bi.x == bnb1) { bi.x = 0; ++bi.y; }
    if (br.x == bnb2) { br.x = 0; bi.xy = ivec2(0); ++bi.z; }
    if (br.y == bnb3) { br = ivec2(0); bi.xyz = ivec3(0); ++bi.w; }
}

// The new word of a's element at block offset o (a's word is v). `step`: advance the split state from o - 1.
uint combine(uint v, int o, bool step) {
    if (step && o > 0) block_step(); // at o == 0 the state already holds the split of 0
    bool inside = o >= 0 && all(lessThan(bi, ne_1));
    uint w = inside ? S1[at(bi, nb_1, off_1)] : 0u;
#if defined(OP_ACC)
    return inside ? floatBitsToUint(uintBitsToFloat(v) + uintBitsToFloat(w)) : v;
#else
    return inside ? w : v;
#endif
}

#if defined(IN_PLACE_BLOCK)
void main() {
    load_params();
    ivec4 block_nb = ivec4(1, op_int(0), op_int(1), op_int(2));
    int block_off = off_d + op_int(3);
    int n = nelem(ne_1);
    int f = first_elem();
    if (f >= n) return;
    ivec4 i = unflatten(f, ne_1);
    int end = min(f + PER, n);
    for (int e = f; e < end; ++e) {
        int o = at(i, block_nb, block_off);
        uint w = S1[at(i, nb_1, off_1)];
#if defined(OP_ACC)
        D[o] = floatBitsToUint(uintBitsToFloat(D[o]) + uintBitsToFloat(w));
#else
        D[o] = w;
#endif
        step4(i, ne_1);
    }
}
#else
void main() {
    load_params();
    bnb1 = op_int(0); bnb2 = op_int(1); bnb3 = op_int(2);
    int boff = op_int(3);
    int n = nelem(ne_d);
    int f = first_elem();
    if (f >= n) return;
    int o = f - boff;
    block_split(max(o, 0));
#if defined(VEC4) // dst and a contiguous, offsets multiples of 4
    if (f + 4 <= n) {
        uvec4 v = S04[(off_0 + f) >> 2]; // in place, this is dst's own chunk
        // Components written out: a loop over v[k] becomes per-lane memory traffic on lavapipe.
        v.x = combine(v.x, o, false);
        v.y = combine(v.y, o + 1, true);
        v.z = combine(v.z, o + 2, true);
        v.w = combine(v.w, o + 3, true);
        D4[(off_d + f) >> 2] = v;
    } else {
        for (int e = f; e < n; ++e) D[off_d + e] = combine(S0[off_0 + e], e - boff, e > f);
    }
#else
    ivec4 i = unflatten(f, ne_d);
    int end = min(f + PER, n);
    for (int e = f; e < end; ++e) { // a is contiguous: its flat index e is its element offset
        D[at(i, nb_d, off_d)] = combine(S0[at(i, nb_0, off_0)], e - boff, e > f);
        step4(i, ne_d);
    }
#endif
}
#endif
