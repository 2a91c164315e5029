"""The drawn cases are runnable: test_drawn draws, for each (backend, op), only layouts the backend claims, so that
Hypothesis never gives up on a pair (FailedHealthCheck filter_too_much) because the backend refuses most draws.

- every drawn case, built by the harness exactly as test_drawn runs it, is one the backend's supports() accepts
  (a few value-dependent refusals may remain: at most MAX_REFUSED of the draws);
- the strategy's buffer-less descriptors are the harness's own layouts, so what it asks supports() is what runs;
- claimed() narrows a refused layout to the closest one the backend accepts, and leaves everything else alone;
- the seeds of issue 15 (1, 24, 28 on ggml's SOLVE_TRI and SOFT_MAX_EXT) pass, run as a user runs them.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends import TESTED_BACKENDS
from backends.numpy_backend import NumpyBackend
from conftest import device_backend
from reference.case import CONTIGUOUS, Case, Input, Layout
from reference.node import make_node
from reference.ops import REGISTRY

from .harness import bound_node, host_buffers
from .strategies import cases_for, claimed, examples, narrowings
from .test_ops import drawn_cases

OPS = sorted(REGISTRY)
N_DRAWS = 40
MAX_REFUSED = 0.1  # of the draws; before the strategy asked the backend, ggml refused 60-80% of some ops' draws


def harness_refusal(backend, case: Case) -> str | None:
    """What supports() says about `case` as the harness builds and binds it (values and buffers included)."""
    with bound_node(backend, case) as node:
        return backend.supports(node)


@pytest.mark.parametrize("backend_name,op", [pytest.param(b, op, id=f"{b}-{op}") for b in TESTED_BACKENDS for op in OPS])
def test_drawn_cases_are_claimed(backend_name, op):
    backend = device_backend(backend_name)
    refused = []
    cases = examples(drawn_cases(backend, op), N_DRAWS)
    for case in cases:
        why = harness_refusal(backend, case)
        if why:
            refused.append(f"{case.label()}: {why}")
    assert len(refused) <= MAX_REFUSED * len(cases), \
        f"{backend_name} refuses {len(refused)} of {len(cases)} drawn {op} cases:\n" + "\n".join(refused[:5])


@pytest.mark.parametrize("op", OPS)
def test_descriptor_is_the_harness_layout(op):
    for case in examples(cases_for(op), 15):
        srcs, _, _, _ = host_buffers(case)
        for inp, built in zip(case.inputs, srcs):
            mine = inp.descriptor()
            assert (mine.dtype, mine.ne, mine.nb, mine.offset) == \
                   (built.tensor.dtype, built.tensor.ne, built.tensor.nb, built.tensor.offset), case.label()


# ---- claimed() on backends with known rules ------------------------------------------------------------------------
class Claims(NumpyBackend):
    """A backend whose supports() is a rule on the node, and that counts how often it was asked."""

    def __init__(self, rule):
        super().__init__()
        self.rule, self.asked = rule, 0

    def supports(self, node):
        self.asked += 1
        return self.rule(node)


def dense_rows_and_contiguous_b(node):
    a, b = node.srcs
    if a.nb[0] != a.dtype.size:
        return "a's rows must be dense"
    if not b.is_contiguous():
        return "b must be contiguous"
    return None


NE = (8, 4, 3, 2)
A_LAYOUT = Layout(permute=(1, 2, 0, 3), pad=(1, 0, 3, 0), offset=5)  # storage dim 0 becomes dim 1: rows strided
B_LAYOUT = Layout(pad=(0, 3, 0, 16), offset=64)  # the dim-1 padding breaks contiguity, the dim-3 padding does not
ADD = Case.of("ADD", Input(NE, layout=A_LAYOUT), Input(NE, layout=B_LAYOUT), seed=3)


def test_claimed_keeps_as_much_of_the_drawn_layout_as_the_backend_takes():
    got = claimed(ADD, Claims(dense_rows_and_contiguous_b))
    # a keeps its padding and offset and a permutation of its outer dims; b drops only the padding that mattered
    assert got.inputs[0].layout == Layout(permute=(0, 2, 1, 3), pad=(1, 0, 3, 0), offset=5)
    assert got.inputs[1].layout == Layout(pad=(0, 0, 0, 16), offset=64)
    assert (got.op, got.params, got.seed, [i.ne for i in got.inputs]) == \
           (ADD.op, ADD.params, ADD.seed, [i.ne for i in ADD.inputs])
    assert dense_rows_and_contiguous_b(make_node("ADD", [i.descriptor() for i in got.inputs])) is None


def test_claimed_leaves_a_claimed_case_alone():
    backend = Claims(lambda node: None)
    assert claimed(ADD, backend) is ADD
    assert backend.asked == 1


def test_claimed_returns_a_case_refused_for_other_reasons_as_drawn():
    assert claimed(ADD, Claims(lambda node: "no kernel at all")) is ADD


def test_narrowings_go_from_the_drawn_layout_to_contiguous():
    chain = narrowings(A_LAYOUT)
    assert chain[0] == A_LAYOUT and chain[-1] == CONTIGUOUS
    assert len(chain) == len(set(chain)) == 3 * 2 ** 3  # 3 permutations x (pad 0, pad 2, offset) kept or dropped
    assert narrowings(CONTIGUOUS) == [CONTIGUOUS]


# ---- issue 15, as reported -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 24, 28])
def test_issue_15_seeds_pass_on_ggml(seed, tmp_path):
    """`pytest --hypothesis-seed=1` (24, 28) failed the filter_too_much health check on ggml's drawn SOLVE_TRI and
    SOFT_MAX_EXT: most draws had layouts ggml refuses."""
    device_backend("ggml")
    root = Path(__file__).resolve().parent.parent
    ids = [f"cases/test_ops.py::test_drawn[ggml-{op}]" for op in ("SOLVE_TRI", "SOFT_MAX_EXT")]
    env = {**os.environ, "HYPOTHESIS_PROFILE": "ci", "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ids,
                           f"--hypothesis-seed={seed}"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
