"""Kernel path coverage (cases/coverage.py): on OpenCL and Vulkan, every code path a drawn case reaches is reached by
a pinned case too, so a bug on any path is caught by every run, not by a lucky draw."""
import pytest

from conftest import device_backend
from reference.ops import REGISTRY

from .coverage import coverage, main

OPS = sorted(REGISTRY)


@pytest.mark.parametrize("backend_name,op", [pytest.param(b, op, id=f"{b}-{op}")
                                             for b in ("opencl", "vulkan") for op in OPS])
def test_pinned_cases_reach_every_path_draws_reach(backend_name, op):
    pinned, drawn_only = coverage(device_backend(backend_name), op)
    assert pinned, f"no pinned {op} case runs on {backend_name}"
    assert not drawn_only, f"{op} on {backend_name}: paths only drawn cases reach (pin a case for each): {drawn_only}"


def test_report_names_each_path(capsys):
    device_backend("opencl")
    assert main(["--backend", "opencl", "--op", "MUL_MAT", "--draws", "5"]) == 0
    out = capsys.readouterr().out
    assert "mul_mat_k1" in out and "mul_mat_pack" in out


def test_bad_requests_are_refused(capsys):
    for argv in (["--backend", "metal"], ["--op", "NOPE"], ["--draws", "-1"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
