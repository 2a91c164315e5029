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
from .spec import PERF_NE, Mutant, OpSpec, f32, f32_bits, register, same_shape

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


def _norm_domain(rng, shape, i, p, shapes=None):
    """Upstream's [-1, 1], every other row scaled by 10^u, u in [-4, 0]: rows whose mean square (down to ~3e-9) is
    below eps, where eps decides the result (sqrt(mean) + eps and sqrt(mean + eps) then differ by far more than
    any bound, and so do the op's eps and a hard-coded one)."""
    x = rng.uniform(-1, 1, shape)
    rows = x.reshape(-1, shape[-1]) if x.size else x.reshape(0, 1)
    scale = 10.0 ** rng.uniform(-4, 0, (rows.shape[0], 1))
    scale[::2] = 1.0
    rows *= scale
    return x


# Each output is x times the row's 1/norm: the norm's float32 sum of up to a few thousand squares is good to ~1e-6
# relative at worst; 64 float32 eps leaves margin.
NORM_MAX_REL_ERROR = 64 * float(np.finfo(np.float32).eps)


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
            for layout in (Layout(), Layout(pad=(n, 0, 0, 0)), Layout(permute=(0, 2, 1, 3)))] \
        + [Case.of("RMS_NORM", Input((n, 6, 2)), eps=eps)  # short rows where eps is not negligible
           for n in (1, 4, 7, 8, 33) for eps in (1e-3, 0.1)]


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


_EPS_OUTSIDE = ("eps added to the root, sqrt(mean(x^2)) + eps, instead of under it, sqrt(mean(x^2) + eps): equal "
                "while mean(x^2) >> eps, far off for rows whose mean square is near or below eps")
_EPS_HARDCODED = ("eps hard-coded to 1e-6 instead of the op's parameter: right for eps = 1e-6 only (Kimi's "
                  "RMS_NORM runs eps = 1e-5), and only visible where eps is not negligible against mean(x^2)")


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "L2_NORM", 1, _l2_ref, same_shape, {"eps": 1e-6}, _check_eps, _eps_words, flops=lambda s, d, p: 3 * d.nelements,
    summary="x / max(||x||, eps) per row (eps clamps the norm)",
    family=FAMILY, pinned=l2_norm_cases, strategy=_norm_drawn("L2_NORM", [0.0, 1e-6, 1e-4, 0.1, 10.0]),
    ggml=GgmlCall("ggml_l2_norm", (Src(0), Param("eps"))),
    perf=Case.of("L2_NORM", Input(PERF_NE), eps=1e-6), domain=_norm_domain, max_rel_error=NORM_MAX_REL_ERROR))
register(OpSpec(
    "RMS_NORM", 1, _rms_ref, same_shape, {"eps": 1e-5}, _check_eps, _eps_words, flops=lambda s, d, p: 3 * d.nelements,
    summary="x / sqrt(mean(x^2) + eps) per row",
    family=FAMILY, pinned=rms_norm_cases, strategy=_norm_drawn("RMS_NORM", [0.0, 1e-6, 1e-5, 0.1]),
    ggml=GgmlCall("ggml_rms_norm", (Src(0), Param("eps")), rules=_rms_norm_rules),
    perf=Case.of("RMS_NORM", Input(PERF_NE), eps=1e-5), domain=_norm_domain, max_rel_error=NORM_MAX_REL_ERROR,
    mutants=(
        Mutant("rms_norm_eps_outside_sqrt_opencl", "opencl", "const float den = sqrt(total / (float)ne0 + eps);",
               "const float den = sqrt(total / (float)ne0) + eps;", "eps", _EPS_OUTSIDE),
        Mutant("rms_norm_eps_hardcoded_opencl", "opencl", "const float eps = WORD_F(0);", "const float eps = 1e-6f;",
               "eps", _EPS_HARDCODED),
        Mutant("rms_norm_eps_outside_sqrt_vulkan", "vulkan", "float scale = 1.0 / sqrt(sum / float(ne.x) + eps);",
               "float scale = 1.0 / (sqrt(sum / float(ne.x)) + eps);", "eps", _EPS_OUTSIDE),
        Mutant("rms_norm_eps_hardcoded_vulkan", "vulkan", "float eps = op_float(0);", "float eps = 1e-6;", "eps",
               _EPS_HARDCODED),
    )))
register(OpSpec(
    "SUM_ROWS", 1, _sum_rows_ref, _sum_rows_out, summary="sum of each row (ne0) -> [1, ne1, ne2, ne3]",
    family=FAMILY, pinned=sum_rows_cases, strategy=lambda: d.elementwise("SUM_ROWS"),
    ggml=GgmlCall("ggml_sum_rows", (Src(0),), rules=_sum_rows_rules),
    perf=Case.of("SUM_ROWS", Input(PERF_NE))))
