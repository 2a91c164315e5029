// SSM_CONV: dst[ch, t, s] = sum_{i < D_CONV} sx[t + i, ch, s] * c[i, ch]. sx runs along tokens and dst along
// channels, so a work group takes a tile of TILE channels x TILE tokens: work item w first computes channel
// c0 + w for the tile's tokens, a sliding window along sx's row (8 tokens at a time with vload8 when the row is
// contiguous: PoCL's auto-vectoriser leaves this loop scalar), into local memory; after the barrier it writes
// token t0 + w for every channel of the tile, along dst's row. Any number of tokens is covered. D_CONV (taps) is
// a build define, so the tap loop unrolls.
#define TILE 64

__kernel __attribute__((reqd_work_group_size(TILE, 1, 1)))
void ssm_conv(__global float* restrict d, __global const float* restrict sx, __global const float* restrict c,
              const Params P) {
    __local float tile[TILE * (TILE + 1)];  // [channel][token], padded pitch
    const int w = get_local_id(0), s = get_global_id(2);
    const int c0 = get_group_id(0) * TILE, t0 = get_group_id(1) * TILE;
    const int n_ch = NE(T_DST, 0), n_t = NE(T_DST, 1), nt_tile = min(TILE, n_t - t0), nc_tile = min(TILE, n_ch - c0);
    if (w < nc_tile) {
        const int x0 = NB(T_A, 0);
        __global const float* xr = sx + OFF(T_A) + t0 * x0 + (c0 + w) * NB(T_A, 1) + s * NB(T_A, 2);
        __global const float* cr = c + OFF(T_B) + (c0 + w) * NB(T_B, 1);
        __local float* out = tile + w * (TILE + 1);
        float taps[D_CONV];
        for (int i = 0; i < D_CONV; ++i) taps[i] = cr[i * NB(T_B, 0)];
        int j = 0;
        if (x0 == 1) {
            for (; j + 8 <= nt_tile; j += 8) {
                float8 acc = 0.0f;
                for (int i = 0; i < D_CONV; ++i) acc += vload8(0, xr + j + i) * taps[i];
                vstore8(acc, 0, out + j);
            }
        }
        for (; j < nt_tile; ++j) {
            float acc = 0.0f;
            for (int i = 0; i < D_CONV; ++i) acc += xr[(j + i) * x0] * taps[i];
            out[j] = acc;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (w < nt_tile) {
        const int sd = NB(T_DST, 0);
        __global float* dr = d + OFF(T_DST) + c0 * sd + (t0 + w) * NB(T_DST, 1) + s * NB(T_DST, 2);
        for (int k = 0; k < nc_tile; ++k) dr[k * sd] = tile[k * (TILE + 1) + w];
    }
}
