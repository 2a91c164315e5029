"""test-backend-ops' habits in pytest (conftest.py): --op selects by exact op name, --params by a pinned case's
parameter string, --list-ops and --show-coverage print and exit; each works under xdist. Run as a separate pytest
(collect-only where it can) in the repository, as a user types it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends import BACKENDS, KERNEL_BACKENDS, TESTED_BACKENDS, availability
from conftest import case_vars
from reference.ops import REGISTRY, get_op

from .coverage import RUNTIME_MISSING, source_types, support_verdict

ROOT = Path(__file__).resolve().parent.parent


def pytest_run(*args: str) -> subprocess.CompletedProcess:
    """A fresh `python -m pytest ARGS` in the repository, clear of this run's xdist and addopts settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def collected(*args: str) -> set[str]:
    done = pytest_run("--collect-only", "-q", *args)
    assert done.returncode in (0, 5), done.stdout + done.stderr  # 5: nothing selected
    return {line for line in done.stdout.splitlines() if "::" in line}


def upstream_ids(ops, vars_regex: str = "") -> set[str]:
    """What test_upstream is parametrised with for `ops`, filtered as --params filters."""
    return {f"cases/test_ops.py::test_upstream[{b}-{case.label()}]" for b in TESTED_BACKENDS for op in ops
            for case in get_op(op).pinned() if re.search(vars_regex, case_vars(case))}


# ---- --op --------------------------------------------------------------------------------------------------------
def test_op_selects_the_named_ops_tests_and_deselects_the_rest():
    files = ["cases/test_ops.py", "cases/test_registry.py", "cases/test_harness.py", "cases/test_validation.py"]
    ids = collected(*files, "--op", "acc,SET")
    assert {i for i in ids if "::test_upstream[" in i} == upstream_ids(["ACC", "SET"])
    assert {i for i in ids if "::test_drawn[" in i} == {f"cases/test_ops.py::test_drawn[{b}-{op}]"
                                                       for b in TESTED_BACKENDS for op in ("ACC", "SET")}
    assert {"cases/test_registry.py::test_record_cases_are_the_ops_own[ACC]",
            "cases/test_registry.py::test_record_cases_are_the_ops_own[SET]"} <= ids
    # tests of a family, a mutant or no op at all are deselected, as test-backend-ops -o runs only that op's cases
    assert not [i for i in ids if "test_every_family_has_its_kernel_files" in i or "mutant" in i]
    everything = collected(*files)
    assert len(everything) > len(ids) and ids < everything


def test_op_set_does_not_pick_acc_as_k_set_does():
    by_keyword = collected("cases/test_ops.py", "-k", "set")
    assert any("-ACC(" in i for i in by_keyword), "-k set matches ACC ids through 'offset': the reason for --op"
    by_op = collected("cases/test_ops.py", "--op", "set")
    assert by_op and not [i for i in by_op if "ACC" in i]
    assert {i for i in by_op if "::test_upstream[" in i} == upstream_ids(["SET"])


@pytest.mark.parametrize("value, message", [
    ("ACC,NOPE", "--op: unknown op 'NOPE'; known ops: ACC, ADD"),
    (" , ", "--op needs at least one op name"),
])
def test_bad_op_is_a_usage_error_naming_the_known_ops(value, message):
    done = pytest_run("--collect-only", "-q", "cases/test_registry.py", "--op", value)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert message in done.stderr


# ---- --params ------------------------------------------------------------------------------------------------------
def test_params_keeps_the_pinned_cases_whose_vars_match():
    regex = r"type=i32,ne_a=\[6,5,8,3\]"
    ids = collected("cases/test_ops.py", "cases/test_registry.py", "--params", regex)
    expected = upstream_ids(sorted(REGISTRY), regex)
    assert expected and ids == expected  # drawn and registry tests have no pinned case: deselected


def test_params_matches_the_vars_not_the_op_name():
    assert not collected("cases/test_ops.py", "--params", "^SET")
    assert collected("cases/test_ops.py", "--params", "^type=f16")


def test_op_and_params_together_select_both():
    ids = collected("cases/test_ops.py", "--op", "ACC", "--params", "inplace=True")
    assert ids == upstream_ids(["ACC"], "inplace=True") and ids


def test_bad_params_regex_is_a_usage_error():
    done = pytest_run("--collect-only", "-q", "cases/test_ops.py", "--params", "ne_a=[4")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--params: bad regular expression 'ne_a=[4'" in done.stderr


# ---- under xdist: the options reach the workers, which deselect alike -------------------------------------------
def test_op_under_xdist():
    done = pytest_run("-n", "auto", "-v", "cases/test_registry.py", "--op", "ACC,SET")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"workers \[2 items\]", done.stdout), done.stdout
    passed = set(re.findall(r"PASSED (\S+)", done.stdout))
    assert passed == {"cases/test_registry.py::test_record_cases_are_the_ops_own[ACC]",
                      "cases/test_registry.py::test_record_cases_are_the_ops_own[SET]"}


