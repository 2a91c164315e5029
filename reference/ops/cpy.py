"""CPY and CONT: a copy of a (any view) into a contiguous tensor, element order kept; CPY converts between f32 and
f16 and may give the copy another shape of as many elements (ggml_cpy), CONT keeps type and shape (ggml_cont).

Kernels: backends/opencl/cpy.cl, backends/vulkan/cpy.comp, backends/cuda/cpy.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import DType
from . import draw as d
from .ggml_call import Dst, GgmlCall, Src
from .spec import PERF_NE, Mutant, OpSpec, ints, optional, register, same_shape

F32, F16 = DType.F32, DType.F16
FAMILY = "cpy"


def _cpy_out(srcs, p):
    return DType[p["dtype"].upper()], tuple(p["ne"] or srcs[0].ne)


def _check_cpy(srcs, p):
    if p["dtype"].lower() not in ("f32", "f16"):
        raise ValueError(f"CPY writes f32 or f16, not {p['dtype']!r}")
    dtype, ne = _cpy_out(srcs, p)
    if int(np.prod(ne)) != srcs[0].nelements:
        raise ValueError(f"CPY needs as many elements in dst {list(ne)} as in src {list(srcs[0].ne)}")


def _cpy_ref(xs, p):
    return xs[0].reshape(-1)  # rows of ne0 first: the harness reshapes to the destination


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def cpy_cases():
    cases = []
    for src, dst in ((F32, F16), (F16, F32), (F32, F32), (F16, F16)):
        for layout in (Layout(), Layout(permute=(0, 2, 1, 3)), Layout(pad=(1, 2, 0, 0), offset=3)):
            cases.append(Case.of("CPY", Input((256, 4, 4, 4), src, layout), dtype=dst.label))
        cases.append(Case.of("CPY", Input((7, 5, 3), src, Layout(permute=(1, 0, 2, 3))), dtype=dst.label, ne=[35, 3]))
    # a 4-D view whose nb3 is not nb2 * ne2 (dims 1 and 2 swapped) flattened into another shape (OpenCL's FLAT path)
    cases.append(Case.of("CPY", Input((4, 3, 2, 3), F32, Layout(permute=(0, 2, 1, 3))), dtype="f16", ne=[72]))
    # a transposed source, same shape (OpenCL's strided-row path), every type pair
    cases += [Case.of("CPY", Input((16, 8, 3), src, Layout(permute=(1, 0, 2, 3))), dtype=dst.label)
              for src, dst in ((F32, F16), (F16, F32), (F32, F32), (F16, F16))]
    return cases


def cont_cases():
    return [Case.of("CONT", Input((10, 10, 10, 1), dtype, Layout(permute=perm)))
            for dtype in (F32, F16) for perm in ((1, 0, 2, 3), (0, 2, 1, 3), (2, 0, 1, 3))] \
        + [Case.of("CONT", Input((16, 4, 2), dtype)) for dtype in (F32, F16)]  # already contiguous: Vulkan's VEC4


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def cpy(draw):
    src = draw(st.sampled_from([F32, F16]))
    ne = draw(d.shapes())
    n = int(np.prod(ne))
    dst_ne = draw(st.sampled_from([None, [n], [ne[0], n // ne[0]]]))
    return Case.of("CPY", Input(ne, src, draw(d.layouts(ne))), seed=draw(d.seeds()),
                   dtype=draw(st.sampled_from(["f32", "f16"])), ne=dst_ne)


# ---- ggml ---------------------------------------------------------------------------------------------------------
# ggml_cpy(a, b) writes b, the destination: the node's dst where it shares no bytes with a, else a new tensor copied
# out. Neither op asserts anything about a's layout.
_GGML_CPY = GgmlCall("ggml_cpy", (Src(0), Dst()))
_GGML_CONT = GgmlCall("ggml_cont", (Src(0),))


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "CPY", 1, _cpy_ref, _cpy_out, {"dtype": "f32", "ne": None}, _check_cpy,
    lambda s, p: [s[0].dtype.code, DType[p["dtype"].upper()].code], src_dtypes=((F32, F16),),
    kinds={"ne": optional(ints(1, 4))}, flops=lambda s, d, p: 0, elementwise=True,
    summary="copy with type conversion, element order kept (ggml_cpy)",
    family=FAMILY, pinned=cpy_cases, strategy=cpy, ggml=_GGML_CPY, perf=Case.of("CPY", Input(PERF_NE), dtype="f16"),
    mutants=(
        Mutant("cpy_flat_nb3_natural_opencl", "opencl", "(f / an2) * NB(T_A, 3)", "(f / an2) * NB(T_A, 2) * an2",
               "stride", "FLAT copy (dst of another shape) stepped src's dim 3 by nb2 * ne2, the natural stride, "
                         "not the view's nb3"),
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
