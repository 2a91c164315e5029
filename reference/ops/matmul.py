"""MUL_MAT and MUL_MAT_ID: the matrix product r[n,m] = sum_k a[k,n] b[k,m], a's ne2/ne3 broadcast over b's (MUL_MAT),
and the MoE expert product, each (token, slot) multiplying the expert its i32 id picks (MUL_MAT_ID).

Kernels: backends/opencl/matmul.cl, backends/vulkan/matmul.comp, backends/cuda/matmul.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import DType
from . import draw as d
from .ggml_call import GgmlCall, Src
from .spec import Mutant, OpSpec, index_domain, register

F32, F16, I32 = DType.F32, DType.F16, DType.I32
FAMILY = "matmul"


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
            Case.of("MUL_MAT", Input((64, 40), F16), Input((64, 40)))]  # Vulkan's SHARE tile on f16 a


def mul_mat_id_cases():
    cases = []
    for n_exp, n_used, n_b1, tokens, wtype in ([(4, 2, 1, t, F32) for t in (1, 4, 5, 17, 32, 129)]
                                             + [(8, 4, 4, t, F32) for t in (1, 17)] + [(8, 4, 1, 5, F16)]):
        cases.append(Case.of("MUL_MAT_ID", Input((256, 512, n_exp), wtype), Input((256, n_b1, tokens)),
                             Input((n_used, tokens), I32)))
    # b strided along K (OpenCL's pack path without BK1), and K % 4 != 0 (Vulkan's BY_EXPERT without VEC4)
    for wtype in (F32, F16):
        cases += [Case.of("MUL_MAT_ID", Input((64, 16, 4), wtype), Input((64, 1, 5), layout=Layout(permute=(1, 2, 0, 3))),
                          Input((2, 5), I32)),
                  Case.of("MUL_MAT_ID", Input((15, 16, 4), wtype), Input((15, 1, 5)), Input((2, 5), I32))]
    return cases


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def mul_mat(draw):
    k = draw(st.sampled_from([1, 2, 16, 31, 64, 65, 128, 257]))
    n, m = draw(st.sampled_from([1, 2, 5, 16, 33, 64])), draw(st.sampled_from([1, 2, 7, 16, 33]))
    a2, a3 = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    b2, b3 = a2 * draw(st.sampled_from([1, 3])), a3 * draw(st.sampled_from([1, 2]))
    a, b = (k, n, a2, a3), (k, m, b2, b3)
    return Case.of("MUL_MAT", Input(a, draw(st.sampled_from([F32, F16])), draw(d.layouts(a))),
                   Input(b, F32, draw(d.layouts(b))), seed=draw(d.seeds()))


@st.composite
def mul_mat_id(draw):
    k, n = draw(st.sampled_from([1, 16, 33, 64, 128])), draw(st.sampled_from([1, 5, 32, 65]))
    n_exp = draw(st.sampled_from([1, 2, 4, 8]))
    n_used = draw(st.sampled_from([1, 2, 4]))
    n_b1 = draw(st.sampled_from(sorted({1, n_used})))
    tokens = draw(st.sampled_from([1, 2, 5, 17]))
    w, b, ids = (k, n, n_exp, 1), (k, n_b1, tokens, 1), (n_used, tokens, 1, 1)
    return Case.of("MUL_MAT_ID", Input(w, draw(st.sampled_from([F32, F16])), draw(d.layouts(w, fixed_dims=(3,)))),
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
                "        pack_rows((__local float*)at, a0")

register(OpSpec(
    "MUL_MAT", 2, _mul_mat_ref, lambda s, p: (F32, (s[0].ne[1], s[1].ne[1], s[1].ne[2], s[1].ne[3])),
    check=_check_mul_mat, src_dtypes=((F32, F16), (F32,)), nmse=5e-4,
    flops=lambda s, d, p: 2 * s[0].ne[0] * d.nelements,
    summary="r[n,m] = sum_k a[k,n] b[k,m]; a's ne2/ne3 broadcast over b's (a index = b index / ratio)",
    family=FAMILY, pinned=mul_mat_cases, strategy=mul_mat, ggml=_GGML_MUL_MAT,
    perf=Case.of("MUL_MAT", Input((1024, 1024)), Input((1024, 512))),
    mutants=(
        Mutant("mul_mat_k1_bcast_mod_opencl", "opencl", "ar[r] = a + OFF(T_A) + (i2 / (NE(T_B, 2) / NE(T_A, 2)))",
               "ar[r] = a + OFF(T_A) + (i2 % NE(T_A, 2))", "broadcast",
               "mul_mat_k1 broadcast a over b's ne2 by modulo (i2 % a2) where ggml divides (i2 / (b2 / a2))"),
        Mutant("mul_mat_pack_chunk_overwrite_opencl", "opencl",
               "vstore8(first ? acc[c][v] : acc[c][v] + vload8(0, p), 0, p);", "vstore8(acc[c][v], 0, p);", "carry",
               "mul_mat_pack's full-tile store overwrote dst on every k chunk instead of adding chunks after the "
               "first: only the last KC values of k count once K > KC"),
        Mutant("mul_mat_plain_bcast_mod_vulkan", "vulkan", "int a_base = off_0 + (i2 / (ne_1.z / ne_0.z))",
               "int a_base = off_0 + (i2 % ne_0.z)", "broadcast",
               "the plain (non-SHARE) 4x4 path broadcast a over b's ne2 by modulo (i2 % a2) where ggml divides"),
        Mutant("mul_mat_general_k_stride_vulkan", "vulkan", "int sa = nb_0.x, sb = nb_1.x;",
               "int sa = 1, sb = nb_1.x;", "stride",
               "the general (non-VEC4) path walked a along k at unit stride, a's natural stride, not the view's nb0"),
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
    check=_check_mul_mat_id, src_dtypes=((F32, F16), (F32,), (I32,)), nmse=5e-4,
    domain=index_domain(2, lambda shapes: shapes[0][-3]),
    ids={2: ("{n} experts (ne2 of src0)", lambda s: s[0].ne[2])},
    flops=lambda s, d, p: 2 * s[0].ne[0] * d.nelements,
    summary="r[:, e, t] = experts[:, :, ids[e, t]]^T b[:, e % n_b1, t] (ggml_mul_mat_id)",
    family=FAMILY, pinned=mul_mat_id_cases, strategy=mul_mat_id, ggml=_GGML_MUL_MAT_ID,
    # Kimi's experts (2304 -> 1024), 8 used per token over 64 tokens; 12 experts (113 MB) so the stack fits
    # lavapipe's 128 MiB storage-buffer binding
    perf=Case.of("MUL_MAT_ID", Input((2304, 1024, 12)), Input((2304, 1, 64)), Input((8, 64), I32))))
