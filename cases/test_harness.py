"""The harness must be able to fail: each deliberately wrong backend below is caught, with a message that says
what went wrong. Plus llama.cpp #19426's ACC bug planted as a mutant, caught, with a reproducer that replays it."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.base import MUTANT_ENV
from backends.numpy_backend import NumpyBackend
from conftest import device_backend
from reference.case import Case, Input, Layout
from reference.ops import REGISTRY, get_op
from reference.ops.acc_set import block_params
from reference.tensor import DType, host_view

from . import replay
from .harness import run_case

# The 4-D block case that exposed the Vulkan bug, and a 3-D contiguous one the buggy shader got right.
ACC_4D = Case.of("ACC", Input((64, 64, 3, 2)), Input((16, 16, 3, 2), layout=Layout(pad=(0, 1, 0, 0), offset=16)),
                 **block_params((64, 64, 3, 2), offset=1 * 16 * 4 + 3 * 16 * 256))
ACC_3D = Case.of("ACC", Input((64, 64, 1, 1)), Input((16, 16, 1, 1)), **block_params((64, 64, 1, 1), offset=64))


class GuardWriter(NumpyBackend):
    """Correct values, plus one stray byte written just past the output."""

    def prepare(self, node):
        run = super().prepare(node)

        def stray():
            run()
            end = node.dst.offset + node.dst.extent()
            node.dst.buffer.handle[end] ^= 0xFF
        return stray


class SkipsLastElement(NumpyBackend):
    """Leaves the last output element unwritten (it keeps its NaN poison)."""

    def prepare(self, node):
        def run():
            before = host_view(node.dst.buffer.handle, node.dst).reshape(-1)[-1].copy()
            super(SkipsLastElement, self).prepare(node)()
            host_view(node.dst.buffer.handle, node.dst).reshape(-1)[-1] = before
        return run


class IgnoresStrides(NumpyBackend):
    """Reads every source as if it were contiguous from its offset (the commonest kernel bug)."""

    def prepare(self, node):
        flat = [s.view(s.ne) for s in node.srcs]
        run = super().prepare(type(node)(node.op, flat, node.dst, node.params))
        return run


class SlightlyOff(NumpyBackend):
    """Every value off by a relative 1e-3: above any 1e-7 NMSE bound."""

    def prepare(self, node):
        run = super().prepare(node)

        def off():
            run()
            host_view(node.dst.buffer.handle, node.dst)[...] *= np.float32(1.001)
        return off


CUMSUM_VIEW = Case.of("CUMSUM", Input((33, 5, 3), layout=Layout(pad=(3, 1, 0, 0), offset=7)))


@pytest.mark.parametrize("liar,expect", [
    (GuardWriter, "outside the output changed"),
    (SkipsLastElement, "NaN in the output"),
    (IgnoresStrides, "NMSE"),
    (SlightlyOff, "NMSE"),
])
def test_harness_catches(liar, expect):
    outcome = run_case(liar(), CUMSUM_VIEW)
    assert not outcome.passed
    assert expect in outcome.report()


def test_reference_passes_itself():
    assert run_case(NumpyBackend(), ACC_4D).passed


ROOT = Path(__file__).resolve().parent.parent


def replay_with(backend_name: str, case: Case, mutant: str | None) -> subprocess.CompletedProcess:
    """`python -m cases.replay` on the case in a fresh process, with KBO_MUTANT set to `mutant` (a planted bug)."""
    env = {k: v for k, v in os.environ.items() if k != MUTANT_ENV} | ({MUTANT_ENV: mutant} if mutant else {})
    return subprocess.run([sys.executable, "-m", "cases.replay", "--backend", backend_name, replay.case_to_json(case)],
                          cwd=ROOT, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("backend_name", ["opencl", "vulkan"])
def test_acc_nb3_mutant_is_caught_and_its_reproducer_replays(backend_name, tmp_path, monkeypatch):
    """llama.cpp #19426's bug planted in the backend's ACC kernel (the mutant acc_nb3_ignored_<backend>) fails the 4-D
    case and, like the real bug, passes the 3-D one; the correct kernel passes both. The saved reproducer names the
    exact views and strides in its test-backend-ops form."""
    device_backend(backend_name)
    mutant = f"acc_nb3_ignored_{backend_name}"
    caught = replay_with(backend_name, ACC_4D, mutant)
    assert caught.returncode == 1 and "FAIL" in caught.stdout, caught.stdout + caught.stderr
    assert replay_with(backend_name, ACC_3D, mutant).returncode == 0
    assert replay_with(backend_name, ACC_4D, None).returncode == 0
    monkeypatch.setattr(replay, "REPRO_DIR", tmp_path)
    text = replay.save_reproducer(backend_name, ACC_4D, caught.stdout, "t")
    assert "ggml_acc(ctx, a, b, 256, 16384, 49152, 12352)" in text
    assert "ggml_view_4d(ctx, b, 16, 16, 3, 2, b->nb[1], b->nb[2], b->nb[3], 64)" in text
    assert (tmp_path / f"{backend_name}-ACC-t.md").exists()


def test_every_op_has_a_test_backend_ops_form():
    for op in REGISTRY:
        case = get_op(op).pinned()[0]
        assert "ggml_" in replay.test_backend_ops_case(case).split("ggml_tensor * out = ")[1], op


def test_case_json_round_trip():
    for case in (ACC_4D, CUMSUM_VIEW, Case.of("CPY", Input((7, 5), DType.F16, Layout((1, 0, 2, 3))), dtype="f32",
                                              ne=(35,))):
        assert replay.case_from_json(replay.case_to_json(case)) == case


def test_subnormals_compare_as_zero():
    """A backend that flushes float32 subnormals (allowed by OpenCL, Vulkan, CUDA -ftz) is not failed for it, while a
    real difference in normal numbers still is."""
    from .harness import check_nmse

    assert check_nmse(np.array([-0.0]), np.array([-4e-42]), 1e-7)[1] == []
    assert check_nmse(np.array([1e-37]), np.array([2e-37]), 1e-7)[1] != []
