"""SOLVE_TRI: X = A^-1 B for lower-triangular A (left, lower, non-unit: ggml_solve_tri(a, b, true, true, false)).
The chunked delta net solves (I + Akk) against its gated, beta-scaled keys and values this way (kda_w, kda_u).

Kernels: backends/opencl/solve_tri.cl, backends/vulkan/solve_tri.comp, backends/cuda/solve_tri.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input
from ..tensor import DType
from . import draw as d
from .ggml_call import GgmlCall, Lit, Src, contiguous, requires
from .spec import Mutant, OpSpec, check_square, register

F32 = DType.F32
FAMILY = "solve_tri"


def _solve_tri_domain(rng, shape, i, p, shapes=None):
    if i == 1:  # right-hand sides
        return rng.uniform(-1, 1, shape)
    n = shape[-1]
    # Lower part scaled by 1/sqrt(n) so forward substitution stays well conditioned (KDA's I + Akk is like this);
    # the upper part is garbage the kernel must never read.
    a = rng.uniform(-1, 1, shape) / np.sqrt(n)
    idx = np.arange(n)
    a[..., idx, idx] = rng.uniform(0.1, 1.0, shape[:-1])
    return a


def _check_solve_tri(srcs, p):
    a, b = srcs
    check_square([a], p)
    if b.ne[1] != a.ne[0] or b.ne[2:] != a.ne[2:]:
        raise ValueError(f"SOLVE_TRI needs A [n,n,b2,b3] and B [k,n,b2,b3], got A {a.describe()}, B {b.describe()}")


def _solve_tri_ref(xs, p):
    a, b = xs
    return np.linalg.solve(np.tril(a), b)


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def solve_tri_cases():
    shapes = [(64, k) for k in (10, 64, 200, 384)] + [(79, 417)] + [(80, k) for k in (79, 80, 81)] \
        + [(128, k) for k in (31, 32)]
    return [Case.of("SOLVE_TRI", Input((n, n)), Input((k, n))) for n, k in shapes] \
        + [Case.of("SOLVE_TRI", Input((64, 64, 2, 3)), Input((64, 64, 2, 3)))]


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def solve_tri(draw):
    n = draw(st.sampled_from([1, 2, 3, 16, 17, 31, 64, 65, 80]))
    k = draw(st.sampled_from([1, 2, 7, 32, 33, 100]))
    b2, b3 = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2]))
    a_ne, b_ne = (n, n, b2, b3), (k, n, b2, b3)
    return Case.of("SOLVE_TRI", Input(a_ne, layout=draw(d.layouts(a_ne))), Input(b_ne, layout=draw(d.layouts(b_ne))),
                   seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
_ggml_rules = requires((0, "A", contiguous, "ggml_solve_tri asserts ggml_is_contiguous(a)"),
                       (1, "B", contiguous, "ggml_solve_tri asserts ggml_is_contiguous(b)"))


# ---- the records ----------------------------------------------------------------------------------------------------
# KDA's shape: 64x64 per chunk, 32 heads x 64 chunks.
register(OpSpec(
    "SOLVE_TRI", 2, _solve_tri_ref, lambda s, p: (F32, s[1].ne), check=_check_solve_tri, domain=_solve_tri_domain,
    flops=lambda s, d, p: s[0].ne[0] * s[0].ne[0] * s[1].ne[0] * s[1].ne[2] * s[1].ne[3],
    summary="X = A^-1 B, A lower triangular with its own diagonal (left, lower, non-unit)",
    family=FAMILY, pinned=solve_tri_cases, strategy=solve_tri,
    ggml=GgmlCall("ggml_solve_tri", (Src(0), Src(1), Lit(True, "left"), Lit(True, "lower"), Lit(False, "uni")),
                  rules=_ggml_rules),
    perf=Case.of("SOLVE_TRI", Input((64, 64, 32, 64)), Input((64, 64, 32, 64))),
    mutants=(
        Mutant("solve_tri_odd_term_dropped_opencl", "opencl",
               "if (j < i) s0 -= arow[j * a0] * vload8(0, xb + j * x1);",
               "if (j + 1 < i) s0 -= arow[j * a0] * vload8(0, xb + j * x1);", "hole",
               "the two-accumulator loop's leftover term (odd i) is never subtracted: rows of odd index miss "
               "A[i][i-1] X[i-1]"),
        Mutant("solve_tri_share_a_term_dropped_vulkan", "vulkan", "TERM(6); TERM(7);", "TERM(6);", "hole",
               "the shared-A broadcast loop subtracts 7 of every 8 terms: A[i][j] X[j] for j = 7 mod 8 is lost"),
    )))
