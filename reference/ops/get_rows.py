"""GET_ROWS: rows of a gathered by i32 ids, per plane (r[:, k, i1, i2] = a[:, ids[k, i1, i2], i1, i2]); a f32, f16 or
quantized (each row dequantized as ggml's to_float does: a token-embedding lookup in a quantized GGUF), the result
f32. MoE routing and embedding lookups use it.

Kernels: backends/opencl/get_rows.cl, backends/vulkan/get_rows.comp, backends/cuda/get_rows.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import QUANTIZED, DType
from . import draw as d
from .ggml_call import GgmlCall, Src, dense_nb0, requires
from .spec import PERF_NE, Mutant, OpSpec, index_domain, register

F32, F16, I32 = DType.F32, DType.F16, DType.I32
FAMILY = "get_rows"


def _check_get_rows(srcs, p):
    a, ids = srcs
    if a.ne[2] != ids.ne[1] or a.ne[3] != ids.ne[2] or ids.ne[3] != 1:
        raise ValueError(f"GET_ROWS needs a [E,R,n1,n2] and i32 ids [K,n1,n2], got a {a.describe()}, "
                         f"ids {ids.describe()}")


def _get_rows_ref(xs, p):
    a, ids = xs  # numpy (n2, n1, R, E) and (1, n2, n1, K)
    return np.stack([np.stack([a[i2, i1, ids[0, i2, i1]] for i1 in range(a.shape[1])]) for i2 in range(a.shape[0])])


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def get_rows_cases():
    return [Case.of("GET_ROWS", Input((64, 10)), Input((7,), I32)),
            Case.of("GET_ROWS", Input((64, 10, 3)), Input((5, 3), I32, Layout(pad=(2, 0, 0, 0), offset=1))),
            Case.of("GET_ROWS", Input((64, 10), F16), Input((9,), I32)),
            Case.of("GET_ROWS", Input((16, 300)), Input((70000,), I32)),  # past CUDA's 65,535 grid rows
            # f16 rows shorter than a Vulkan thread's run (PER = 4 elements cross rows: the id is read per row), and
            # ids as a transposed view (ids' nb0 != 1)
            Case.of("GET_ROWS", Input((3, 10, 2), F16), Input((9, 2), I32)),
            Case.of("GET_ROWS", Input((64, 10, 3)), Input((5, 3), I32, Layout(permute=(1, 0, 2, 3)))),
            # f32 rows of 3 (no VEC4 on Vulkan), and a transposed a, f32 and f16 (OpenCL's strided-row path)
            Case.of("GET_ROWS", Input((3, 10)), Input((4,), I32)),
            *(Case.of("GET_ROWS", Input((17, 6, 2), t, Layout(permute=(1, 0, 2, 3))), Input((4, 2), I32))
              for t in (F32, F16)),
            *quantized_get_rows_cases()]


def quantized_get_rows_cases():
    """test-backend-ops' quantized tables: 4 of 5 rows of 256, every type; 7 planes with ids as a view (q4_0); a
    table with padded rows at an offset (a slice of a larger one, q6_K)."""
    return [*(Case.of("GET_ROWS", Input((256, 5), t), Input((4,), I32)) for t in QUANTIZED),
            Case.of("GET_ROWS", Input((256, 5, 7), DType.Q4_0), Input((4, 7), I32, Layout(pad=(2, 0, 0, 0), offset=1))),
            Case.of("GET_ROWS", Input((512, 5), DType.Q6_K, Layout(pad=(256, 0, 0, 0), offset=256)),
                    Input((9,), I32))]


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def get_rows(draw):
    dtype = draw(d.weight_types())
    a = (draw(d.row_lengths(dtype, [1, 3, 64, 129])), draw(st.sampled_from([1, 2, 17])), draw(st.sampled_from([1, 2])),
         draw(st.sampled_from([1, 3])))
    ids = (draw(st.sampled_from([1, 2, 9, 33])), a[2], a[3], 1)
    return Case.of("GET_ROWS", Input(a, dtype, draw(d.layouts(a, dtype=dtype))),
                   Input(ids, I32, draw(d.layouts(ids, fixed_dims=(3,)))), seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
# only a debug assert (nb00 == type size): release builds read each row as dense
_ggml_rules = requires((0, "a", dense_nb0, "ggml_compute_forward_get_rows_* read rows as dense (nb00 == type size is "
                                           "only a debug assert, so a strided row is misread)"))


_GGML = GgmlCall("ggml_get_rows", (Src(0), Src(1)), rules=_ggml_rules)


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "GET_ROWS", 2, _get_rows_ref, lambda s, p: (F32, (s[0].ne[0], s[1].ne[0], s[1].ne[1], s[1].ne[2])),
    check=_check_get_rows, src_dtypes=((F32, F16, *QUANTIZED), (I32,)), flops=lambda s, d, p: 0,
    domain=index_domain(1, lambda shapes: shapes[0][-2]),
    ids={1: ("a has {n} rows (ne1)", lambda s: s[0].ne[1])},
    summary="r[:, k, i1, i2] = a[:, ids[k, i1, i2], i1, i2] (rows gathered by i32 ids, a quantized table's "
            "dequantized; f32 out)",
    family=FAMILY, pinned=get_rows_cases, strategy=get_rows, ggml=_GGML,
    perf=Case.of("GET_ROWS", Input(PERF_NE), Input((PERF_NE[1],), I32)),
    mutants=(
        Mutant("q4_nibbles_swapped_cuda", "cuda", "return qs[(i0 & 15) + j] >> (i0 & 16 ? 4 : 0) & 15;",
               "return qs[(i0 & 15) + j] >> (i0 & 16 ? 0 : 4) & 15;", "wrong-op",
               "the 32-element types took elements 0-15 from the high nibbles and 16-31 from the low ones (ggml keeps "
               "0-15 in the low nibbles)", file="quants.cuh"),
        Mutant("q4_1_qs_at_q4_0_offset_cuda", "cuda", "nibble(b + 4, i0, j)", "nibble(b + 2, i0, j)", "off-by-one",
               "q4_1's nibbles read from byte 2, where q4_0's start, but q4_1 keeps its min m there (qs from byte 4)",
               file="quants.cuh"),
        Mutant("get_rows_q4_nibbles_swapped_vulkan", "vulkan", "v[i] = bits4(q[i], 0u, 0xFu) * d + m;",
               "v[i] = bits4(q[i], 4u, 0xFu) * d + m;", "wrong-op",
               "q4_0/q4_1: elements 0-15 taken from the high nibbles (ggml keeps them in the low nibbles, 16-31 in the "
               "high ones)", file="quants.glsl"),
        Mutant("get_rows_ids_stride_opencl", "opencl", "ids[OFF(T_B) + i1 * NB(T_B, 0) +", "ids[OFF(T_B) + i1 +",
               "stride", "ids read at unit stride along ne0 (ids assumed contiguous), wrong for a strided ids view"),
        Mutant("dequant_q4_k_min_dropped_opencl", "opencl",
               "return half_at(blk) * sc * convert_float16(q) - half_at(blk + 2) * m;",
               "return half_at(blk) * sc * convert_float16(q);", "wrong-op",
               "q4_K/q5_K dequantized without the sub-block's min term (dmin * m): values offset by it",
               file="quants.cl"),
        Mutant("dequant_q4_0_nibbles_swapped_opencl", "opencl", "bits16(blk + 2, 4 * g, 0xF)) - 8.0f",
               "bits16(blk + 2, 4 - 4 * g, 0xF)) - 8.0f", "wrong-op",
               "q4_0's nibble order swapped: element j taken from the high nibble of byte j (ggml keeps elements 0-15 "
               "in the low nibbles, 16-31 in the high ones)", file="quants.cl"),
        Mutant("dequant_q6_k_scale_per_32_opencl", "opencl", "as_char(blk[192 + g])", "as_char(blk[192 + g / 2])",
               "off-by-one", "q6_K read one scale per 32 elements (scales[g / 2]) where ggml has one per 16",
               file="quants.cl"),
        Mutant("get_rows_row_reload_vulkan", "vulkan",
               "if (i.x == 0 && k + 1 < end) row = int(S1[at(ivec4(i.y, i.z, i.w, 0), nb_1, off_1)]);",
               "if (i.x == 0 && k + 1 < end) row = row;", "carry",
               "the general (f16) path read the row id once per thread, so a run crossing into the next dst row "
               "copies the previous row's source"),
    )))
