"""MUL_MAT and MUL_MAT_ID: the matrix product r[n,m] = sum_k a[k,n] b[k,m], a's ne2/ne3 broadcast over b's (MUL_MAT),
and the MoE expert product, each (token, slot) multiplying the expert its i32 id picks (MUL_MAT_ID).

The weights (src0) may be f32, f16 or any quantized type of reference/tensor.py (K a multiple of its block); b and
the result stay f32. The reference multiplies the dequantized weights (ggml's to_float, reference/quants.py) by the
float activations in float64: "dequantized weights x float activations". ggml's CPU path differs in one step: it
first quantizes the activations to q8_0/q8_1 (q8_K for the K-quants) and multiplies integer blocks; that costs
NMSE ~1e-5 against this reference (measured on the pinned cases through the ggml backend, well inside the 5e-4
bound test-backend-ops uses for the matmul family, which GPU kernels that dequantize in registers also meet).

Kernels: backends/opencl/matmul.cl, backends/vulkan/matmul.comp, backends/cuda/matmul.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import QUANTIZED, DType
from . import draw as d
from .ggml_call import GgmlCall, Src
from .spec import Mutant, OpSpec, index_domain, register

F32, F16, I32 = DType.F32, DType.F16, DType.I32
FAMILY = "matmul"
WEIGHT_TYPES = (F32, F16, *QUANTIZED)  # what src0 (the weights) may be


def _check_mul_mat(srcs, p):
    a, b = srcs
    if a.ne[0] != b.ne[0] or b.ne[2] % a.ne[2] or b.ne[3] % a.ne[3]:
        raise ValueError(f"MUL_MAT contracts ne0 and broadcasts a over b's ne2/ne3: got a {a.describe()}, "
                         f"b {b.describe()}")


def _mul_mat_ref(xs, p):
    a, b = xs  # numpy (a3, a2, N, K), (b3, b2, M, K)
    a = np.repeat(np.repeat(a, b.shape[0] // a.shape[0], axis=0), b.shape[1] // a.shape[1], axis=1)
    return np.einsum("xynk,xymk->xymn", a, b)


def _check_mul_mat_id(srcs, p):
    w, b, ids = srcs
    k, n, n_exp, _ = w.ne
    if b.ne[0] != k or w.ne[3] != 1 or b.ne[3] != 1 or ids.ne[1] != b.ne[2] or ids.ne[2:] != (1, 1) \
            or ids.ne[0] % b.ne[1]:
        raise ValueError(f"MUL_MAT_ID needs experts [K,N,n_exp], b [K,n_b1,T] and i32 ids [n_used,T] with "
                         f"n_used % n_b1 == 0; got {w.describe()}, {b.describe()}, {ids.describe()}")


def _mul_mat_id_ref(xs, p):
    w, b, ids = xs  # numpy (1, n_exp, N, K), (1, T, n_b1, K), (1, 1, T, n_used)
    T, n_used = ids.shape[2], ids.shape[3]
    out = np.zeros((1, T, n_used, w.shape[2]))
    for t in range(T):
        for e in range(n_used):
            out[0, t, e] = w[0, ids[0, 0, t, e]] @ b[0, t, e % b.shape[2]]
    return out


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def mul_mat_cases():
    t = Layout(permute=(1, 0, 2, 3))
    return [Case.of("MUL_MAT", Input((256, 64)), Input((256, 17))),
            Case.of("MUL_MAT", Input((256, 64)), Input((256, 1))),
            Case.of("MUL_MAT", Input((128, 33, 1, 1)), Input((128, 5, 4, 2))),
            Case.of("MUL_MAT", Input((64, 16, 2, 1)), Input((64, 16, 4, 3))),
            Case.of("MUL_MAT", Input((64, 48), layout=t), Input((64, 32), layout=t)),
            Case.of("MUL_MAT", Input((256, 64), F16), Input((256, 17))),
            # MLA decode's scores: cache rows with a row stride (padding) x one token of H heads; backends may fold
            # the heads into columns of one matrix product (Vulkan's _folds_batches). Then heads whose columns do
            # not follow one stride (permuted b), which must not fold.
            Case.of("MUL_MAT", Input((40, 300), layout=Layout(pad=(24, 0, 0, 0))), Input((40, 1, 4))),
            Case.of("MUL_MAT", Input((40, 300)), Input((40, 3, 4), layout=Layout(permute=(0, 2, 1, 3)))),
            # Each kernel path taken on purpose (backends' hosts choose by M and layout). OpenCL mul_mat_k1 (M < 8,
            # contiguous along k) with a broadcast over ne2 (a2 = 2, b2 = 4) and a k tail (K % 8); mul_mat_pack
            # with K past one packed chunk (KC = 256), so later chunks add onto dst. Vulkan's SHARE tile
            # (VEC4 operands, M >= 32), once plain and once with folded batches (8 columns x 4 heads).
            Case.of("MUL_MAT", Input((68, 16, 2, 1)), Input((68, 3, 4, 1))),
            Case.of("MUL_MAT", Input((300, 48)), Input((300, 16))),
            Case.of("MUL_MAT", Input((64, 40)), Input((64, 40))),
            Case.of("MUL_MAT", Input((64, 40)), Input((64, 8, 4))),
            # f16 a: a matrix-vector product (OpenCL mul_mat_k1 with RM = 1) and K % 4 != 0 (Vulkan's general path)
            Case.of("MUL_MAT", Input((64, 33), F16), Input((64, 1))),
            Case.of("MUL_MAT", Input((31, 33, 1, 2), F16), Input((31, 2, 1, 2))),
            # f16 a: OpenCL mul_mat_k1 with RM > 1, and mul_mat_pack with b strided along K (no BK1); Vulkan's
            # general path with folded batches (K % 4 != 0)
            Case.of("MUL_MAT", Input((64, 16), F16), Input((64, 3))),
            Case.of("MUL_MAT", Input((128, 16), F16), Input((128, 9), layout=t)),
            *(Case.of("MUL_MAT", Input((31, 12), t), Input((31, 2, 3))) for t in (F32, F16)),
            Case.of("MUL_MAT", Input((64, 40), F16), Input((64, 40))),  # Vulkan's SHARE tile on f16 a
            *quantized_mul_mat_cases()]


def quantized_mul_mat_cases():
    """test-backend-ops' quantized products: m = 16 weight rows, k = 256, n = 1 (the mat-vec) and n = 16 with a's
    batches broadcast over b's, for every type; one block of k for the 32-element types; then views and k = 1024."""
    cases = []
    for t in QUANTIZED:
        cases += [Case.of("MUL_MAT", Input((256, 16), t), Input((256, 1))),
                  Case.of("MUL_MAT", Input((256, 16, 3, 2), t), Input((256, 16, 6, 4))),
                  # OpenCL's other paths for each type: mul_mat_vec_q over 3 columns, mul_mat_pack with b strided
                  # along k (no BK1)
                  Case.of("MUL_MAT", Input((256, 16), t), Input((256, 3))),
                  Case.of("MUL_MAT", Input((256, 16), t), Input((256, 3), layout=Layout(permute=(1, 0, 2, 3))))]
    cases += [Case.of("MUL_MAT", Input((t.block, 16), t), Input((t.block, 1))) for t in QUANTIZED if t.block == 32]
    return cases + [
        # a slice of a larger weight (rows padded by a block, starting two blocks in) times a few columns
        Case.of("MUL_MAT", Input((256, 16), DType.Q8_0, Layout(pad=(32, 1, 0, 0), offset=64)), Input((256, 4))),
        # weights with dims 1 and 2 swapped and b likewise (test-backend-ops' permuted {0, 2, 1, 3} cases)
        Case.of("MUL_MAT", Input((256, 16, 2, 3), DType.Q4_0, Layout(permute=(0, 2, 1, 3))),
                Input((256, 1, 2, 3), layout=Layout(permute=(0, 2, 1, 3)))),
        # several K-quant blocks per row, broadcast, 8 columns (test-backend-ops' large ne00 case)
        Case.of("MUL_MAT", Input((1024, 16, 3, 2), DType.Q4_K), Input((1024, 8, 3, 2))),
        Case.of("MUL_MAT", Input((512, 16), DType.Q6_K, Layout(pad=(256, 0, 0, 0))), Input((512, 33))),
        # Vulkan's quantized paths (matmul.comp): QMV (<= 4 columns) and QTILE with b's rows not 4-aligned (no
        # B_VEC4), and each with batches folded into columns (one weight matrix, b's batches one run of columns)
        Case.of("MUL_MAT", Input((256, 16), DType.Q4_K), Input((256, 2), layout=Layout(pad=(1, 0, 0, 0)))),
        Case.of("MUL_MAT", Input((256, 16), DType.Q5_K), Input((256, 9), layout=Layout(pad=(1, 0, 0, 0)))),
        Case.of("MUL_MAT", Input((32, 24), DType.Q5_0), Input((32, 1, 2))),
        Case.of("MUL_MAT", Input((32, 24), DType.Q5_1), Input((32, 1, 2), layout=Layout(pad=(1, 0, 0, 0)))),
        Case.of("MUL_MAT", Input((256, 16), DType.Q6_K), Input((256, 8, 4))),
        Case.of("MUL_MAT", Input((256, 16), DType.Q3_K), Input((256, 3, 4), layout=Layout(pad=(1, 0, 0, 0))))]


