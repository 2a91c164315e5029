"""python -m cases.mutants: the mutant registry is sound (every edit applies once, to a kernel file that exists, and
changes it), filters and bad requests are refused up front, failures are classified by how they were caught, a broken
mutant (one that does not compile) is an error rather than a kill, and one real mutant is caught end to end."""
import pytest

from backends.base import active_mutant, kernel_text
from cases import mutants as cli
from conftest import device_backend
from reference.ops.spec import Mutant, mutants


def test_every_op_family_with_mutants_names_real_ops_and_kinds():
    for name, (op, m) in mutants().items():
        assert m.name == name and m.backend in ("opencl", "vulkan", "cuda")
        assert cli.narrow_tests(op.name, m.backend), name


def test_mutant_record_refuses_an_edit_that_changes_nothing():
    with pytest.raises(TypeError, match="must change the text"):
        Mutant("same_opencl", "opencl", "x", "x", "stride", "nothing")
    with pytest.raises(TypeError):
        Mutant("bad_kind_opencl", "opencl", "x", "y", "typo", "no such class")


@pytest.mark.parametrize("argv,message", [
    (["--mutant", "nope"], "no mutant 'nope'"),
    (["--op", "NOT_AN_OP"], "unknown op"),
    (["--backend", "metal"], "no registered mutant matches"),
])
def test_bad_requests_are_refused_before_any_run(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(cli, "run_mutant", lambda *a: pytest.fail("a mutant ran"))
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--no-record"])
    assert done.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("output,code,how", [
    ("E   Failed: opencl: ACC(...): FAIL (NMSE 0.3 <= 1e-07 required)\nE     - NMSE 0.3 > bound 1e-07; worst ...", 1,
     "NMSE"),
    ("E   Failed: ... FAIL (NMSE 0 <= 1e-07 required)\nE     - output: 12 byte(s) outside the output changed", 1,
     "guard bytes"),
    ("E   Failed: ... FAIL (NMSE nan <= 1e-07 required)\nE     - 4 NaN in the output (first at numpy index (0,))", 1,
     "NaN"),
    ("E   Failed: ... FAIL (NMSE 1e-13 <= 1e-07 required)\nE     - relative error 0.00048 > bound 7.63e-06 at ...", 1,
     "relative error"),
    ("E   Failed: ... FAIL (NMSE nan <= nan required)\nE     - 2 row(s) chose a value below one left out", 1,
     "wrong indices"),
    ("Fatal Python error: Segmentation fault", -11, "crash"),
])
def test_how_a_mutant_was_caught(output, code, how):
    assert cli.how_caught(output, code) == how


def test_a_mutant_that_does_not_compile_is_an_error_not_a_kill(monkeypatch):
    class Done:
        returncode, stdout, stderr = 1, "E   RuntimeError: host compiler failed on acc_set.cu: error: ...", ""
    monkeypatch.setattr(cli.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(RuntimeError, match="does not compile"):
        cli.run_mutant("acc_nb3_ignored_cuda", 0)


def test_without_kbo_mutant_kernels_are_the_files(tmp_path):
    assert active_mutant() is None  # the test session itself runs the real kernels
    path = tmp_path / "acc_set.cl"
    path.write_text("int i3 = o / nb3, r3 = o - i3 * nb3;")
    assert kernel_text("opencl", path) == path.read_text()


def test_a_registered_mutant_is_caught_end_to_end(capsys):
    device_backend("opencl")
    assert cli.main(["--mutant", "acc_nb3_ignored_opencl", "--no-record"]) == 0
    out = capsys.readouterr().out
    assert "| acc_nb3_ignored_opencl | opencl    | ACC  | stride  | ACC tests   | NMSE" in out
    assert "kill rate: 1/1 (100%)" in out
