"""Every op of the registry on every device backend, against the NumPy reference, the test-backend-ops way.

test_upstream: the pinned upstream cases (each record's `pinned`, reference/ops/<family>.py). test_drawn:
Hypothesis-drawn shapes, views and values (cases/strategies.py), within the layouts the backend claims (its
supports()), so nearly every draw runs; what it refuses anyway (value-dependent refusals) is rejected as an event,
never passed. Ids carry backend and op: `pytest -k vulkan`, `pytest -k "cumsum and opencl"`.
"""
import numpy as np
import pytest
from hypothesis import event, given, reject
from hypothesis import strategies as st

from backends import TESTED_BACKENDS
from conftest import device_backend
from reference import quants
from reference.case import Case
from reference.ops import REGISTRY, get_op
from reference.tensor import DType

from .harness import check_nmse, run_case
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


# ---- CPY into a quantized type: what its bound lets through ---------------------------------------------------------
def _q4_0(x: np.ndarray, offset: float) -> np.ndarray:
    """q4_0's values as ggml computes them in float32 (d = the block's largest-magnitude value / -8, q = floor(x / d +
    offset), at most 15, d stored as a half), dequantized; offset 8.5 rounds to nearest as ggml does, 8.0 rounds
    toward zero (a kernel bug)."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    signed_max = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(1)][:, None]
    d = signed_max / np.float32(-8)
    q = np.minimum(15, np.floor(blocks * (np.float32(1) / d) + np.float32(offset)))
    return ((q - 8) * d.astype(np.float16).astype(np.float32)).reshape(x.shape)


def test_cpy_quant_bound_passes_a_tie_and_fails_a_rounding_bug():
    """CPY_QUANT_NMSE (reference/ops/cpy.py) on the pinned f32 -> q4_0 case's size: one element in 1024 a step off
    (a tie rounded the other way) passes, rounding toward zero fails."""
    x = np.random.default_rng(0).uniform(-1, 1, 256 * 64)
    ref = _q4_0(x, 8.5)
    np.testing.assert_array_equal(ref, quants.dequantize(quants.quantize(x.reshape(-1, 256), "Q4_0"), "Q4_0").ravel())
    ref = ref.astype(np.float64)
    bound = get_op("CPY").nmse_by_dst[DType.Q4_0]
    step = np.abs(np.repeat(x.reshape(-1, 32)[np.arange(512), np.abs(x.reshape(-1, 32)).argmax(1)], 32) / 8)
    tie = ref.copy()
    tie[::1024] += step[::1024]
    assert check_nmse(tie, ref, bound)[1] == []
    assert check_nmse(_q4_0(x, 8.0).astype(np.float64), ref, bound)[1]