# bench ops --type: Kimi-Linear's widest projection (hidden 2304 -> expert/FFN width 9216) as the decode mat-vec (each
# weight byte read once per token: GB/s of weights) and over a 512-token prefill batch (GFLOPS)
KIMI_WIDTH = (2304, 9216)


def quantized_perf_cases(dtype: DType) -> list[Case]:
    """MUL_MAT's perf cases for weights of `dtype`: the mat-vec (n = 1), then n = 512."""
    k, n = KIMI_WIDTH
    dtype.check_row(k, "bench ops --type")
    return [Case.of("MUL_MAT", Input((k, n), dtype), Input((k, m))) for m in (1, 512)]


def mul_mat_id_cases():
    cases = []
    for n_exp, n_used, n_b1, tokens, wtype in ([(4, 2, 1, t, F32) for t in (1, 4, 5, 17, 32, 129)]
                                             + [(8, 4, 4, t, F32) for t in (1, 17)] + [(8, 4, 1, 5, F16)]):
        cases.append(Case.of("MUL_MAT_ID", Input((256, 512, n_exp), wtype), Input((256, n_b1, tokens)),
                             Input((n_used, tokens), I32)))
    # b strided along K (OpenCL's pack path without BK1), and K % 4 != 0 (Vulkan's BY_EXPERT without VEC4)
    for wtype in (F32, F16):
        cases += [Case.of("MUL_MAT_ID", Input((64, 16, 4), wtype),
                          Input((64, 1, 5), layout=Layout(permute=(1, 2, 0, 3))), Input((2, 5), I32)),
                  Case.of("MUL_MAT_ID", Input((15, 16, 4), wtype), Input((15, 1, 5)), Input((2, 5), I32))]
    # test-backend-ops' quantized experts: 4 experts of 64 rows x 3 blocks, 2 used by each of 16 tokens, every type;
    # then Q4_K at its base shape (8 experts, 4 used, b broadcast) and a sliced Q8_0 stack
    cases += [Case.of("MUL_MAT_ID", Input((3 * t.block, 64, 4), t), Input((3 * t.block, 2, 16)),
                      Input((2, 16), I32)) for t in QUANTIZED]
    # and with b strided along k, every type (OpenCL's mul_mat_id without BK1)
    cases += [Case.of("MUL_MAT_ID", Input((t.block, 16, 4), t),
                      Input((t.block, 1, 5), layout=Layout(permute=(1, 2, 0, 3))), Input((2, 5), I32))
              for t in QUANTIZED]
    cases += [Case.of("MUL_MAT_ID", Input((256, 512, 8), DType.Q4_K), Input((256, 1, 17)), Input((4, 17), I32)),
              Case.of("MUL_MAT_ID", Input((64, 16, 4), DType.Q8_0, Layout(pad=(32, 0, 0, 0), offset=32)),
                      Input((64, 2, 5)), Input((2, 5), I32)),
              # b's rows not 4-aligned (Vulkan's quantized QMV without B_VEC4)
              Case.of("MUL_MAT_ID", Input((256, 16, 4), DType.Q3_K),
                      Input((256, 1, 5), layout=Layout(pad=(1, 0, 0, 0))), Input((2, 5), I32))]
    return cases


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def mul_mat(draw):
    wtype = draw(d.weight_types())
    k = draw(d.row_lengths(wtype, [1, 2, 16, 31, 64, 65, 128, 257]))
    n, m = draw(st.sampled_from([1, 2, 5, 16, 33, 64])), draw(st.sampled_from([1, 2, 7, 16, 33]))
    a2, a3 = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    b2, b3 = a2 * draw(st.sampled_from([1, 3])), a3 * draw(st.sampled_from([1, 2]))
    a, b = (k, n, a2, a3), (k, m, b2, b3)
    return Case.of("MUL_MAT", Input(a, wtype, draw(d.layouts(a, dtype=wtype))),
                   Input(b, F32, draw(d.layouts(b))), seed=draw(d.seeds()))


