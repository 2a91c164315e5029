"""Every op of the registry on every device backend, against the NumPy reference, the test-backend-ops way.

test_upstream: the pinned upstream cases (cases/upstream.py). test_drawn: Hypothesis-drawn shapes, views and values
(cases/strategies.py). Ids carry backend and op: `pytest -k vulkan`, `pytest -k "cumsum and opencl"`.
"""
import pytest
from hypothesis import event, given, reject
from hypothesis import strategies as st

from backends import TESTED_BACKENDS
from backends.base import is_broken
from conftest import device_backend
from reference.ops import REGISTRY

from .harness import Case, run_case
from .replay import save_reproducer
from .strategies import cases_for
from .upstream import pinned

OPS = sorted(REGISTRY)


def check(backend, case: Case, drawn: bool = False):
    try:
        outcome = run_case(backend, case)
    except NotImplementedError as unsupported:
        if drawn:
            event(f"unsupported on {backend.name}")
            reject()
        pytest.skip(f"unsupported: {unsupported}")
    if not outcome.passed:
        pytest.fail(save_reproducer(backend.name, case, outcome.report(), "drawn" if drawn else "upstream"),
                    pytrace=False)


@pytest.mark.parametrize("backend_name,case", [
    pytest.param(b, case, id=f"{b}-{case.label()}") for b in TESTED_BACKENDS for op in OPS for case in pinned(op)])
def test_upstream(backend_name, case):
    backend = device_backend(backend_name)
    for variant in backend.variants(case.op):
        if not is_broken(variant):
            check(backend, Case(case.op, case.inputs, case.params, case.seed, variant))


@pytest.mark.parametrize("backend_name,op", [pytest.param(b, op, id=f"{b}-{op}") for b in TESTED_BACKENDS for op in OPS])
@given(data=st.data())
def test_drawn(backend_name, op, data):
    backend = device_backend(backend_name)
    case = data.draw(cases_for(op), label="case")
    for variant in backend.variants(op):
        if not is_broken(variant):
            check(backend, Case(case.op, case.inputs, case.params, case.seed, variant), drawn=True)
