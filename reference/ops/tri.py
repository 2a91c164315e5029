"""TRI, FILL and DIAG: one triangle of each ne0 x ne1 matrix kept, every element set to a constant, and a row
spread onto a diagonal. The chunked delta net builds its masks and identity from them (kda_*_mask, kda_ident).

Kernels: backends/opencl/tri.cl, backends/vulkan/tri.comp, backends/cuda/tri.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from . import draw as d
from .ggml_call import Enum, GgmlCall, Param, Src, contiguous, dense_nb0, requires
from .spec import PERF_NE, Mutant, OpSpec, check_square, f32, f32_bits, register, same_shape

FAMILY = "tri"

# TRI's type and the word its kernels read; TRI keeps element (col i0, row i1) when _TRI_KEEP[type] holds.
TRI_TYPES = {"LOWER": 0, "LOWER_DIAG": 1, "UPPER": 2, "UPPER_DIAG": 3}
_TRI_KEEP = {
    "LOWER": lambda c, r: c < r,
    "LOWER_DIAG": lambda c, r: c <= r,
    "UPPER": lambda c, r: c > r,
    "UPPER_DIAG": lambda c, r: c >= r,
}


def _check_tri(srcs, p):
    check_square(srcs, p)
    if p["type"] not in TRI_TYPES:
        raise ValueError(f"TRI type must be one of {list(TRI_TYPES)}, got {p['type']!r}")


def _tri_ref(xs, p):
    n = xs[0].shape[-1]
    c, r = np.meshgrid(np.arange(n), np.arange(n))  # c varies along the last (ne0) axis
    return np.where(_TRI_KEEP[p["type"]](c, r), xs[0], 0.0)


def _fill_ref(xs, p):
    return np.full(xs[0].shape, f32(p["c"]))


def _check_diag(srcs, p):
    if srcs[0].ne[1] != 1:
        raise ValueError(f"DIAG takes a [n,1,ne2,ne3] tensor, got {srcs[0].describe()}")


def _diag_ref(xs, p):
    x = xs[0]  # (ne3, ne2, 1, n)
    n = x.shape[-1]
    return np.eye(n) * x  # broadcasts row vector x[..., 0, :] over rows, kept on the diagonal


def _diag_out(srcs, p):
    return srcs[0].dtype, (srcs[0].ne[0], srcs[0].ne[0], srcs[0].ne[2], srcs[0].ne[3])


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
TRANSPOSED = Layout(permute=(1, 0, 2, 3))  # rows strided: OpenCL's strided-row path, Vulkan's general one


def tri_cases():
    return [Case.of("TRI", Input((10, 10, 4, 3)), type=t) for t in TRI_TYPES] \
        + [Case.of("TRI", Input((10, 10, 4, 3), layout=TRANSPOSED), type="LOWER_DIAG")]  # strided rows, no VEC4


def fill_cases():
    return [Case.of("FILL", Input((10, 10, 4, 3)), c=c) for c in (0.0, 2.0, -152.0, 3.5)] \
        + [Case.of("FILL", Input((10, 10, 4, 3), layout=Layout(pad=(2, 0, 1, 0), offset=3)), c=1.0, inplace=True),
           Case.of("FILL", Input((65, 3, 7), layout=TRANSPOSED), c=-2.5, inplace=True)]


def diag_cases():
    return [Case.of("DIAG", Input((10, 1, 4, 3))), Case.of("DIAG", Input((128, 1, 2, 1))),
            Case.of("DIAG", Input((16, 1, 5, 2), layout=Layout(permute=(2, 0, 3, 1))))]  # a strided view


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def square(draw, op, **params):
    n = draw(st.sampled_from([1, 2, 3, 7, 16, 17, 33, 64, 65]))
    ne = (n, n, draw(st.sampled_from(d.OUTER_SIZES)), draw(st.sampled_from([1, 2, 3])))
    return Case.of(op, Input(ne, layout=draw(d.layouts(ne))), seed=draw(d.seeds()), **params)


@st.composite
def diag(draw):
    ne = (draw(st.sampled_from([1, 2, 5, 16, 33, 129])), 1, draw(st.sampled_from(d.OUTER_SIZES)),
          draw(st.sampled_from([1, 2])))
    return Case.of("DIAG", Input(ne, layout=draw(d.layouts(ne))), seed=draw(d.seeds()))


def _tri_drawn():
    return st.sampled_from(list(TRI_TYPES)).flatmap(lambda t: square("TRI", type=t))


def _fill_drawn():
    return st.tuples(d.finite_float(-1e3, 1e3), st.booleans()).flatmap(
        lambda ci: d.elementwise("FILL", c=ci[0], inplace=ci[1]))


# ---- ggml ---------------------------------------------------------------------------------------------------------
_tri_rules = requires((0, "a", contiguous, "ggml_tri asserts ggml_is_contiguous(a)"))


_fill_rules = requires((0, "a", contiguous, "ggml_fill_impl asserts ggml_is_contiguous(a) (in place or not)"))


_diag_rules = requires((0, "a", dense_nb0, "ggml_compute_forward_diag_f32 asserts nb00 == sizeof(float)"))


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "TRI", 1, _tri_ref, same_shape, {"type": "LOWER"}, _check_tri, lambda s, p: [TRI_TYPES[p["type"]]],
    flops=lambda s, d, p: 0, summary="keep one triangle of each ne0 x ne1 matrix, zero the rest",
    family=FAMILY, pinned=tri_cases, strategy=_tri_drawn,
    ggml=GgmlCall("ggml_tri", (Src(0), Enum("GGML_TRI_TYPE_", "type")), rules=_tri_rules),
    perf=Case.of("TRI", Input((1024, 1024, 4)), type="LOWER_DIAG"),
    mutants=(
        Mutant("tri_lower_diag_no_diagonal_opencl", "opencl", "const int hi = type == 1 ? i1 + 1 :",
               "const int hi = type == 1 ? i1 :", "off-by-one",
               "LOWER_DIAG keeps columns [0, i1) instead of [0, i1]: the diagonal is zeroed (LOWER's bound)"),
        Mutant("tri_upper_diag_no_diagonal_vulkan", "vulkan", "tri_type == 3 ? i.x >= i.y", "tri_type == 3 ? i.x > i.y",
               "off-by-one", "UPPER_DIAG keeps i0 > i1 instead of i0 >= i1: the diagonal is zeroed (UPPER's test)"),
    )))
register(OpSpec(
    "FILL", 1, _fill_ref, same_shape, {"c": 0.0, "inplace": False},
    kernel_params=lambda s, p: [f32_bits(p["c"])], flops=lambda s, d, p: 0, inplace_param="inplace",
    moved=lambda s, d, p: d.nbytes(),  # writes only: the source gives the shape
    summary="every element becomes c (in place: fills a new_tensor, as ggml_fill_inplace)", elementwise=True,
    family=FAMILY, pinned=fill_cases, strategy=_fill_drawn,
    ggml=GgmlCall("ggml_fill", (Src(0), Param("c")), inplace_fn="ggml_fill_inplace", rules=_fill_rules),
    perf=Case.of("FILL", Input(PERF_NE), c=1.5)))
register(OpSpec(
    "DIAG", 1, _diag_ref, _diag_out, check=_check_diag, flops=lambda s, d, p: 0,
    summary="[n,1,a,b] -> [n,n,a,b] diagonal matrices",
    family=FAMILY, pinned=diag_cases, strategy=diag,
    ggml=GgmlCall("ggml_diag", (Src(0),), rules=_diag_rules),
    perf=Case.of("DIAG", Input((2048, 1, 1)))))
