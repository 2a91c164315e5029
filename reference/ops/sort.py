"""ARGSORT and TOP_K: i32 indices that sort each row (ASC or DESC), and the indices of each row's k largest (the MoE
router's expert choice). Several answers are right among ties, so both are verified by property, not by value.

Kernels: backends/opencl/sort.cl, backends/vulkan/sort.comp, backends/cuda/sort.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input
from ..tensor import DType
from . import draw as d
from .ggml_call import Enum, GgmlCall, Param, Src, contiguous_n, dense_nb0, need
from .spec import Mutant, OpSpec, register

I32 = DType.I32
FAMILY = "sort"


def _rows_sorted(got, ref, xs, p):
    """ARGSORT: each row a permutation whose values come out in order (any order among ties is right)."""
    a = xs[0]
    idx = got.astype(np.int64)
    n = a.shape[-1]
    if (np.sort(idx, axis=-1) != np.arange(n)).any():
        return ["a row of the output is not a permutation of 0..ne0-1"]
    vals = np.take_along_axis(a, idx, axis=-1)
    steps = np.diff(vals, axis=-1)
    bad = steps < 0 if p["order"] == "ASC" else steps > 0
    return [f"{int(bad.sum())} neighbouring pairs out of {p['order']} order"] if bad.any() else []


def _top_k_set(got, ref, xs, p):
    """TOP_K: k distinct in-range indices whose values are all >= every value left out (ties at the edge either way)."""
    a = xs[0]
    idx = got.astype(np.int64)
    n = a.shape[-1]
    if (idx < 0).any() or (idx >= n).any():
        return ["an index out of range"]
    if (np.diff(np.sort(idx, axis=-1), axis=-1) == 0).any():
        return ["an index chosen twice in a row"]
    chosen = np.take_along_axis(a, idx, axis=-1)
    mask = np.ones(a.shape, dtype=bool)
    np.put_along_axis(mask, idx, False, axis=-1)
    left_max = np.where(mask, a, -np.inf).max(axis=-1)
    bad = chosen.min(axis=-1) < left_max
    return [f"{int(bad.sum())} row(s) chose a value below one left out"] if bad.any() else []


def _check_order(srcs, p):
    if p["order"] not in ("ASC", "DESC"):
        raise ValueError(f"ARGSORT order must be ASC or DESC, got {p['order']!r}")


def _check_top_k(srcs, p):
    if not 1 <= p["k"] <= srcs[0].ne[0]:
        raise ValueError(f"TOP_K needs 1 <= k <= ne0 ({srcs[0].ne[0]}), got k={p['k']}")


def _rows(rng, shape, i, p, shapes=None):
    """Even rows (flat over ne1, ne2, ne3) hold distinct values, a shuffled arange scaled (exact in float32): only
    one answer is right there, so an index chosen one place off (the k-th of TOP_K, a neighbour swap) fails even
    where ties would have let it pass. Odd rows hold values on a grid of 8, so even short rows have ties (as
    near-tied router scores do), which the tie-tolerant checks (_rows_sorted, _top_k_set) accept in any order."""
    n = shape[-1]
    rows = rng.integers(-4, 4, shape).reshape(-1, n) / 8.0 if n else np.zeros((0, 0))
    for r in range(0, rows.shape[0], 2):
        rows[r] = (rng.permutation(n) - n // 2) / 8.0
    return rows.reshape(shape)


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def sort_cases(op):
    widths = (7, 8, 15, 16, 1023, 1024, 1025, 2047, 2048, 2049)
    if op == "ARGSORT":
        return [Case.of(op, Input((n, 3)), order=o) for n in widths for o in ("ASC", "DESC")]
    return [Case.of(op, Input((n, 3)), k=k) for n in widths for k in (1, 8) if k <= n] \
        + [Case.of(op, Input((256, r)), k=8) for r in (1, 5, 32)]  # Kimi's router: 8 of 256 experts


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def sort_rows(draw, op):
    ne = draw(d.shapes(row_sizes=[1, 2, 3, 7, 8, 15, 16, 17, 64, 255, 256, 1025], max_elements=1 << 14))
    params = {"order": draw(st.sampled_from(["ASC", "DESC"]))} if op == "ARGSORT" else \
        {"k": draw(st.integers(1, min(ne[0], 16)))}
    return Case.of(op, Input(ne, layout=draw(d.layouts(ne))), seed=draw(d.seeds()), **params)


# ---- ggml ---------------------------------------------------------------------------------------------------------
def _ggml_rules(op: str):
    def rules(s, p) -> list[str]:
        f: list[str] = []
        # the kernel walks rows as src0->data + i*nb01 over ggml_nrows: dims 2, 3 must continue dim 1's stride
        need(dense_nb0(s[0]) and contiguous_n(s[0], 1),
             f"ggml_compute_forward_{op}_f32 reads row i at src0->data + i*nb01 with dense elements "
             f"(ggml_is_contiguous_1 layout, not asserted: any other layout is misread); a is {s[0].describe()}", f)
        return f
    return rules


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "ARGSORT", 1, lambda xs, p: np.argsort(xs[0] if p["order"] == "ASC" else -xs[0], axis=-1, kind="stable"),
    lambda s, p: (I32, s[0].ne), {"order": "ASC"}, _check_order,
    lambda s, p: [0 if p["order"] == "ASC" else 1], domain=_rows, verify=_rows_sorted,
    summary="i32 indices that sort each row (ASC or DESC; ties in any order)",
    family=FAMILY, pinned=lambda: sort_cases("ARGSORT"), strategy=lambda: sort_rows("ARGSORT"),
    ggml=GgmlCall("ggml_argsort", (Src(0), Enum("GGML_SORT_ORDER_", "order")), rules=_ggml_rules("argsort")),
    perf=Case.of("ARGSORT", Input((256, 16384)), order="DESC"),
    mutants=(
        Mutant("argsort_rank_ties_vulkan", "vulkan", "bool b = MODE == 0 ? BEFORE_EQ(y, x[c])",
               "bool b = MODE == 0 ? BEFORE(y, x[c])", "wrong-op",
               "rank counting (rows longer than one subgroup pass) does not count equal earlier elements: tied "
               "elements share a rank, so one position is written twice and another never"),
    )))
register(OpSpec(
    "TOP_K", 1, lambda xs, p: np.argsort(-xs[0], axis=-1, kind="stable")[..., :p["k"]],
    lambda s, p: (I32, (p["k"], *s[0].ne[1:])), {"k": 1}, _check_top_k, lambda s, p: [p["k"]],
    domain=_rows, verify=_top_k_set,
    summary="i32 indices of the k largest of each row (a set: any order, ties at the edge either way)",
    family=FAMILY, pinned=lambda: sort_cases("TOP_K"), strategy=lambda: sort_rows("TOP_K"),
    ggml=GgmlCall("ggml_top_k", (Src(0), Param("k")), rules=_ggml_rules("top_k")),
    perf=Case.of("TOP_K", Input((256, 16384)), k=8),
    mutants=(
        Mutant("top_k_prune_from_one_opencl", "opencl", "for (int i = 0; i < KP; ++i) {",
               "for (int i = 1; i < KP; ++i) {", "off-by-one",
               "the bitonic top-k prune loop starts at 1: key 0 of each pruned block is left as it was, so the "
               "block's k-th choice can be the (k+1)-th largest, a stale or a repeated key (k = 1: nothing pruned)"),
        Mutant("top_k_merge_one_stage_short_opencl", "opencl",
               "for (int j = KP / 2; j > 0; j >>= 1) cx_step(v, len, j, KP);",
               "for (int j = KP / 2; j > 1; j >>= 1) cx_step(v, len, j, KP);", "off-by-one",
               "the re-merge after each top-k prune stops one stage early (j > 1): neighbouring keys stay unordered, "
               "so the next prune can keep the (k+1)-th largest in place of the k-th (on one router row, 256 "
               "experts and k = 8: wrong in ~60% of distinct rows, ~40% of rows with ties)"),
        Mutant("top_k_keep_off_by_one_vulkan", "vulkan", "rank[c] < keep)", "rank[c] <= keep)", "out-of-bounds",
               "rank counting (rows past one subgroup pass) stores ranks 0..k, one index past the k of the row: it "
               "lands in the next row or past the output"),
        Mutant("top_k_tie_break_lost_vulkan", "vulkan", "return BEFORE(w, v) || (v == w && i > j);",
               "return BEFORE(w, v);", "wrong-op",
               "the bitonic network compares values only, not (value, index) keys: for a tied pair both sides of a "
               "compare-exchange keep the same key, so an index is chosen twice and another lost"),
    )))
