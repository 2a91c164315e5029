"""SOFT_MAX_EXT: softmax(a * scale + mask) along ne0, the mask's rows and planes broadcast over a's (attention
scores; max_bias 0, so no ALiBi).

Kernels: backends/opencl/softmax.cl, backends/vulkan/softmax.comp, backends/cuda/softmax.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from . import draw as d
from .ggml_call import GgmlCall, Lit, Param, Src, contiguous, requires
from .spec import PERF_NE, Mutant, OpSpec, f32, f32_bits, register, same_shape

FAMILY = "softmax"


def _check_soft_max(srcs, p):
    a, mask = srcs
    if mask.ne[0] != a.ne[0] or mask.ne[1] < a.ne[1] or a.ne[2] % mask.ne[2] or a.ne[3] % mask.ne[3]:
        raise ValueError(f"SOFT_MAX_EXT needs a mask [ne0, >= ne1, divisor of ne2, divisor of ne3]: a {a.describe()}, "
                         f"mask {mask.describe()}")


def _soft_max_ref(xs, p):
    a, mask = xs
    m = mask[..., :a.shape[-2], :]
    m = np.tile(m, [x // y for x, y in zip(a.shape[:2], m.shape[:2])] + [1, 1])
    with np.errstate(invalid="ignore"):
        z = a * f32(p["scale"]) + m
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)


def _soft_max_domain(rng, shape, i, p, shapes=None):
    """Scores in [-1, 1], every third row shifted so that a * scale is about 100 (exp overflows float32 there
    unless the row max is subtracted first); the mask mixes finite values and -inf (a causal mask's), never a whole
    row of -inf."""
    if i == 0:
        a = rng.uniform(-1, 1, shape)
        rows = a.reshape(-1, shape[-1]) if a.size else a.reshape(0, 1)
        rows[1::3] += 100.0 / f32(p["scale"]) if p["scale"] else 0.0
        return a
    m = rng.uniform(-1, 1, shape)
    m[rng.random(shape) < 0.3] = -np.inf
    m[..., 0] = 0.0
    return m


# exp(z - max) / sum: a few ulp where z is O(1); where z ~ 100 (the shifted rows) z itself is only known to float32's
# 7.6e-6 absolute, so exp(z - max) to ~1.5e-5 relative (ggml computes z the same way).
SOFT_MAX_REL_ERROR = 1e-4


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def soft_max_cases():
    return [Case.of("SOFT_MAX_EXT", Input((n, r, h)), Input((n, r)), scale=sc)
            for n, r, h in ((16, 16, 4), (1023, 5, 2), (64, 8, 3)) for sc in (1.0, 0.0721)] \
        + [Case.of("SOFT_MAX_EXT", Input((32, 4, 2), layout=Layout(permute=(0, 2, 1, 3))), Input((32, 8)), scale=0.5)]


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def soft_max(draw):
    a = draw(d.shapes(min_dims=2))
    mask = (a[0], a[1] + draw(st.sampled_from([0, 3])), draw(st.sampled_from(sorted({1, a[2]}))),
            draw(st.sampled_from(sorted({1, a[3]}))))
    return Case.of("SOFT_MAX_EXT", Input(a, layout=draw(d.layouts(a))), Input(mask, layout=draw(d.layouts(mask))),
                   scale=draw(d.finite_float(0.0625, 2)), seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
_ggml_rules = requires((0, "a", contiguous, "ggml_soft_max_impl asserts ggml_is_contiguous(a)"),
                       (1, "mask", contiguous, "ggml_soft_max_impl asserts ggml_is_contiguous(mask)"))


_GGML = GgmlCall("ggml_soft_max_ext", (Src(0), Src(1), Param("scale"), Lit(0.0, "max_bias")), rules=_ggml_rules)


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "SOFT_MAX_EXT", 2, _soft_max_ref, same_shape, {"scale": 1.0}, _check_soft_max,
    lambda s, p: [f32_bits(p["scale"])], domain=_soft_max_domain, nmse=1e-6,
    flops=lambda s, d, p: 4 * d.nelements,
    summary="softmax(a * scale + mask) along ne0; mask rows/planes broadcast (max_bias 0)",
    family=FAMILY, pinned=soft_max_cases, strategy=soft_max, ggml=_GGML,
    perf=Case.of("SOFT_MAX_EXT", Input(PERF_NE), Input(PERF_NE), scale=0.0721), max_rel_error=SOFT_MAX_REL_ERROR,
    mutants=(
        Mutant("soft_max_partial_sum_dropped_opencl", "opencl",
               "for (int l = 0; l < lsz; ++l) total +=", "for (int l = 1; l < lsz; ++l) total +=", "hole",
               "work item 0 combines the segment sums from segment 1 on, dropping segment 0's: every row's "
               "denominator is short"),
        Mutant("soft_max_no_max_subtraction_vulkan", "vulkan",
               "mx = subgroupMax(mx);\n        float part = 0.0;\n#if defined(ROWCACHE)",
               "mx = 0.0;\n        float part = 0.0;\n#if defined(ROWCACHE)", "wrong-op",
               "the row max is not subtracted before exp (VEC4 path): exp(z) overflows to inf for scores past "
               "88.7 and the row becomes inf / inf = NaN; equal to softmax only while scores stay small"),
    )))
