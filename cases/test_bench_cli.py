"""python -m bench refuses bad names with the list of valid ones, and its figures land in the history."""
import pytest

from bench import ops as ops_bench
from bench.__main__ import main
from reports import history

from .upstream import binary_cases


@pytest.mark.parametrize("argv,message", [
    (["ops", "--op", "CUMSUMM"], "unknown op 'CUMSUMM'; known ops: ACC, ADD"),
    (["ops", "--backend", "metal"], "unknown backend 'metal'; known backends: numpy, opencl, vulkan, cuda, ggml"),
    (["support", "--backend", "rocm"], "unknown backend 'rocm'"),
    (["delta-net", "--variant", "chunk32"], "known variants: recurrent, chunk64, chunk16, block16"),
    (["delta-net", "--T", "0"], "--T must be >= 1"),
])
def test_bad_names_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_ops_run_records_history(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(history, "HISTORY", tmp_path / "h.jsonl")
    monkeypatch.setattr(ops_bench, "COPY_BYTES", 1 << 20)
    monkeypatch.setitem(ops_bench.PERF_CASES, "ADD", binary_cases("ADD")[0])  # small: this checks plumbing
    assert main(["ops", "--op", "ADD", "--backend", "numpy", "--budget", "0.01"]) == 0
    recs = history.load(tmp_path / "h.jsonl")
    assert {r["kind"] for r in recs} == {"copy", "ops"}
    op = next(r for r in recs if r["kind"] == "ops")
    assert op["backend"] == "numpy" and op["gb_s"] > 0 and len(op["samples_us"]) == 5 and op["commit"]
    assert "| numpy" in capsys.readouterr().out
