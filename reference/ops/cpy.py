"""CPY and CONT: a copy of a (any view) into a contiguous tensor, element order kept; CPY converts between f32 and
f16, quantizes f32 into q8_0 or q4_0 (the direction ggml has: a KV cache or an activation stored quantized), and may
give the copy another shape of as many elements (ggml_cpy); CONT keeps type and shape (ggml_cont).

Quantizing: the reference is ggml's quantizer (reference.quants.quantize, bit for bit ggml's quantize_row_*), and the
copy is compared dequantized, by NMSE (CPY_QUANT_NMSE).

Kernels: backends/opencl/cpy.cl, backends/vulkan/cpy.comp, backends/cuda/cpy.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import DType
from . import draw as d
from .ggml_call import Dst, GgmlCall, Src, dense_nb0
from .spec import PERF_NE, Mutant, OpSpec, ints, optional, register, same_shape

F32, F16, Q8_0, Q4_0 = DType.F32, DType.F16, DType.Q8_0, DType.Q4_0
FAMILY = "cpy"
CPY_DST = ("f32", "f16", "q8_0", "q4_0")
# A kernel that rounds a tie (x / d exactly halfway between two steps), or a value within float32 rounding of one, the
# other way than ggml's quantize_row_* moves that element by one step d of its block. d is amax/127 (q8_0) and
# amax/8 (q4_0); with the uniform [-1, 1) inputs every case draws, d^2 / mean(x^2) is 1.8e-4 (q8_0) and 0.044 (q4_0)
# (measured over 4096 blocks), so one element in 1024 a step off costs NMSE 1.7e-7 and 4.3e-5. The bounds allow that
# (2e-7, 5e-5); a real bug costs far more: rounding toward zero instead of to nearest moves about half the elements
# (measured: NMSE 8.5e-5 on q8_0, 2.0e-2 on q4_0), a wrong scale or nibble order moves all of them. Measured too:
# ggml's own CPY (the ggml backend) is bit for bit the reference on every pinned case (NMSE 0).
CPY_QUANT_NMSE = {Q8_0: 2e-7, Q4_0: 5e-5}


def _cpy_out(srcs, p):
    return DType[p["dtype"].upper()], tuple(p["ne"] or srcs[0].ne)


def _check_cpy(srcs, p):
    if p["dtype"].lower() not in CPY_DST:
        raise ValueError(f"CPY writes {', '.join(CPY_DST)}, not {p['dtype']!r}")
    dtype, ne = _cpy_out(srcs, p)
    if int(np.prod(ne)) != srcs[0].nelements:
        raise ValueError(f"CPY needs as many elements in dst {list(ne)} as in src {list(srcs[0].ne)}")
    if dtype.quantized:  # ggml quantizes the source row by row (ggml_compute_forward_dup_to_q): rows of whole blocks
        a = srcs[0]
        if a.dtype != F32:
            raise ValueError(f"CPY quantizes f32 only: src is {a.dtype.label}, dst {dtype.label}")
        dtype.check_row(a.ne[0], f"CPY into {dtype.label} (src rows)")
        dtype.check_row(ne[0], f"CPY into {dtype.label} (dst rows)")


def _cpy_ref(xs, p):
    # rows of ne0 first: the harness reshapes to the destination and stores it in its type, so a quantized one is
    # encoded by reference.quants.quantize (ggml's quantizer)
    return xs[0].reshape(-1)


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def cpy_cases():
    cases = []
    for src, dst in ((F32, F16), (F16, F32), (F32, F32), (F16, F16)):
        for layout in (Layout(), Layout(permute=(0, 2, 1, 3)), Layout(pad=(1, 2, 0, 0), offset=3)):
            cases.append(Case.of("CPY", Input((256, 4, 4, 4), src, layout), dtype=dst.label))
        cases.append(Case.of("CPY", Input((7, 5, 3), src, Layout(permute=(1, 0, 2, 3))), dtype=dst.label, ne=[35, 3]))
    # a 4-D view whose nb3 is not nb2 * ne2 (dims 1 and 2 swapped) flattened into another shape (OpenCL's FLAT path),
    # every type pair
    cases += [Case.of("CPY", Input((4, 3, 2, 3), src, Layout(permute=(0, 2, 1, 3))), dtype=dst.label, ne=[72])
              for src, dst in ((F32, F16), (F16, F32), (F32, F32), (F16, F16))]
    # a transposed source, same shape (OpenCL's strided-row path), every type pair
    cases += [Case.of("CPY", Input((16, 8, 3), src, Layout(permute=(1, 0, 2, 3))), dtype=dst.label)
              for src, dst in ((F32, F16), (F16, F32), (F32, F32), (F16, F16))]
    # f32 -> q8_0 and q4_0: test-backend-ops' {256, 4, 4, 4} and its copy by rows ({256, 2, 3, 4} with dims 1 and 2
    # swapped), then a copy into rows of another length (each still whole blocks)
    for dst in (Q8_0, Q4_0):
        cases += [Case.of("CPY", Input((256, 4, 4, 4)), dtype=dst.label),
                  Case.of("CPY", Input((256, 2, 3, 4), layout=Layout(permute=(0, 2, 1, 3))), dtype=dst.label),
                  Case.of("CPY", Input((64, 6, 2)), dtype=dst.label, ne=[128, 6])]
    return cases


def cont_cases():
    return [Case.of("CONT", Input((10, 10, 10, 1), dtype, Layout(permute=perm)))
            for dtype in (F32, F16) for perm in ((1, 0, 2, 3), (0, 2, 1, 3), (2, 0, 1, 3))] \
        + [Case.of("CONT", Input((16, 4, 2), dtype)) for dtype in (F32, F16)]  # already contiguous: Vulkan's VEC4


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def cpy(draw):
    dst = draw(st.sampled_from([F32, F16]) | st.sampled_from([Q8_0, Q4_0]))
    src = F32 if dst.quantized else draw(st.sampled_from([F32, F16]))
    # quantized: rows of whole blocks on both sides
    ne = draw(d.shapes(row_sizes=[32, 64, 256] if dst.quantized else d.ROW_SIZES))
    n = int(np.prod(ne))
    dst_ne = draw(st.sampled_from([None, [n], [ne[0], n // ne[0]]]))
    return Case.of("CPY", Input(ne, src, draw(d.layouts(ne))), seed=draw(d.seeds()), dtype=dst.label, ne=dst_ne)


# ---- ggml ---------------------------------------------------------------------------------------------------------
# ggml_cpy(a, b) writes b, the destination: the node's dst where it shares no bytes with a, else a new tensor copied
# out. Neither op asserts anything about a's layout, except when quantizing.
def _ggml_cpy_rules(srcs, params) -> list[str]:
    if DType[params["dtype"].upper()].quantized and not dense_nb0(srcs[0]):
        return [f"ggml_compute_forward_dup_to_q quantizes only sources with dense rows (nb00 == sizeof(float)), "
                f"else GGML_ABORT(\"not implemented\"); a is {srcs[0].describe()}"]
    return []


_GGML_CPY = GgmlCall("ggml_cpy", (Src(0), Dst()), rules=_ggml_cpy_rules)
_GGML_CONT = GgmlCall("ggml_cont", (Src(0),))


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "CPY", 1, _cpy_ref, _cpy_out, {"dtype": "f32", "ne": None}, _check_cpy,
    lambda s, p: [s[0].dtype.code, DType[p["dtype"].upper()].code], src_dtypes=((F32, F16),),
    kinds={"ne": optional(ints(1, 4))}, flops=lambda s, d, p: 0, elementwise=True, nmse_by_dst=CPY_QUANT_NMSE,
    summary="copy with type conversion (f32/f16, f32 -> q8_0/q4_0 quantized as ggml does), element order kept "
            "(ggml_cpy)",
    family=FAMILY, pinned=cpy_cases, strategy=cpy, ggml=_GGML_CPY, perf=Case.of("CPY", Input(PERF_NE), dtype="f16"),
    mutants=(
        Mutant("cpy_q8_0_truncates_cuda", "cuda", "(signed char)roundf(x[j] * id)", "(signed char)(x[j] * id)",
               "precision", "f32 -> q8_0 converted x / d to int by truncation (toward zero) where ggml rounds to "
                            "nearest, halves away from zero (roundf)", file="quants.cuh"),
        Mutant("cpy_flat_nb3_natural_opencl", "opencl", "(f / an2) * NB(T_A, 3)", "(f / an2) * NB(T_A, 2) * an2",
               "stride", "FLAT copy (dst of another shape) stepped src's dim 3 by nb2 * ne2, the natural stride, "
                         "not the view's nb3"),
        Mutant("cpy_q8_0_truncates_opencl", "opencl", "(uchar)(char)round(x[j] * id)", "(uchar)(char)(x[j] * id)",
               "precision", "f32 -> q8_0 converted x / d to int by truncation (toward zero) where ggml rounds to "
                            "nearest (roundf)"),
        Mutant("cpy_q4_0_scale_by_amax_opencl", "opencl", "const float d = max / -8.0f", "const float d = amax / -8.0f",
               "sign", "f32 -> q4_0 took d from |max| instead of the signed element of largest magnitude, so blocks "
                       "led by a negative extreme come out mirrored and clamped"),
        Mutant("cpy_q4_0_nibbles_swapped_vulkan", "vulkan", "(q[2 * k] | (q[2 * k + 16] << 4))",
               "(q[2 * k + 16] | (q[2 * k] << 4))", "wrong-op",
               "f32 -> q4_0 packed element l + 16 into the low nibble of byte l and element l into the high one"),
        Mutant("cpy_q8_0_divisor_128_vulkan", "vulkan", "float d = div_rn(amax, 127.0);",
               "float d = div_rn(amax, 128.0);", "off-by-one",
               "f32 -> q8_0 scaled by amax / 128 (1 << 7) where ggml divides by 127: the block's extreme quantizes to "
               "128, which wraps to -128 in int8"),
        Mutant("cpy_f16_truncate_vulkan", "vulkan", "uint normal = (m + 0x0FFFu + ((m >> 13) & 1u)) >> 13;",
               "uint normal = m >> 13;", "precision",
               "f32 -> f16 truncated the 13 dropped mantissa bits instead of rounding to nearest even",
               file="common.glsl"),
    )))
register(OpSpec(
    "CONT", 1, lambda xs, p: xs[0], same_shape, src_dtypes=((F32, F16),),
    kernel_params=lambda s, p: [s[0].dtype.code, s[0].dtype.code], flops=lambda s, d, p: 0, elementwise=True,
    summary="a contiguous copy of a view",
    family=FAMILY, pinned=cont_cases, strategy=lambda: d.elementwise("CONT", dtypes=(F32, F16)), ggml=_GGML_CONT,
    perf=Case.of("CONT", Input(PERF_NE, layout=Layout(permute=(1, 0, 2, 3))))))
