"""REPEAT, PAD and CONCAT: copies that change a tensor's shape, not its values - tile a up to a shape, zero-pad each
dim at its end, a then b along a dim (the chunked delta net's and MLA's building blocks).

Kernels: backends/opencl/layout.cl, backends/vulkan/layout.comp (CONCAT: backends/vulkan/concat.comp),
backends/cuda/layout.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from . import draw as d
from .ggml_call import GgmlCall, Param, Src, dense_nb0, requires
from .spec import PERF_NE, Mutant, OpSpec, ints, register

FAMILY = "layout"


def _check_repeat_to(srcs, p):
    if any(n % m if m else n for n, m in zip(p["ne"], srcs[0].ne)):
        raise ValueError(f"REPEAT needs a 4-entry ne that is a multiple of {list(srcs[0].ne)}, got {list(p['ne'])}")


def _check_pad(srcs, p):
    if any(v < 0 for v in p["pad"]) or len(p["pad"]) != 4:
        raise ValueError(f"PAD takes 4 non-negative pads, got {p['pad']}")


def _check_concat(srcs, p):
    a, b = srcs
    dim = p["dim"]
    if dim not in range(4) or any(a.ne[i] != b.ne[i] for i in range(4) if i != dim) or a.dtype != b.dtype:
        raise ValueError(f"CONCAT along dim {dim} needs equal other dims and types: a {a.describe()}, "
                         f"b {b.describe()}")


def _concat_out(s, p):
    return s[0].dtype, tuple(a + b if i == p["dim"] else a for i, (a, b) in enumerate(zip(s[0].ne, s[1].ne)))


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def repeat_cases():
    return [Case.of("REPEAT", Input(ne), ne=(10, 6, 4, 3)) for ne in ((10, 1, 4, 1), (1, 1, 1, 1), (5, 3, 2, 3))] \
        + [Case.of("REPEAT", Input((5, 3, 2), layout=Layout(permute=(1, 0, 2, 3))), ne=(10, 6, 4, 2))]


def pad_cases():
    return [Case.of("PAD", Input((10, 5, 4, 3)), pad=(2, 0, 3, 1)),
            Case.of("PAD", Input((64, 33, 2), layout=Layout(permute=(0, 2, 1, 3))), pad=(0, 0, 31, 0)),
            Case.of("PAD", Input((16, 3, 5, 4), layout=Layout(permute=(1, 0, 2, 3))), pad=(3, 3, 1, 2))]


def concat_cases():
    return [Case.of("CONCAT", Input(a), Input(b), dim=dim) for dim, a, b in
            ((0, (10, 5, 4, 3), (7, 5, 4, 3)), (1, (10, 5, 4, 3), (10, 2, 4, 3)), (2, (10, 5, 4, 3), (10, 5, 1, 3)),
             (3, (10, 5, 4, 3), (10, 5, 4, 2)))] \
        + [Case.of("CONCAT", Input((10, 5, 4), layout=Layout(permute=(1, 0, 2, 3))),
                   Input((10, 3, 4), layout=Layout(pad=(1, 0, 0, 0), offset=2)), dim=1)] \
        + [Case.of("CONCAT", Input((8, 5, 4, 3)), Input(b), dim=dim)  # ne0 % 4 == 0: Vulkan's VEC4 path, dims 1-3
           for dim, b in ((1, (8, 2, 4, 3)), (2, (8, 5, 1, 3)), (3, (8, 5, 4, 2)))]


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def repeat(draw):
    a = draw(d.shapes(max_elements=1 << 12))
    reps = [draw(st.sampled_from([1, 2, 3])) for _ in range(4)]
    return Case.of("REPEAT", Input(a, layout=draw(d.layouts(a))), ne=tuple(n * r for n, r in zip(a, reps)),
                   seed=draw(d.seeds()))


@st.composite
def pad(draw):
    a = draw(d.shapes(max_elements=1 << 14))
    return Case.of("PAD", Input(a, layout=draw(d.layouts(a))), pad=tuple(draw(st.sampled_from([0, 1, 3, 17]))
                                                                          for _ in range(4)), seed=draw(d.seeds()))


@st.composite
def concat(draw):
    a = draw(d.shapes(max_elements=1 << 14))
    dim = draw(st.integers(0, 3))
    b = tuple(draw(st.sampled_from([1, 2, 5])) if i == dim else n for i, n in enumerate(a))
    return Case.of("CONCAT", Input(a, layout=draw(d.layouts(a))), Input(b, layout=draw(d.layouts(b))), dim=dim,
                   seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
_repeat_rules = requires((0, "a", dense_nb0, "ggml_compute_forward_repeat_f32 asserts nb00 == sizeof(float)"))


# PAD and CONCAT: ggml asserts nothing about the sources' layouts.
_GGML_REPEAT = GgmlCall("ggml_repeat_4d", (Src(0), Param("ne")), rules=_repeat_rules)
_GGML_PAD = GgmlCall("ggml_pad", (Src(0), Param("pad")))
_GGML_CONCAT = GgmlCall("ggml_concat", (Src(0), Src(1), Param("dim")))


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "REPEAT", 1, lambda xs, p: np.tile(xs[0], [n // m for n, m in zip(reversed(p["ne"]), xs[0].shape)]),
    lambda s, p: (s[0].dtype, tuple(p["ne"])), {"ne": None}, _check_repeat_to,
    flops=lambda s, d, p: 0, kinds={"ne": ints(4)}, summary="tile a up to ne (each ne a multiple of a's)",
    family=FAMILY, pinned=repeat_cases, strategy=repeat, ggml=_GGML_REPEAT,
    perf=Case.of("REPEAT", Input((PERF_NE[0], PERF_NE[1] // 4)), ne=(*PERF_NE, 1, 1))))
register(OpSpec(
    "PAD", 1, lambda xs, p: np.pad(xs[0], [(0, v) for v in reversed(p["pad"])]),
    lambda s, p: (s[0].dtype, tuple(n + v for n, v in zip(s[0].ne, p["pad"]))), {"pad": (0, 0, 0, 0)},
    _check_pad, lambda s, p: list(p["pad"]), flops=lambda s, d, p: 0, summary="zero-pad at the end of each dim",
    family=FAMILY, pinned=pad_cases, strategy=pad, ggml=_GGML_PAD,
    perf=Case.of("PAD", Input((PERF_NE[0], PERF_NE[1] - 1)), pad=(0, 1, 0, 0))))
register(OpSpec(
    "CONCAT", 2, lambda xs, p: np.concatenate(xs, axis=3 - p["dim"]), _concat_out, {"dim": 0}, _check_concat,
    lambda s, p: [p["dim"]], flops=lambda s, d, p: 0, summary="a then b along dim",
    family=FAMILY, pinned=concat_cases, strategy=concat, ggml=_GGML_CONCAT,
    perf=Case.of("CONCAT", Input((PERF_NE[0], PERF_NE[1] // 2)), Input((PERF_NE[0], PERF_NE[1] // 2)), dim=1),
    mutants=(
        Mutant("concat_shift_dim1_opencl", "opencl", "if (!from_a) i[dim] -= NE(T_A, dim);",
               "if (!from_a) i[dim] -= NE(T_A, 1);", "wrong-op",
               "b's index shifted back by a's ne1 (the KV-cache concat's dim) whatever dim the op concatenates along"),
        Mutant("concat_vec4_unshifted_vulkan", "vulkan", "S14[at(i - shift, nb_1, off_1) >> 2]",
               "S14[at(i, nb_1, off_1) >> 2]", "out-of-bounds",
               "VEC4 path read b at dst's index, not shifted back by a's extent along dim: past b's end"),
    )))