def test_op_and_params_under_xdist_run_the_selected_cases():
    if availability("ggml"):
        pytest.skip(availability("ggml"))
    done = pytest_run("-n", "auto", "-v", "cases/test_ops.py", "--op", "set", "--params", "type=i32", "-k", "ggml")
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {i for i in upstream_ids(["SET"], "type=i32") if "[ggml-" in i}
    assert re.search(rf"workers \[{len(expected)} items\]", done.stdout), done.stdout
    assert set(re.findall(r"PASSED (\S+)", done.stdout)) == expected


def test_bad_op_under_xdist_is_a_usage_error():
    done = pytest_run("-n", "auto", "cases/test_registry.py", "--op", "NOPE")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR and "unknown op 'NOPE'" in done.stderr


# ---- --list-ops, --show-coverage -----------------------------------------------------------------------------------
def test_list_ops_prints_every_op_and_runs_nothing():
    start = time.monotonic()
    done = pytest_run("-n", "auto", "--list-ops")
    assert time.monotonic() - start < 30, "--list-ops must stay fast"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" not in done.stdout and "collected" not in done.stdout
    cells = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
             for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| op ")]
    rows = {row[0]: row[1:] for row in cells}
    assert set(rows) == set(REGISTRY)
    for op, (family, pinned, backends, summary) in rows.items():
        spec = REGISTRY[op]
        assert (family, int(pinned), summary.replace("\\|", "|")) == (spec.family, len(spec.pinned()), spec.summary)
        assert "numpy" in backends.split(", "), f"the reference runs every {op} case"
    runnable = [b for b in BACKENDS if not availability(b)]
    assert set(rows["MUL_MAT"][2].split(", ")) == set(runnable) | ({"cuda-emulated"} if availability("cuda") else set())
    for name in BACKENDS:
        assert (f"runtime missing: {availability(name)}" in done.stdout) == bool(availability(name))


def test_show_coverage_prints_support_by_type_and_kernel_paths():
    start = time.monotonic()
    done = pytest_run("-n", "auto", "--show-coverage")
    assert time.monotonic() - start < 30, "--show-coverage must stay fast"
    assert done.returncode == 0, done.stdout + done.stderr
    support, paths = done.stdout.split("Kernel paths")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in support.splitlines() if line.startswith("| ")]
    header, rows = rows[0], rows[1:]
    expected = {(op, source_types(c)) for op, spec in REGISTRY.items() for c in spec.pinned() + [spec.perf]}
    assert {(r[0], r[1]) for r in rows} == expected and ("MUL_MAT", "f16,f32") in expected
    for row in rows:
        cells = dict(zip(header, row))
        assert cells["numpy"] == "yes"
        for name in BACKENDS:
            assert (cells[name] == RUNTIME_MISSING) == bool(availability(name)), (name, cells)
    path_rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in paths.splitlines()
                 if line.startswith("| ") and not line.startswith("| op ")]
    judged = [b for b in KERNEL_BACKENDS if not availability(b)] + (["cuda-emulated"] if availability("cuda") else [])
    assert {r[1] for r in path_rows} == set(judged)
    acc = {(r[1], r[2]): int(r[3]) for r in path_rows if r[0] == "ACC"}
    for name in judged:  # every pinned ACC case runs on every kernel backend, through one path or another
        assert sum(n for (b, _), n in acc.items() if b == name) == len(get_op("ACC").pinned()), (name, acc)


class _Refusing:
    """A backend that refuses nodes whose op is in `refused`."""

    def __init__(self, refused):
        self.refused = refused

    def supports(self, node):
        return f"no {node} here, and a reason long enough to be cut: " + "x" * 100 if node in self.refused else None


def test_support_verdict_says_yes_partial_or_no_with_the_first_reason():
    assert support_verdict(_Refusing(set()), ["a", "b"]) == "yes"
    partial = support_verdict(_Refusing({"b"}), ["a", "b", "c"])
    assert partial.startswith("partial (2/3 cases): no b here") and partial.endswith("...") and len(partial) < 120
    assert support_verdict(_Refusing({"a", "b"}), ["a", "b"]).startswith("no: no a here")


def test_record_history_counts_backends_that_ran_and_leaves_out_absent_runtimes(tmp_path, monkeypatch):
    from backends import availability
    from reports import history

    monkeypatch.setenv("KBO_HISTORY", str(tmp_path / "h.jsonl"))
    done = pytest_run("cases/test_ops.py", "--op", "SET", "--params", "type=i32", "-k", "ggml or cuda", "-n", "0",
                      "--record-history")
    assert done.returncode == 0, done.stdout[-2000:]
    records = history.load(tmp_path / "h.jsonl", kind="conformance")
    counted = {(r["backend"], r["op"]) for r in records}
    assert ("ggml", "SET") in counted and all(r["passed"] > 0 for r in records if r["backend"] == "ggml")
    # CUDA without a GPU measured nothing: no record (it would read as "no tests ran", a failure)
    assert (("cuda", "SET") in counted) == (availability("cuda") is None)
