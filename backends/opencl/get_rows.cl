// GET_ROWS on the row-chunk grid: dst row (k, i1, i2) is row ids[k, i1, i2] of a's plane (i1, i2), so each work
// item reads its id once and copies a run. K sits in grid dim 1 (OpenCL has no 65,535 limit there). A_F16 (host
// define) reads a as half (vload_half is exact); a quantized a (QK, quants.cl) is an array of blocks and each run
// (CHUNK, a multiple of 16) is dequantized 16 elements at a time.
#ifdef QK
typedef qblock AT;
#elif defined(A_F16)
#define LOAD_A(p) vload_half(0, p)
typedef half AT;
#else
#define LOAD_A(p) (*(p))
typedef float AT;
#endif

__kernel void get_rows(__global float* d, __global const AT* a, __global const int* ids, const Params P) {
    if (!ROW_IN_GRID) return;
    const int i1 = I1, i2 = I2, i3 = I3, sd = NB(T_DST, 0), sa = NB(T_A, 0), end = CHUNK_END;
    const int r = ids[OFF(T_B) + i1 * NB(T_B, 0) + i2 * NB(T_B, 1) + i3 * NB(T_B, 2)];
    __global float* dr = d + ROW(T_DST);
    __global const AT* ar = a + OFF(T_A) + r * NB(T_A, 1) + i2 * NB(T_A, 2) + i3 * NB(T_A, 3);
#ifdef QK
    for (int i = CHUNK_BEGIN; i < end; i += 16) {
        const float16 v = dequant16(ar + i / QK * sa, i % QK / 16);
        if (sd == 1) {
            vstore16(v, 0, dr + i);
        } else {
            float s[16];
            vstore16(v, 0, s);
            for (int j = 0; j < 16; ++j) dr[(i + j) * sd] = s[j];
        }
    }
#else
    for (int i = CHUNK_BEGIN; i < end; ++i) dr[i * sd] = LOAD_A(ar + i * sa);
#endif
}
