"""Hypothesis strategies: shapes (1-4 dims; 1, primes, sizes past a workgroup), views (contiguous, permuted, sliced
at an offset, padded strides) and one case strategy per op, drawn within the op's rules.

`cases_for(op, backend)` draws only cases whose layouts the backend claims: each drawn case is narrowed, input by
input, to the closest layout that `backend.supports()` accepts (see `claimed`), so a backend that needs some inputs
contiguous (ggml) is tested on as many views as it takes instead of having most draws rejected."""
from __future__ import annotations

import itertools

import numpy as np
from hypothesis import strategies as st

from reference.case import CONTIGUOUS, Case, Input, Layout
from reference.node import make_node
from reference.ops import REGISTRY, TRI_TYPES
from reference.tensor import DType, Tensor, contiguous_strides

from .harness import GUARD

F32, F16, I32 = DType.F32, DType.F16, DType.I32

# Row lengths that catch tile and workgroup edges: 1, primes, powers of two and their neighbours.
ROW_SIZES = [1, 2, 3, 5, 7, 8, 13, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 1023, 1025,
             4097]
OUTER_SIZES = [1, 2, 3, 4, 5, 7]
MAX_ELEMENTS = 1 << 16


@st.composite
def shapes(draw, min_dims=1, max_elements=MAX_ELEMENTS, row_sizes=ROW_SIZES):
    dims = draw(st.integers(min_dims, 4))
    ne = [draw(st.sampled_from(row_sizes))] + [draw(st.sampled_from(OUTER_SIZES)) for _ in range(dims - 1)]
    ne += [1] * (4 - dims)
    while np.prod(ne) > max_elements:  # shrink the largest outer dim, then the row
        i = int(np.argmax(ne[1:])) + 1 if max(ne[1:]) > 1 else 0
        ne[i] = max(1, ne[i] // 2)
    return tuple(ne)


@st.composite
def layouts(draw, ne, allow_permute=True, fixed_dims=()):
    """A way to lay out a tensor of logical `ne`; `fixed_dims` stay in place under permutation."""
    kinds = ["contiguous", "padded"] + (["permuted", "permuted+padded"] if allow_permute else [])
    kind = draw(st.sampled_from(kinds))
    permute = None
    if "permuted" in kind:
        free = [d for d in range(4) if d not in fixed_dims]
        order = draw(st.permutations(free))
        axes = list(range(4))
        for d, to in zip(free, order):
            axes[d] = to
        permute = tuple(axes) if axes != [0, 1, 2, 3] else None
    pad, offset = (0, 0, 0, 0), 0
    if "padded" in kind:
        pad = tuple(draw(st.sampled_from([0, 0, 1, 3, 16])) for _ in range(4))
        offset = draw(st.sampled_from([0, 1, 5, 64]))
    return Layout(permute, pad, offset)


def seeds():
    return st.integers(0, 2**32 - 1)


@st.composite
def elementwise(draw, op, dtypes=(F32,), row_sizes=ROW_SIZES, **params):
    ne = draw(shapes(row_sizes=row_sizes))
    dtype = draw(st.sampled_from(dtypes))
    return Case.of(op, Input(ne, dtype, draw(layouts(ne))), seed=draw(seeds()), **params)


@st.composite
def binary(draw, op):
    a = draw(shapes())
    b = tuple(draw(st.sampled_from(sorted({1, n} | {d for d in (2, 3, 5) if n % d == 0})) ) for n in a)
    return Case.of(op, Input(a, layout=draw(layouts(a))), Input(b, layout=draw(layouts(b))), seed=draw(seeds()))


@st.composite
def square(draw, op, **params):
    n = draw(st.sampled_from([1, 2, 3, 7, 16, 17, 33, 64, 65]))
    ne = (n, n, draw(st.sampled_from(OUTER_SIZES)), draw(st.sampled_from([1, 2, 3])))
    return Case.of(op, Input(ne, layout=draw(layouts(ne))), seed=draw(seeds()), **params)


@st.composite
def diag(draw):
    ne = (draw(st.sampled_from([1, 2, 5, 16, 33, 129])), 1, draw(st.sampled_from(OUTER_SIZES)), draw(st.sampled_from([1, 2])))
    return Case.of("DIAG", Input(ne, layout=draw(layouts(ne))), seed=draw(seeds()))


@st.composite
def solve_tri(draw):
    n = draw(st.sampled_from([1, 2, 3, 16, 17, 31, 64, 65, 80]))
    k = draw(st.sampled_from([1, 2, 7, 32, 33, 100]))
    b2, b3 = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2]))
    a_ne, b_ne = (n, n, b2, b3), (k, n, b2, b3)
    return Case.of("SOLVE_TRI", Input(a_ne, layout=draw(layouts(a_ne))), Input(b_ne, layout=draw(layouts(b_ne))),
                   seed=draw(seeds()))


