"""L2_NORM, RMS_NORM and SUM_ROWS: per-row reductions along ne0 - x / max(||x||, eps), x / sqrt(mean(x^2) + eps),
and the row sum. Kimi normalises its layers' inputs (RMS_NORM), the delta net's q and k (L2_NORM) and the routed
experts' weights (SUM_ROWS) this way.

Kernels: backends/opencl/norm.cl, backends/vulkan/norm.comp, backends/cuda/norm.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import DType
from . import draw as d
from .ggml_call import GgmlCall, Param, Src, dense_nb0, requires
from .spec import PERF_NE, OpSpec, f32, f32_bits, register, same_shape

F32 = DType.F32
FAMILY = "norm"


def _l2_ref(xs, p):
    x = xs[0]
    return x / np.maximum(np.sqrt(np.sum(x * x, axis=-1, keepdims=True)), f32(p["eps"]))


def _rms_ref(xs, p):
    x = xs[0]
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + f32(p["eps"]))


def _check_eps(srcs, p):
    if not p["eps"] >= 0:
        raise ValueError(f"eps must be >= 0, got {p['eps']}")


def _eps_words(srcs, p):
    return [f32_bits(p["eps"])]


def _sum_rows_ref(xs, p):
    return xs[0].sum(axis=-1, keepdims=True)


def _sum_rows_out(srcs, p):
    return F32, (1, *srcs[0].ne[1:])


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def l2_norm_cases():
    cases = []
    for eps in (0.0, 1e-6, 1e-4, 0.1, 10.0):
        for n in (64, 1025):
            ne = (n, 5, 4, 3)
            for layout in (Layout(), Layout(pad=(n, 0, 0, 0)), Layout(permute=(0, 2, 1, 3))):
                cases.append(Case.of("L2_NORM", Input(ne, layout=layout), eps=eps))
    return cases


def rms_norm_cases():
    return [Case.of("RMS_NORM", Input((n, 5, 4, 3), layout=layout), eps=eps)
            for eps in (1e-6, 1e-5) for n in (64, 1025)
            for layout in (Layout(), Layout(pad=(n, 0, 0, 0)), Layout(permute=(0, 2, 1, 3)))]


def sum_rows_cases():
    return [Case.of("SUM_ROWS", Input((n, 5, 4, 3), layout=lay)) for n in (1, 64, 1025)
            for lay in (Layout(), Layout(permute=(1, 0, 2, 3)))]


# ---- drawn cases ----------------------------------------------------------------------------------------------------
def _norm_drawn(op: str, eps: list[float]):
    return lambda: st.sampled_from(eps).flatmap(lambda e: d.elementwise(op, eps=e))


# ---- ggml ---------------------------------------------------------------------------------------------------------
_rms_norm_rules = requires((0, "a", dense_nb0,
                             "ggml_compute_forward_rms_norm_f32 asserts src0->nb[0] == sizeof(float)"))


_sum_rows_rules = requires((0, "a", dense_nb0,
                             "ggml_compute_forward_sum_rows_f32 asserts src0->nb[0] == sizeof(float)"))


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "L2_NORM", 1, _l2_ref, same_shape, {"eps": 1e-6}, _check_eps, _eps_words, flops=lambda s, d, p: 3 * d.nelements,
    summary="x / max(||x||, eps) per row (eps clamps the norm)",
    family=FAMILY, pinned=l2_norm_cases, strategy=_norm_drawn("L2_NORM", [0.0, 1e-6, 1e-4, 0.1, 10.0]),
    ggml=GgmlCall("ggml_l2_norm", (Src(0), Param("eps"))),
    perf=Case.of("L2_NORM", Input(PERF_NE), eps=1e-6)))
register(OpSpec(
    "RMS_NORM", 1, _rms_ref, same_shape, {"eps": 1e-5}, _check_eps, _eps_words, flops=lambda s, d, p: 3 * d.nelements,
    summary="x / sqrt(mean(x^2) + eps) per row",
    family=FAMILY, pinned=rms_norm_cases, strategy=_norm_drawn("RMS_NORM", [0.0, 1e-6, 1e-5, 0.1]),
    ggml=GgmlCall("ggml_rms_norm", (Src(0), Param("eps")), rules=_rms_norm_rules),
    perf=Case.of("RMS_NORM", Input(PERF_NE), eps=1e-5)))
register(OpSpec(
    "SUM_ROWS", 1, _sum_rows_ref, _sum_rows_out, summary="sum of each row (ne0) -> [1, ne1, ne2, ne3]",
    family=FAMILY, pinned=sum_rows_cases, strategy=lambda: d.elementwise("SUM_ROWS"),
    ggml=GgmlCall("ggml_sum_rows", (Src(0),), rules=_sum_rows_rules),
    perf=Case.of("SUM_ROWS", Input(PERF_NE))))
