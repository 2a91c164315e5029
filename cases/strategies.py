"""Drawn cases for a backend. Each op's Hypothesis strategy is in its record (reference/ops/<family>.py, built from
reference/ops/draw.py); `cases_for(op, backend)` draws only cases whose layouts the backend claims: each drawn case
is narrowed, input by input, to the closest layout that `backend.supports()` accepts (see `claimed`), so a backend
that needs some inputs contiguous (ggml) is tested on as many views as it takes instead of having most draws
rejected."""
from __future__ import annotations

import itertools

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from reference.case import CONTIGUOUS, Case, Input, Layout
from reference.node import make_node
from reference.ops import get_op
from reference.tensor import Tensor

from .harness import output_offset

# ---- what a backend claims --------------------------------------------------------------------------------------------
# The backend's supports() is the only truth about what it runs. The strategy asks it about a drawn case on buffer-less
# descriptors laid out exactly as the harness lays the inputs out, and narrows a refused input's layout to the closest
# one it accepts. Refusals that depend on values or buffers (ggml's SOFTPLUS/SILU formula findings, Vulkan's binding
# size) cannot be seen here: those rare cases stay as drawn and test_ops.check rejects them.
def refusal(backend, case: Case) -> str | None:
    """Why `backend` refuses `case`, judged on the case's descriptors; None when it claims it."""
    srcs = [inp.descriptor() for inp in case.inputs]
    try:
        node = make_node(case.op, srcs, case.param_dict)
        if not node.inplace:  # in place: dst is src0's view
            node.dst = Tensor.new(node.dst.dtype, node.dst.ne, offset=output_offset(node.dst.dtype))  # as the harness
    except ValueError as invalid:
        return f"invalid: {invalid}"
    return backend.supports(node)


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


def claimed(case: Case, backend) -> Case:
    """`case` with each input's layout narrowed to the closest one `backend` claims.

    Inputs are settled in order: input i takes the first of its narrowings the backend accepts with the inputs
    before it as settled and those after it contiguous, so the last input's check is of the final case. A case the
    backend refuses for other reasons than layout (a dtype, a size) is returned as drawn."""
    if refusal(backend, case) is None:
        return case
    inputs = list(case.inputs)
    for i, inp in enumerate(case.inputs):
        later = [Input(x.ne, x.dtype, CONTIGUOUS) for x in case.inputs[i + 1:]]
        for lay in narrowings(inp.layout):
            trial = Case(case.op, tuple(inputs[:i] + [Input(inp.ne, inp.dtype, lay)] + later), case.params,
                         case.seed)
            if refusal(backend, trial) is None:
                inputs[i] = trial.inputs[i]
                break
        else:
            return case
    return Case(case.op, tuple(inputs), case.params, case.seed)


def cases_for(op: str, backend=None):
    """Cases of `op`; with a backend, only cases whose layouts it claims."""
    strategy = get_op(op).strategy()
    if backend is None:
        return strategy
    return strategy.map(lambda case: claimed(case, backend))


def examples(strategy, n: int) -> list:
    """n examples of `strategy`, the same ones on every run (whatever --hypothesis-seed says)."""
    found = []

    @settings(max_examples=n, database=None, derandomize=True, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data):
        found.append(data.draw(strategy))

    collect()
    return found
