"""The harness must be able to fail: each deliberately wrong backend below is caught, with a message that says
what went wrong. Plus the broken ACC kernel impl every device backend carries (llama.cpp #19426's bug)."""
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends import KERNEL_BACKENDS
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


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
def test_broken_acc_impl_is_caught(backend_name):
    backend = device_backend(backend_name)
    assert "broken_acc_nb3" in backend.impls("ACC"), f"{backend_name} must carry the broken ACC impl"
    broken = lambda case: Case(case.op, case.inputs, case.params, case.seed, "broken_acc_nb3")
    caught = run_case(backend, broken(ACC_4D))
    assert not caught.passed, "the suite failed to catch the nb3-ignoring ACC kernel"
    print(caught.report())
    # Like the real bug, the broken kernel is right on 3-D contiguous input: only the 4-D/strided cases expose it.
    assert run_case(backend, broken(ACC_3D)).passed
    assert run_case(backend, ACC_4D).passed


@pytest.mark.parametrize("backend_name", ["opencl", "vulkan"])
def test_reproducer_replays_the_failure(backend_name, tmp_path, monkeypatch):
    """The replay command printed for the broken ACC kernel fails again in a fresh process; for the correct
    kernel it passes. The test-backend-ops form names the exact views and strides."""
    device_backend(backend_name)
    monkeypatch.setattr(replay, "REPRO_DIR", tmp_path)
    case = Case(ACC_4D.op, ACC_4D.inputs, ACC_4D.params, ACC_4D.seed, "broken_acc_nb3")
    text = replay.save_reproducer(backend_name, case, run_case(device_backend(backend_name), case).report(), "t")
    command = next(line.strip() for line in text.splitlines() if line.strip().startswith("python -m cases.replay"))
    root = Path(__file__).resolve().parent.parent
    run = lambda cmd: subprocess.run([sys.executable, *shlex.split(cmd)[1:]], cwd=root, capture_output=True, text=True)
    failed = run(command)
    assert failed.returncode == 1 and "FAIL" in failed.stdout, failed.stdout + failed.stderr
    fixed = run(command.replace("broken_acc_nb3", "default"))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
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