@st.composite
def mul_mat_id(draw):
    wtype = draw(d.weight_types())
    k, n = draw(d.row_lengths(wtype, [1, 16, 33, 64, 128])), draw(st.sampled_from([1, 5, 32, 65]))
    n_exp = draw(st.sampled_from([1, 2, 4, 8]))
    n_used = draw(st.sampled_from([1, 2, 4]))
    n_b1 = draw(st.sampled_from(sorted({1, n_used})))
    tokens = draw(st.sampled_from([1, 2, 5, 17]))
    w, b, ids = (k, n, n_exp, 1), (k, n_b1, tokens, 1), (n_used, tokens, 1, 1)
    return Case.of("MUL_MAT_ID", Input(w, wtype, draw(d.layouts(w, fixed_dims=(3,), dtype=wtype))),
                   Input(b, F32, draw(d.layouts(b, fixed_dims=(3,)))),
                   Input(ids, I32, draw(d.layouts(ids, fixed_dims=(2, 3)))), seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
# ggml_mul_mat asserts !ggml_is_transposed(a) and the CPU kernel nb00 == type size, nb10 == type size: operands that
# break these are staged through ggml_cont in the ggml graph (ggml_call.mul_mat_needs_cont), as llama.cpp does, so
# no layout is refused.
_GGML_MUL_MAT = GgmlCall("ggml_mul_mat", (Src(0), Src(1)), staged=(0, 1))
_GGML_MUL_MAT_ID = GgmlCall("ggml_mul_mat_id", (Src(0), Src(1), Src(2)), staged=(0, 1))


# ---- the records ----------------------------------------------------------------------------------------------------
# The start of mul_mat_pack's k loop (matmul.cl), which its slowdown runs twice.
_PACK_K_LOOP = ("    for (int k0 = 0; k0 < K; k0 += KC) {\n        const int kc = min(KC, K - k0);\n"
                "        pack_rows((__local float*)at, A_AT_K(a0")

register(OpSpec(
    "MUL_MAT", 2, _mul_mat_ref, lambda s, p: (F32, (s[0].ne[1], s[1].ne[1], s[1].ne[2], s[1].ne[3])),
    check=_check_mul_mat, src_dtypes=(WEIGHT_TYPES, (F32,)), nmse=5e-4,
    flops=lambda s, d, p: 2 * s[0].ne[0] * d.nelements,
    summary="r[n,m] = sum_k a[k,n] b[k,m]; a's ne2/ne3 broadcast over b's (a index = b index / ratio); a f32, f16 "
            "or quantized (dequantized weights x float activations)",
    family=FAMILY, pinned=mul_mat_cases, strategy=mul_mat, ggml=_GGML_MUL_MAT,
    perf=Case.of("MUL_MAT", Input((1024, 1024)), Input((1024, 512))),
    mutants=(
        Mutant("q4_k_scale_high_bits_from_min_cuda", "cuda", "(s[j + 4] & 15) | (s[j - 4] >> 6) << 4",
               "(s[j + 4] & 15) | (s[j] >> 6) << 4", "off-by-one",
               "q4_K/q5_K: sub-blocks 4-7 took their scale's top 2 bits from byte j (where the min's top bits are) "
               "instead of byte j - 4", file="quants.cuh"),
        Mutant("mul_mat_vec_q_bcast_mod_cuda", "cuda", "i2 / (vb.ne[2] / va.ne[2]), i3 / (vb.ne[3] / va.ne[3])",
               "i2 % va.ne[2], i3 % va.ne[3]", "broadcast",
               "the quantized mat-vec broadcast a over b's ne2/ne3 by modulo where ggml divides (i2 / (b2 / a2))"),
        Mutant("mul_mat_k1_bcast_mod_opencl", "opencl", "ar[r] = a + OFF(T_A) + (i2 / (NE(T_B, 2) / NE(T_A, 2)))",
               "ar[r] = a + OFF(T_A) + (i2 % NE(T_A, 2))", "broadcast",
               "mul_mat_k1 broadcast a over b's ne2 by modulo (i2 % a2) where ggml divides "
               "(i2 / (b2 / a2))"),
        Mutant("mul_mat_pack_chunk_overwrite_opencl", "opencl",
               "vstore8(first ? acc[c][v] : acc[c][v] + vload8(0, p), 0, p);", "vstore8(acc[c][v], 0, p);", "carry",
               "mul_mat_pack's full-tile store overwrote dst on every k chunk instead of adding chunks after the "
               "first: only the last KC values of k count once K > KC"),
        Mutant("mul_mat_vec_q_b_block_unstepped_opencl", "opencl",
               "acc[c] = block_dot(row + blk, bl + c * K + blk * QK,", "acc[c] = block_dot(row + blk, bl + c * K,",
               "stride", "mul_mat_vec_q met every block of a row with the staged b of the first block: every block "
                         "after the first meets the wrong activations"),
        Mutant("mul_mat_vec_q4_k_min_dropped_opencl", "opencl", "acc.lo = fma(-dm, vload8(0, bs), acc.lo);",
               "", "wrong-op",
               "q4_K's mat-vec dropped the min terms (dmin * m times each 32-element run's sum of b)", file="quants.cl"),
        Mutant("mul_mat_vec_q4_k_plane_unscaled_opencl", "opencl",
               "vstore16(planes * as_float((127 - 4 * t) << 23), t, bl);", "vstore16(planes, t, bl);", "wrong-op",
               "q4_K's mat-vec staged b without the 2^-4t that undoes reading nibble t in place (2^(4t) too large)",
               file="quants.cl"),
        Mutant("mul_mat_vec_q8_0_second_half_b_opencl", "opencl",
               "fma(convert_float16(as_char16(quants16(blk + 18))), vload16(1, bl), p)",
               "fma(convert_float16(as_char16(quants16(blk + 18))), vload16(0, bl), p)", "off-by-one",
               "q8_0's mat-vec multiplied a block's elements 16-31 by b's elements 0-15", file="quants.cl"),
        Mutant("mul_mat_pack_q_group_unwrapped_opencl", "opencl", "dequant16(row + k / QK, k % QK / 16)",
               "dequant16(row + k / QK, k / 16)", "off-by-one",
               "mul_mat_pack's quantized packing took the 16-element group as k / 16 (counted from the chunk, not from "
               "the block), so every block after a chunk's first reads groups past its own end"),
        Mutant("dequant_q2_k_scale_min_swapped_opencl", "opencl", "(sm & 0xF) * q - half_at(blk + 82) * (sm >> 4)",
               "(sm >> 4) * q - half_at(blk + 82) * (sm & 0xF)", "wrong-op",
               "q2_K's packed scale byte read with scale and min nibbles swapped (ggml keeps the scale in the low "
               "nibble, the min in the high one)", file="quants.cl"),
        Mutant("mul_mat_plain_bcast_mod_vulkan", "vulkan", "int a_base = off_0 + (i2 / (ne_1.z / ne_0.z))",
               "int a_base = off_0 + (i2 % ne_0.z)", "broadcast",
               "the plain (non-SHARE) 4x4 path broadcast a over b's ne2 by modulo (i2 % a2) where ggml divides"),
        Mutant("mul_mat_general_k_stride_vulkan", "vulkan", "int sa = nb_0.x, sb = nb_1.x;",
               "int sa = 1, sb = nb_1.x;", "stride",
               "the general (non-VEC4) path walked a along k at unit stride, a's natural stride, not the view's nb0"),
        Mutant("mul_mat_q4_k_min_dropped_vulkan", "vulkan",
               "v[i] = dl * bits4(q0[i], uint(4 * (s & 1)), 0xFu) - ml;",
               "v[i] = dl * bits4(q0[i], uint(4 * (s & 1)), 0xFu);", "wrong-op",
               "q4_K dequantized without the sub-block's min term (dmin * m) in the first 16 elements of each 32",
               file="quants.glsl"),
        Mutant("mul_mat_quant_b_piece_vulkan", "vulkan", "bv[i] = uintBitsToFloat(S14[((base + k0) >> 2) + i]);",
               "bv[i] = uintBitsToFloat(S14[(base >> 2) + i]);", "stride",
               "the quantized paths loaded b's first 32 values for every piece of k instead of the piece at k0"),
        Mutant("mul_mat_share_row7_vulkan", "vulkan", "subgroupBroadcast(a, 7)", "subgroupBroadcast(a, 6)",
               "wrong-op", "SHARE tile: the last lane's row of a (8r + 7) taken from lane 6, so dst row 8r + 7 "
                           "repeats row 8r + 6"),
        # The packed kernel's whole k loop run twice: its first chunk overwrites dst, so the second pass recomputes
        # the same tile bit for bit (correct, twice the work).
        Mutant("mul_mat_pack_twice_slowdown_opencl", "opencl", _PACK_K_LOOP,
               "    for (int pass = 0; pass < 2; ++pass)\n" + _PACK_K_LOOP, "slowdown",
               "mul_mat_pack computes its tile twice: twice the work"),
    )))
register(OpSpec(
    "MUL_MAT_ID", 3, _mul_mat_id_ref, lambda s, p: (F32, (s[0].ne[1], s[2].ne[0], s[2].ne[1], 1)),
    check=_check_mul_mat_id, src_dtypes=(WEIGHT_TYPES, (F32,), (I32,)), nmse=5e-4,
    domain=index_domain(2, lambda shapes: shapes[0][-3]),
    ids={2: ("{n} experts (ne2 of src0)", lambda s: s[0].ne[2])},
    flops=lambda s, d, p: 2 * s[0].ne[0] * d.nelements,
    summary="r[:, e, t] = experts[:, :, ids[e, t]]^T b[:, e % n_b1, t] (ggml_mul_mat_id)",
    family=FAMILY, pinned=mul_mat_id_cases, strategy=mul_mat_id, ggml=_GGML_MUL_MAT_ID,
    # Kimi's experts (2304 -> 1024), 8 used per token over 64 tokens; 12 experts (113 MB) so the stack fits
    # lavapipe's 128 MiB storage-buffer binding
    perf=Case.of("MUL_MAT_ID", Input((2304, 1024, 12)), Input((2304, 1, 64)), Input((8, 64), I32)),
    mutants=(
        Mutant("mul_mat_id_q6_k_scale_offset_vulkan", "vulkan", "uint sc = qbits16(b + 192 + 2 * s);",
               "uint sc = qbits16(b + 192 + s);", "off-by-one",
               "q6_K's int8 scales read at byte 192 + s where piece s of 32 uses scales 2s and 2s + 1 (one per 16)",
               file="quants.glsl"),
    )))
