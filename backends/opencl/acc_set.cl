// ACC (f32) and SET (32-bit words, so f32 and i32 alike) on contiguous a, dst contiguous too: a fresh tensor (acc_set
// writes every dst element), or a itself (in place: acc_set_block at the end writes b's block alone). Per dst element
// e of acc_set: value = a[e]; if o = e - offset
// lies in b's block (strides nb1, nb2, nb3 in elements; the host guarantees they nest) b's element is added (ACC)
// or replaces the value (SET), b read through its own strides. Each work item walks a run of CHUNK consecutive
// elements: it splits its first o by nb3, nb2, nb1 once and then moves through stretches of one (i1, i2, i3) with
// carries, so there is no per-element division.
#ifdef SET
typedef uint T;
#define COMBINE(v, x) (x)
#else
typedef float T;
#define COMBINE(v, x) ((v) + (x))
#endif

__kernel void acc_set(__global T* d, __global const T* a, __global const T* b, const Params P) {
#define A_AT(e) a[OFF(T_A) + (e)]
    const int n = NE(T_DST, 0) * NE(T_DST, 1) * NE(T_DST, 2) * NE(T_DST, 3);
    const int nb1 = WORD(0), nb2 = WORD(1), nb3 = WORD(2), offset = WORD(3);
    const int neb0 = NE(T_B, 0), neb1 = NE(T_B, 1), neb2 = NE(T_B, 2), neb3 = NE(T_B, 3);
    const int begin = (int)get_global_id(0) * CHUNK, end = min(n, begin + CHUNK);
    __global T* dd = d + OFF(T_DST);
    __global const T* bb = b + OFF(T_B);
    int e = begin;
    for (; e < end && e < offset; ++e) dd[e] = A_AT(e);  // before the block
    e = max(e, offset);
    if (e >= end || neb0 == 0 || neb1 == 0 || neb2 == 0 || neb3 == 0) {  // nothing of b here (an empty b has 0 strides)
        for (; e < end; ++e) dd[e] = A_AT(e);
        return;
    }
    const int sb0 = NB(T_B, 0), sb1 = NB(T_B, 1), sb2 = NB(T_B, 2), sb3 = NB(T_B, 3);
    // o = i3*nb3 + r3, r3 = i2*nb2 + r2, r2 = i1*nb1 + i0
    const int o = e - offset;
    int i3 = o / nb3, r3 = o - i3 * nb3;
    int i2 = r3 / nb2, r2 = r3 - i2 * nb2;
    int i1 = r2 / nb1, i0 = r2 - i1 * nb1;
    while (e < end) {  // one stretch of constant (i1, i2, i3) at a time: two plain loops
        const int len = min(min(nb1 - i0, nb2 - r2), min(nb3 - r3, end - e));
        const int n_in = i1 < neb1 && i2 < neb2 && i3 < neb3 ? clamp(neb0 - i0, 0, len) : 0;
        __global const T* brow = bb + i0 * sb0 + i1 * sb1 + i2 * sb2 + i3 * sb3;
        for (int k = 0; k < n_in; ++k) dd[e + k] = COMBINE(A_AT(e + k), brow[k * sb0]);
        for (int k = n_in; k < len; ++k) dd[e + k] = A_AT(e + k);
        e += len, i0 += len, r2 += len, r3 += len;
        if (r3 == nb3) {
            ++i3, r3 = r2 = i2 = i1 = i0 = 0;
        } else if (r2 == nb2) {
            ++i2, r2 = i1 = i0 = 0;
        } else if (i0 == nb1) {
            ++i1, i0 = 0;
        }
    }
}

// In place only b's block changes, so this entry walks b instead of dst: one work item per run of CHUNK elements of
// b in flat order (ne0 fastest), index split once and then stepped with carries.
__kernel void acc_set_block(__global T* d, __global const T* b, const Params P) {
    const int nb1 = WORD(0), nb2 = WORD(1), nb3 = WORD(2), offset = WORD(3);
    const int ne0 = NE(T_B, 0), ne1 = NE(T_B, 1), ne2 = NE(T_B, 2);
    const int sb0 = NB(T_B, 0), sb1 = NB(T_B, 1), sb2 = NB(T_B, 2), sb3 = NB(T_B, 3);
    const int n = ne0 * ne1 * ne2 * NE(T_B, 3);
    const int begin = (int)get_global_id(0) * CHUNK, end = min(n, begin + CHUNK);
    if (begin >= end) return;
    int i0 = begin % ne0, rest = begin / ne0;
    int i1 = rest % ne1;
    rest /= ne1;
    int i2 = rest % ne2, i3 = rest / ne2;
    __global T* block = d + OFF(T_DST) + offset;
    __global const T* bb = b + OFF(T_B);
    for (int e = begin; e < end; ++e) {
        const int o = i0 + i1 * nb1 + i2 * nb2 + i3 * nb3;
        block[o] = COMBINE(block[o], bb[i0 * sb0 + i1 * sb1 + i2 * sb2 + i3 * sb3]);
        if (++i0 == ne0) {
            i0 = 0;
            if (++i1 == ne1) {
                i1 = 0;
                if (++i2 == ne2) i2 = 0, ++i3;
            }
        }
    }
}