@st.composite
def ssm_conv(draw):
    d_conv = draw(st.sampled_from([2, 3, 4, 9]))
    d_inner = draw(st.sampled_from([1, 3, 32, 33, 128, 257]))
    n_t = draw(st.sampled_from([1, 2, 31, 32, 33, 64, 65]))
    n_s = draw(st.sampled_from([1, 2, 4]))
    sx = (d_conv - 1 + n_t, d_inner, n_s, 1)
    c = (d_conv, d_inner, 1, 1)
    return Case.of("SSM_CONV", Input(sx, layout=draw(layouts(sx, fixed_dims=(3,)))),
                   Input(c, layout=draw(layouts(c, fixed_dims=(2, 3)))), seed=draw(seeds()))


@st.composite
def block(draw, op):
    """ACC/SET: b written into contiguous a at byte strides and offset drawn inside a."""
    dtype = F32 if op == "ACC" else draw(st.sampled_from([F32, I32]))
    a = draw(shapes())
    b = tuple(draw(st.integers(1, n)) for n in a)
    nb = contiguous_strides(dtype, a)
    origin = [draw(st.integers(0, an - bn)) for an, bn in zip(a, b)]
    offset = sum(o * s for o, s in zip(origin, nb))
    return Case.of(op, Input(a, dtype), Input(b, dtype, draw(layouts(b))), seed=draw(seeds()),
                   nb1=nb[1], nb2=nb[2], nb3=nb[3], offset=offset, inplace=draw(st.booleans()))


