"""Every op of the registry on every device backend, against the NumPy reference, the test-backend-ops way.

test_upstream: the pinned upstream cases (each record's `pinned`, reference/ops/<family>.py). test_drawn:
Hypothesis-drawn shapes, views and values (cases/strategies.py), within the layouts the backend claims (its
supports()), so nearly every draw runs; what it refuses anyway (value-dependent refusals) is rejected as an event,
never passed. Ids carry backend and op: `pytest -k vulkan`, `pytest -k "cumsum and opencl"`.
"""
import pytest
from hypothesis import event, given, reject
from hypothesis import strategies as st

from backends import TESTED_BACKENDS
from conftest import device_backend
from reference.case import Case
from reference.ops import REGISTRY, get_op

from .harness import run_case
from .replay import save_reproducer
from .strategies import cases_for

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


def drawn_cases(backend, op: str):
    """What test_drawn draws: cases of `op` in layouts `backend` claims."""
    return cases_for(op, backend)


@pytest.mark.parametrize("backend_name,case", [
    pytest.param(b, case, id=f"{b}-{case.label()}") for b in TESTED_BACKENDS for op in OPS for case in get_op(op).pinned()])
def test_upstream(backend_name, case):
    check(device_backend(backend_name), case)


@pytest.mark.parametrize("backend_name,op", [pytest.param(b, op, id=f"{b}-{op}") for b in TESTED_BACKENDS for op in OPS])
@given(data=st.data())
def test_drawn(backend_name, op, data):
    backend = device_backend(backend_name)
    check(backend, data.draw(drawn_cases(backend, op), label="case"), drawn=True)
