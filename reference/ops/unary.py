"""SOFTPLUS, SIGMOID, SILU, EXP, NEG, SCALE and CLAMP: one value in, one value out, element by element (the gates,
activations and scalings of Kimi's layers).

Kernels: backends/opencl/unary.cl, backends/vulkan/unary.comp, backends/cuda/unary.cu.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from . import draw as d
from .ggml_call import GgmlCall, Param, Src, contiguous, contiguous_rows, dense_nb0, padded_1d, requires
from .spec import PERF_NE, Mutant, OpSpec, f32, f32_bits, register, same_shape, uniform

FAMILY = "unary"


def _softplus(x):
    with np.errstate(over="ignore"):
        return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _exp(x):
    with np.errstate(over="ignore"):
        return np.exp(x)


_UNARY = {
    "SOFTPLUS": (_softplus, "x > 20 ? x : log(1 + e^x)"),
    "SIGMOID": (_sigmoid, "1 / (1 + e^-x)"),
    "SILU": (lambda x: x * _sigmoid(x), "x / (1 + e^-x)"),
    "EXP": (_exp, "e^x"),
    "NEG": (lambda x: -x, "-x"),
}


def _unary_domain(rng, shape, i, p, shapes=None):
    """Upstream's [-150, 150] (overflow, saturation) with half the elements in [-10, 10], where no function is
    saturated, so the relative-error check sees every significant bit of exp, log1p and the divisions."""
    x = rng.uniform(-150, 150, shape)
    near = rng.random(shape) < 0.5
    x[near] = rng.uniform(-10, 10, int(near.sum()))
    return x


# Measured worst relative errors (pinned cases, |ref| > 1e-30): SILU 1.0 / 1.8 / 2.0 float32 eps on opencl / vulkan /
# ggml, SIGMOID 1.0 / 1.7 / 1.0, EXP 1.0 / 1.0 / 0.8; 64 eps (7.6e-6) leaves a wide margin. SOFTPLUS has none:
# ggml computes logf(1 + expf(x)), whose relative error reaches 1 where e^x < 2^-24 (upstream truth, not a bug).
UNARY_MAX_REL_ERROR = 64 * float(np.finfo(np.float32).eps)


def _check_clamp(srcs, p):
    if not p["min"] <= p["max"]:
        raise ValueError(f"CLAMP needs min <= max, got {p['min']} > {p['max']}")


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
TRANSPOSED = Layout(permute=(1, 0, 2, 3))


def unary_cases(op):
    return [Case.of(op, Input(ne, layout=layout))
            for ne in ((128, 2, 2, 2), (5, 7, 11, 13)) for layout in (Layout(), Layout(pad=(3, 1, 0, 0), offset=5))] \
        + [Case.of(op, Input((64, 5, 4), layout=TRANSPOSED))]  # a transposed view: OpenCL's strided-row path


def scale_cases():
    return [Case.of("SCALE", Input((10, 10, 10, 10), layout=layout), s=s, b=b)
            for s, b in ((2.0, 0.0), (0.25, -1.5)) for layout in (Layout(), Layout(permute=(1, 0, 2, 3)))]


def clamp_cases():
    return [Case.of("CLAMP", Input((128, 2, 2, 2), layout=lay), min=-0.5, max=1.25)
            for lay in (Layout(), Layout(pad=(3, 1, 0, 0), offset=5), TRANSPOSED)]


# ---- drawn cases ----------------------------------------------------------------------------------------------------
def scale_draws():
    return st.tuples(d.finite_float(-4, 4), d.finite_float(-4, 4)).flatmap(
        lambda sb: d.elementwise("SCALE", s=sb[0], b=sb[1]))


def clamp_draws():
    return st.tuples(d.finite_float(-2, 0), d.finite_float(0, 2)).flatmap(
        lambda mm: d.elementwise("CLAMP", min=mm[0], max=mm[1]))


# ---- ggml ---------------------------------------------------------------------------------------------------------
_unary_rules = requires((0, "a", dense_nb0, "apply_unary_op (unary-ops.cpp) asserts nb00 == sizeof(float)"))


_silu_rules = requires((0, "a", contiguous_rows, "ggml_unary_impl asserts ggml_is_contiguous_rows(a)"))


_scale_rules = requires(
    (0, "a", padded_1d, "ggml_scale_impl asserts ggml_is_padded_1d(a) (nb0 == 4, nb2 == nb1*ne1, nb3 == nb2*ne2, "
                        "size-1 dims included)"),
    (0, "a", contiguous, "ggml_compute_forward_scale_f32 asserts ggml_is_contiguous(src0)"))


# CLAMP: ggml_clamp is always in place (its result is a view of a), so a ggml_cont copy is clamped instead
# (writes_src0); it asserts nothing about a's layout.
def _ggml(op: str) -> GgmlCall:
    return GgmlCall(f"ggml_{op.lower()}", (Src(0),), rules=_silu_rules if op == "SILU" else _unary_rules)


_EXP_11BIT = ("the exp under SILU keeps 11 significant bits (its low 12 mantissa bits cleared, as a half-precision "
              "or 'fast' exp would): ~5e-4 relative error where x < 0, invisible to NMSE next to the large outputs")
_SILU_MUTANTS = (
    Mutant("silu_exp_11bit_opencl", "opencl", "#define OP(x) ((x) / (1.0f + exp(-min20(x))))",
           "#define OP(x) ((x) / (1.0f + as_float(as_uint(exp(-min20(x))) & 0xFFFFF000u)))", "precision",
           _EXP_11BIT),
    Mutant("silu_exp_11bit_vulkan", "vulkan", "float e = exp_precise(-abs(x));",
           "float e = uintBitsToFloat(floatBitsToUint(exp_precise(-abs(x))) & 0xFFFFF000u);", "precision",
           _EXP_11BIT),
)


_EXP_MUTANTS = (
    Mutant("exp_poly_truncated_vulkan", "vulkan", "r * (1.0 / 24.0 + r * (1.0 / 120.0",
           "r * (1.0 / 24.0 + r * (0.0", "precision",
           "exp_precise's Taylor polynomial loses its r^5 / 120 term (a 'fast' exp): up to 4e-5 relative "
           "error, an NMSE of ~1e-9 that the NMSE bound passes", file="expf.glsl"),
)


# ---- the records ----------------------------------------------------------------------------------------------------
for _name, (_fn, _doc) in _UNARY.items():
    register(OpSpec(
        _name, 1, lambda xs, p, fn=_fn: fn(xs[0]), same_shape,
        domain=_unary_domain if _name != "NEG" else uniform(-1, 1), summary=_doc, elementwise=True,
        family=FAMILY, pinned=partial(unary_cases, _name), strategy=partial(d.elementwise, _name),
        ggml=_ggml(_name), perf=Case.of(_name, Input(PERF_NE)),
        mutants={"SILU": _SILU_MUTANTS, "EXP": _EXP_MUTANTS}.get(_name, ()),
        max_rel_error=None if _name == "SOFTPLUS" else UNARY_MAX_REL_ERROR))

register(OpSpec(
    "SCALE", 1, lambda xs, p: xs[0] * f32(p["s"]) + f32(p["b"]), same_shape, {"s": 1.0, "b": 0.0},
    kernel_params=lambda s, p: [f32_bits(p["s"]), f32_bits(p["b"])], summary="x * s + b", elementwise=True,
    family=FAMILY, pinned=scale_cases, strategy=scale_draws,
    ggml=GgmlCall("ggml_scale_bias", (Src(0), Param("s"), Param("b")), rules=_scale_rules),
    perf=Case.of("SCALE", Input(PERF_NE), s=0.5, b=1.0)))
register(OpSpec(
    "CLAMP", 1, lambda xs, p: np.clip(xs[0], f32(p["min"]), f32(p["max"])), same_shape,
    {"min": -1.0, "max": 1.0}, _check_clamp, lambda s, p: [f32_bits(p["min"]), f32_bits(p["max"])],
    domain=uniform(-2, 2), summary="min(max(x, min), max)", elementwise=True,
    family=FAMILY, pinned=clamp_cases, strategy=clamp_draws,
    ggml=GgmlCall("ggml_clamp", (Src(0), Param("min"), Param("max")), writes_src0=True),
    perf=Case.of("CLAMP", Input(PERF_NE), min=-0.5, max=0.5)))