@st.composite
def cpy(draw):
    src = draw(st.sampled_from([F32, F16]))
    ne = draw(shapes())
    n = int(np.prod(ne))
    dst_ne = draw(st.sampled_from([None, [n], [ne[0], n // ne[0]]]))
    return Case.of("CPY", Input(ne, src, draw(layouts(ne))), seed=draw(seeds()),
                   dtype=draw(st.sampled_from(["f32", "f16"])), ne=dst_ne)


@st.composite
def mul_mat(draw):
    k = draw(st.sampled_from([1, 2, 16, 31, 64, 65, 128, 257]))
    n, m = draw(st.sampled_from([1, 2, 5, 16, 33, 64])), draw(st.sampled_from([1, 2, 7, 16, 33]))
    a2, a3 = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    b2, b3 = a2 * draw(st.sampled_from([1, 3])), a3 * draw(st.sampled_from([1, 2]))
    a, b = (k, n, a2, a3), (k, m, b2, b3)
    return Case.of("MUL_MAT", Input(a, draw(st.sampled_from([F32, F16])), draw(layouts(a))),
                   Input(b, F32, draw(layouts(b))), seed=draw(seeds()))


@st.composite
def repeat(draw):
    a = draw(shapes(max_elements=1 << 12))
    reps = [draw(st.sampled_from([1, 2, 3])) for _ in range(4)]
    return Case.of("REPEAT", Input(a, layout=draw(layouts(a))), ne=tuple(n * r for n, r in zip(a, reps)),
                   seed=draw(seeds()))


@st.composite
def pad(draw):
    a = draw(shapes(max_elements=1 << 14))
    return Case.of("PAD", Input(a, layout=draw(layouts(a))), pad=tuple(draw(st.sampled_from([0, 1, 3, 17]))
                                                                        for _ in range(4)), seed=draw(seeds()))


@st.composite
def gated_delta_net(draw):
    from .upstream import gdn_inputs

    S, H = draw(st.sampled_from([1, 2, 16, 32, 64])), draw(st.sampled_from([1, 2, 4]))
    h_k = draw(st.sampled_from(sorted({1, H // 2 or 1, H})))
    return Case.of("GATED_DELTA_NET", *gdn_inputs(S, H, draw(st.sampled_from([1, 2, 33, 65])),
                                                 draw(st.sampled_from([1, 2])), draw(st.booleans()), h_k,
                                                 draw(st.booleans())), seed=draw(seeds()))


@st.composite
def mul_mat_id(draw):
    k, n = draw(st.sampled_from([1, 16, 33, 64, 128])), draw(st.sampled_from([1, 5, 32, 65]))
    n_exp = draw(st.sampled_from([1, 2, 4, 8]))
    n_used = draw(st.sampled_from([1, 2, 4]))
    n_b1 = draw(st.sampled_from(sorted({1, n_used})))
    tokens = draw(st.sampled_from([1, 2, 5, 17]))
    w, b, ids = (k, n, n_exp, 1), (k, n_b1, tokens, 1), (n_used, tokens, 1, 1)
    return Case.of("MUL_MAT_ID", Input(w, draw(st.sampled_from([F32, F16])), draw(layouts(w, fixed_dims=(3,)))),
                   Input(b, F32, draw(layouts(b, fixed_dims=(3,)))), Input(ids, I32, draw(layouts(ids, fixed_dims=(2, 3)))),
                   seed=draw(seeds()))


@st.composite
def get_rows(draw):
    a = (draw(st.sampled_from([1, 3, 64, 129])), draw(st.sampled_from([1, 2, 17])), draw(st.sampled_from([1, 2])),
         draw(st.sampled_from([1, 3])))
    ids = (draw(st.sampled_from([1, 2, 9, 33])), a[2], a[3], 1)
    return Case.of("GET_ROWS", Input(a, draw(st.sampled_from([F32, F16])), draw(layouts(a))),
                   Input(ids, I32, draw(layouts(ids, fixed_dims=(3,)))), seed=draw(seeds()))


@st.composite
def sort_rows(draw, op):
    ne = draw(shapes(row_sizes=[1, 2, 3, 7, 8, 15, 16, 17, 64, 255, 256, 1025], max_elements=1 << 14))
    params = {"order": draw(st.sampled_from(["ASC", "DESC"]))} if op == "ARGSORT" else \
        {"k": draw(st.integers(1, min(ne[0], 16)))}
    return Case.of(op, Input(ne, layout=draw(layouts(ne))), seed=draw(seeds()), **params)


@st.composite
def soft_max(draw):
    a = draw(shapes(min_dims=2))
    mask = (a[0], a[1] + draw(st.sampled_from([0, 3])), draw(st.sampled_from(sorted({1, a[2]}))),
            draw(st.sampled_from(sorted({1, a[3]}))))
    return Case.of("SOFT_MAX_EXT", Input(a, layout=draw(layouts(a))), Input(mask, layout=draw(layouts(mask))),
                   scale=draw(_finite_float(0.0625, 2)), seed=draw(seeds()))


@st.composite
def concat(draw):
    a = draw(shapes(max_elements=1 << 14))
    dim = draw(st.integers(0, 3))
    b = tuple(draw(st.sampled_from([1, 2, 5])) if i == dim else n for i, n in enumerate(a))
    return Case.of("CONCAT", Input(a, layout=draw(layouts(a))), Input(b, layout=draw(layouts(b))), dim=dim,
                   seed=draw(seeds()))


def _finite_float(lo, hi):
    return st.floats(lo, hi, allow_nan=False, width=32)


STRATEGIES = {
    "MUL_MAT_ID": mul_mat_id, "GET_ROWS": get_rows, "SOFT_MAX_EXT": soft_max, "CONCAT": concat,
    "ARGSORT": lambda: sort_rows("ARGSORT"), "TOP_K": lambda: sort_rows("TOP_K"),
    "SUM_ROWS": lambda: elementwise("SUM_ROWS"),
    "CLAMP": lambda: st.tuples(_finite_float(-2, 0), _finite_float(0, 2)).flatmap(
        lambda mm: elementwise("CLAMP", min=mm[0], max=mm[1])),
    "MUL_MAT": mul_mat, "REPEAT": repeat, "PAD": pad, "GATED_DELTA_NET": gated_delta_net,
    "ACC": lambda: block("ACC"),
    "SET": lambda: block("SET"),
    "CUMSUM": lambda: elementwise("CUMSUM", row_sizes=ROW_SIZES + [8191, 20481]),
    "TRI": lambda: st.sampled_from(list(TRI_TYPES)).flatmap(lambda t: square("TRI", type=t)),
    "FILL": lambda: st.tuples(_finite_float(-1e3, 1e3), st.booleans()).flatmap(
        lambda ci: elementwise("FILL", c=ci[0], inplace=ci[1])),
    "DIAG": diag,
    "SOLVE_TRI": solve_tri,
    "SSM_CONV": ssm_conv,
    "L2_NORM": lambda: st.sampled_from([0.0, 1e-6, 1e-4, 0.1, 10.0]).flatmap(lambda e: elementwise("L2_NORM", eps=e)),
    "RMS_NORM": lambda: st.sampled_from([0.0, 1e-6, 1e-5, 0.1]).flatmap(lambda e: elementwise("RMS_NORM", eps=e)),
    "SCALE": lambda: st.tuples(_finite_float(-4, 4), _finite_float(-4, 4)).flatmap(
        lambda sb: elementwise("SCALE", s=sb[0], b=sb[1])),
    "CPY": cpy,
    "CONT": lambda: elementwise("CONT", dtypes=(F32, F16)),
    **{op: (lambda op=op: elementwise(op)) for op in ("SOFTPLUS", "SIGMOID", "SILU", "EXP", "NEG")},
    **{op: (lambda op=op: binary(op)) for op in ("ADD", "SUB", "MUL", "DIV")},
}
assert set(STRATEGIES) == set(REGISTRY), "every registered op needs a strategy"


# ---- what a backend claims --------------------------------------------------------------------------------------------
# The backend's supports() is the only truth about what it runs. The strategy asks it about a drawn case on buffer-less
# descriptors laid out exactly as the harness lays the inputs out, and narrows a refused input's layout to the closest
# one it accepts. Refusals that depend on values or buffers (ggml's SOFTPLUS/SILU formula findings, Vulkan's binding
# size) cannot be seen here: those rare cases stay as drawn and test_ops.check rejects them.
def descriptor(inp: Input) -> Tensor:
    """The tensor the harness builds for `inp` (cases/harness.build_input), without a buffer or values."""
    lay = inp.layout
    store_ne = lay.storage_ne(inp.ne)
    backing_ne = tuple(n + p for n, p in zip(store_ne, lay.pad))
    t = Tensor(inp.dtype, store_ne, contiguous_strides(inp.dtype, backing_ne), lay.offset * inp.dtype.size)
    return t.permute(*lay.permute) if lay.permute else t


def refusal(backend, case: Case, impls=("default",)) -> str | None:
    """Why `backend` refuses `case` (any of `impls`), judged on the case's descriptors; None when it claims it."""
    srcs = [descriptor(inp) for inp in case.inputs]
    try:
        node = make_node(case.op, srcs, case.param_dict)
        if not node.inplace:  # in place: dst is src0's view
            node.dst = Tensor.new(node.dst.dtype, node.dst.ne, offset=GUARD)  # as harness.build_output places it
    except ValueError as invalid:
        return f"invalid: {invalid}"
    for impl in impls:
        node.impl = impl
        why = backend.supports(node)
        if why:
            return why
    return None


def _rows_in_place(permute):
    """`permute` changed so that storage dim 0 stays logical dim 0 (rows stay dense); None when that is identity."""
    if not permute or permute[0] == 0:
        return permute
    axes = list(permute)
    j = axes.index(0)
    axes[0], axes[j] = 0, axes[0]
    return tuple(axes) if axes != [0, 1, 2, 3] else None


def narrowings(lay: Layout) -> list[Layout]:
    """`lay` and the layouts made by dropping parts of it (the permutation, first only the part that moves dim 0;
    each dim's padding; the offset), the closest first: fewest parts dropped, then the permutation kept longest."""
    perms = list(dict.fromkeys([lay.permute, _rows_in_place(lay.permute), None]))
    parts = [i for i in range(4) if lay.pad[i]] + (["offset"] if lay.offset else [])
    found = []
    for lost_perm, permute in enumerate(perms):
        perm_cost = 0 if lost_perm == 0 else (1 if permute is None else 0.5)
        for n_drop in range(len(parts) + 1):
            for dropped in itertools.combinations(parts, n_drop):
                pad = tuple(0 if i in dropped else p for i, p in enumerate(lay.pad))
                offset = 0 if "offset" in dropped else lay.offset
                found.append((perm_cost + n_drop, len(found), Layout(permute, pad, offset)))
    return [layout for _, _, layout in sorted(found)]


def claimed(case: Case, backend, impls=("default",)) -> Case:
    """`case` with each input's layout narrowed to the closest one `backend` claims (all of `impls`).

    Inputs are settled in order: input i takes the first of its narrowings the backend accepts with the inputs
    before it as settled and those after it contiguous, so the last input's check is of the final case. A case the
    backend refuses for other reasons than layout (a dtype, a size) is returned as drawn."""
    if refusal(backend, case, impls) is None:
        return case
    inputs = list(case.inputs)
    for i, inp in enumerate(case.inputs):
        later = [Input(x.ne, x.dtype, CONTIGUOUS) for x in case.inputs[i + 1:]]
        for lay in narrowings(inp.layout):
            trial = Case(case.op, tuple(inputs[:i] + [Input(inp.ne, inp.dtype, lay)] + later), case.params,
                         case.seed, case.impl)
            if refusal(backend, trial, impls) is None:
                inputs[i] = trial.inputs[i]
                break
        else:
            return case
    return Case(case.op, tuple(inputs), case.params, case.seed, case.impl)


def cases_for(op: str, backend=None, impls=("default",)):
    """Cases of `op`; with a backend, only cases whose layouts it claims for every one of `impls`."""
    if backend is None:
        return STRATEGIES[op]()
    return STRATEGIES[op]().map(lambda case: claimed(case, backend, tuple(impls)))
