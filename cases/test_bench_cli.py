"""python -m bench refuses bad names with the list of valid ones, and its figures land in the history."""
import dataclasses
import io
import json
import os
import tempfile

import pandas as pd
import pytest

import backends
import bench.__main__ as cli
from bench import delta_net as delta_net_bench
from bench import ops as ops_bench
from bench import parity as parity_bench
from bench import throughput
from bench.__main__ import main
from conftest import device_backend
from reference.config import get_config
from reference.ops import REGISTRY
from reports import history



def small_add(monkeypatch):
    """ADD's perf case replaced by its first pinned case (small)."""
    add = REGISTRY["ADD"]
    monkeypatch.setitem(REGISTRY, "ADD", dataclasses.replace(add, perf=add.pinned()[0]))


@pytest.mark.parametrize("argv,message", [
    (["ops", "--op", "CUMSUMM"], "unknown op 'CUMSUMM'; known ops: ACC, ADD"),
    (["ops", "--backend", "metal"], "unknown backend 'metal'; known backends: numpy, opencl, vulkan, cuda, ggml"),
    (["support", "--backend", "rocm"], "unknown backend 'rocm'"),
    (["delta-net", "--variant", "chunk32"], "known variants: recurrent, chunk64, chunk16, block16"),
    (["delta-net", "--T", "0"], "--T must be >= 1"),
    (["pp16", "--backend", "metal,llama.cpp"],
     "unknown backend 'metal'; known backends: numpy, opencl, vulkan, cuda, ggml; and llama.cpp (run beside them)"),
])
def test_bad_names_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_ops_run_records_history(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(history, "HISTORY", tmp_path / "h.jsonl")
    monkeypatch.setattr(ops_bench, "COPY_BYTES", 1 << 20)
    small_add(monkeypatch)  # this checks plumbing
    assert main(["ops", "--op", "ADD", "--backend", "numpy", "--budget", "0.01"]) == 0
    recs = history.load(tmp_path / "h.jsonl")
    assert {r["kind"] for r in recs} == {"copy", "ops"}
    op = next(r for r in recs if r["kind"] == "ops")
    assert op["backend"] == "numpy" and op["gb_s"] > 0 and len(op["samples_us"]) == 5 and op["commit"]
    assert "| numpy" in capsys.readouterr().out


# ---- issue 15: refusals before any work, and no result lost ---------------------------------------------------------




def _only_usable(monkeypatch, *usable):
    """Every backend but `usable` cannot run, whatever this machine has (no real probe runs)."""
    monkeypatch.setattr(backends, "availability",
                        lambda name: None if name in usable else f"{name} runtime not usable here: off for this test")


def _no_work(monkeypatch):
    """Any benchmark work (a model session, a timed op, a parity run, a delta-net graph) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started")
    for module, name in ((throughput, "ModelSession"), (ops_bench, "copy_bandwidth"), (ops_bench, "bench_op"),
                         (parity_bench, "run_parity"), (delta_net_bench, "GraphPlan")):
        monkeypatch.setattr(module, name, refuse)


def _small_ops(monkeypatch):
    monkeypatch.setattr(ops_bench, "COPY_BYTES", 1 << 20)
    small_add(monkeypatch)


@pytest.mark.parametrize("argv", [
    ["pp16", "-r", "1"],
    ["parity"],
    ["ops", "--op", "ADD"],
    ["delta-net", "--T", "16"],
], ids=["pp", "parity", "ops", "delta-net"])
def test_named_backend_that_cannot_run_is_an_error(argv, monkeypatch, capsys):
    _only_usable(monkeypatch, "numpy")
    _no_work(monkeypatch)
    with pytest.raises(SystemExit) as done:
        main(argv + ["--backend", "numpy,vulkan", "--no-record"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--backend vulkan: it cannot run here: vulkan runtime not usable here: off for this test" in err


def test_all_skips_backends_that_cannot_run_one_line_each(monkeypatch, capsys):
    monkeypatch.setattr(cli, "TESTED_BACKENDS", ["numpy", "vulkan", "cuda"])
    _only_usable(monkeypatch, "numpy")
    _small_ops(monkeypatch)
    assert main(["ops", "--op", "ADD", "--backend", "all", "--budget", "0.01", "--no-record", "-o", "csv"]) == 0
    out, err = capsys.readouterr()
    assert err.count("vulkan: skipped (vulkan runtime not usable here") == 1
    assert err.count("cuda: skipped (cuda runtime not usable here") == 1
    table = pd.read_csv(io.StringIO(out))  # stdout stays machine-readable: the skips went to stderr
    assert list(table["backend"]) == ["numpy"] and list(table["op"]) == ["ADD"]


def test_all_with_no_backend_that_can_run_is_an_error(monkeypatch, capsys):
    _only_usable(monkeypatch)
    _no_work(monkeypatch)
    with pytest.raises(SystemExit) as done:
        main(["ops", "--op", "ADD", "--backend", "all", "--no-record"])
    assert done.value.code == 2
    assert "--backend all: none of opencl, vulkan, cuda, ggml can run here" in capsys.readouterr().err


def test_depth_beyond_memory_is_refused_before_any_prefill(monkeypatch, capsys):
    monkeypatch.setattr(throughput, "host_ram", lambda: 8 << 30)
    _no_work(monkeypatch)
    with pytest.raises(SystemExit) as done:
        main(["pp16", "--depth", "1000000000", "--backend", "numpy", "--no-record"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "pp16 at --depth 1000000000 does not fit: numpy needs about" in err
    assert "more than this machine's RAM (8.0 GiB)" in err
    assert "state 149.0 GiB (n_ctx 1000000256)" in err  # 160 bytes of latent cache per position on tiny


def test_memory_check_holds_the_run_to_each_limit(monkeypatch):
    monkeypatch.setattr(throughput, "host_ram", lambda: 64 << 30)
    c = get_config("tiny")
    need = throughput.memory_need(c, [throughput.BenchTest("pp", 512)], [10_000_000], ["chunk16"], "absorbed",
                                  2048, 512)
    assert need["state"] > 1 << 30 and need["largest_buffer"] >= need["state"]  # one MLA layer: one cache buffer
    device = need["weights"] + need["state"] + need["compute"]["bytes"]
    gpu = {"device": (device + 1, "the test GPU"), "max_alloc": None, "host_memory": False}
    assert throughput.check_memory("gpu", need, gpu) is None
    small_gpu = {**gpu, "device": (device - 1, "the test GPU")}
    assert "more than the test GPU" in throughput.check_memory("gpu", need, small_gpu)
    capped = {**gpu, "max_alloc": (need["largest_buffer"] - 1, "the test cap")}
    assert "its largest buffer would be" in throughput.check_memory("gpu", need, capped)
    monkeypatch.setattr(throughput, "host_ram", lambda: device)  # host memory: the host copies come on top
    host = {"device": None, "max_alloc": None, "host_memory": True}
    assert "more than this machine's RAM" in throughput.check_memory("numpy", need, host)
    assert throughput.check_memory("gpu", need, gpu) is None  # the GPU holds the buffers: the host only its copies


def test_memory_estimate_matches_a_real_run(monkeypatch, capsys):
    assert main(["pp16", "tg2", "--depth", "0,40", "-ub", "8", "-r", "1", "--backend", "numpy", "--no-record",
                 "-o", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    need = throughput.memory_need(get_config("tiny"), [throughput.BenchTest("pp", 16), throughput.BenchTest("tg", 2)],
                                  [0, 40], ["chunk16"], "absorbed", 2048, 8)
    assert {r["weights_bytes"] for r in recs} == {need["weights"]}
    assert {r["state_bytes"] for r in recs} == {need["state"]} and {r["n_ctx"] for r in recs} == {need["n_ctx"]}
    # the estimate adds the ubatch's own inputs (tokens, mask) to the planner's peak, and prices the deepest ubatch
    assert need["compute"]["bytes"] >= max(r["compute_planned_bytes"] for r in recs)


@pytest.mark.parametrize("argv,message", [
    (["pp16", "--depth", "abc"], "--depth takes comma-separated integers, got 'abc'"),
    (["pp16", "--depth", "0,8k"], "--depth takes comma-separated integers, got '0,8k'"),
    (["pp16", "--depth", "0,-1"], "--depth must be >= 0, got -1"),
    (["pp16", "-ub", "0"], "-ub must be >= 1, got 0"),
    (["pp16", "-r", "0"], "-r must be >= 1, got 0"),
    (["ops", "--budget", "0"], "argument --budget: must be a finite number of seconds > 0, got '0'"),
    (["ops", "--budget=-1"], "argument --budget: must be a finite number of seconds > 0, got '-1'"),
    (["ops", "--budget", "nan"], "argument --budget: must be a finite number of seconds > 0, got 'nan'"),
    (["ops", "--budget", "inf"], "argument --budget: must be a finite number of seconds > 0, got 'inf'"),
    (["ops", "--budget", "soon"], "argument --budget: takes seconds, got 'soon'"),
])
def test_bad_numbers_are_refused_naming_their_flag(argv, message, monkeypatch, capsys):
    _no_work(monkeypatch)
    with pytest.raises(SystemExit) as done:
        main(argv + ["--backend", "numpy", "--no-record"])
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_ubatch_is_clamped_to_the_batch_and_recorded_as_run(monkeypatch, capsys):
    sizes = []
    real = throughput.ModelSession.ubatch

    def spy(self, tokens, *args, **kwargs):
        sizes.append(tokens.shape[1])
        return real(self, tokens, *args, **kwargs)
    monkeypatch.setattr(throughput.ModelSession, "ubatch", spy)
    assert main(["pp16", "-b", "8", "-ub", "32", "-r", "1", "--backend", "numpy", "--no-record", "-o", "json"]) == 0
    out, err = capsys.readouterr()
    rec, = json.loads(out)
    assert (rec["n_batch"], rec["n_ubatch"]) == (8, 8)
    assert set(sizes) == {8}  # warm-up and repetition: two ubatches of 8 each
    assert "running ubatches of 8 (llama.cpp's clamp)" in err


def test_prompt_goes_in_batches_split_into_ubatches():
    assert throughput.ubatch_spans(40, 24, 16) == [(0, 16), (16, 24), (24, 40)]  # llama-bench: 24 = 16 + 8, then 16
    assert throughput.ubatch_spans(16, 8, 32) == [(0, 8), (8, 16)]
    assert throughput.ubatch_spans(512, 2048, 512) == [(0, 512)]
    assert throughput.ubatch_spans(0, 2048, 512) == []


def _unwritable(kind, tmp_path):
    if kind == "under a file":
        (tmp_path / "a_file").write_text("")
        return tmp_path / "a_file" / "h.jsonl"
    if kind == "a directory":
        (tmp_path / "h.jsonl").mkdir()
        return tmp_path / "h.jsonl"
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files; the other kinds cover this as root")
    path = tmp_path / "h.jsonl"
    path.write_text("")
    path.chmod(0o444)
    return path


@pytest.mark.parametrize("kind", ["under a file", "a directory", "read-only"])
def test_unwritable_history_is_refused_before_any_work(kind, tmp_path, monkeypatch, capsys):
    path = _unwritable(kind, tmp_path)
    monkeypatch.setattr(history, "HISTORY", path)
    _no_work(monkeypatch)
    for argv in (["ops", "--op", "ADD"], ["pp16", "-r", "1"]):
        with pytest.raises(SystemExit) as done:
            main(argv + ["--backend", "numpy"])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert f"cannot append to the history {path}" in err and "--no-record" in err


@pytest.mark.parametrize("argv,printed", [
    (["ops", "--op", "ADD", "--budget", "0.01"], "| numpy"),
    (["pp8", "-r", "1"], "| tiny"),
], ids=["ops", "pp"])
def test_history_failing_after_the_run_loses_no_result(argv, printed, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "hist"
    monkeypatch.setattr(history, "HISTORY", folder / "h.jsonl")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the records are saved instead
    _small_ops(monkeypatch)

    def broken_after(run):  # the run passes the up-front check, then its history's folder becomes a file
        def wrapped(*args, **kwargs):
            records = run(*args, **kwargs)
            os.remove(folder / "h.jsonl")
            folder.rmdir()
            folder.write_text("")
            return records
        return wrapped
    monkeypatch.setattr(ops_bench, "run", broken_after(ops_bench.run))
    monkeypatch.setattr(throughput, "run", broken_after(throughput.run))
    assert main(argv + ["--backend", "numpy"]) == 1
    out, err = capsys.readouterr()
    assert printed in out  # the results were printed first
    assert "error: could not append" in err and f"to the history {folder / 'h.jsonl'}" in err
    spare, = tmp_path.glob("kbo-unrecorded-*.jsonl")
    assert f"they are saved in {spare}" in err
    saved = history.load(spare)
    assert saved and {r["backend"] for r in saved} == {"numpy"}


def test_all_skips_backends_the_run_does_not_fit(monkeypatch, capsys):
    monkeypatch.setattr(cli, "TESTED_BACKENDS", ["numpy", "vulkan"])
    _only_usable(monkeypatch, "numpy", "vulkan")
    class Limited:  # no runtime is touched
        def __init__(self, name):
            self.name = name

        def memory_limits(self):
            return {"device": (1 << 20, "a 1 MiB test device") if self.name == "vulkan" else None,
                    "max_alloc": None, "host_memory": self.name == "numpy"}
    monkeypatch.setattr(backends, "get_backend", Limited)
    ran = []
    monkeypatch.setattr(throughput, "run", lambda tests, depths, names, *rest: ran.append(names) or [])
    assert main(["pp16", "--depth", "300", "--backend", "all", "--no-record"]) == 0
    assert ran == [["numpy"]]
    assert capsys.readouterr().err.count("vulkan: skipped (vulkan needs about") == 1
    with pytest.raises(SystemExit) as done:  # named, it is an error
        main(["pp16", "--depth", "300", "--backend", "numpy,vulkan", "--no-record"])
    assert done.value.code == 2
    assert "more than a 1 MiB test device" in capsys.readouterr().err and ran == [["numpy"]]


@pytest.mark.parametrize("name", ["numpy", "ggml", "opencl", "vulkan", "cuda"])
def test_backends_report_their_memory_limits(name):
    """Each runtime's own figures (Backend.memory_limits), which the up-front memory check holds a run to."""
    limits = device_backend(name).memory_limits()
    assert set(limits) == {"device", "max_alloc", "host_memory"}
    for key in ("device", "max_alloc"):
        if limits[key] is not None:
            size, what = limits[key]
            assert size > 0 and what
    assert isinstance(limits["host_memory"], bool)
    assert limits["host_memory"] or limits["device"], "a device's own memory must be known"


# ---- --backend llama.cpp: llama.cpp's figures beside ours ----------------------------------------------------------

@pytest.mark.parametrize("value,split", [
    ("numpy,llama.cpp", ("numpy", True)),
    ("llama.cpp", ("", True)),
    ("all", ("all", False)),  # all is our backends: llama.cpp is the anchor, not one of them
    ("all,llama.cpp", ("all", True)),
    ("opencl, vulkan", ("opencl,vulkan", False)),
])
def test_llama_cpp_is_accepted_beside_our_backends(value, split):
    assert cli._bench_backends(value) == split


def _fake_record(backend, test, depth, avg_ts, variant="chunk16"):
    return {"kind": "bench", "backend": backend, "model": "tiny", "model_config": "tiny", "n_batch": 2048,
            "n_ubatch": 512, "variant": "-" if backend == "llama.cpp" else variant, "supported": True,
            "avg_ts": avg_ts, "stddev_ts": 1.0, **throughput._test_fields(throughput.BenchTest.parse(test), depth),
            **({} if backend == "llama.cpp" else {"harness_overhead": 0.1, "weights_bytes": 1 << 20,
                                                   "state_bytes": 1 << 20, "compute_planned_bytes": 1 << 20,
                                                   "compute_measured_bytes": 1 << 20})}


def test_vs_llama_cpp_column_is_the_ratio_for_the_same_test_and_depth(monkeypatch, capsys):
    _only_usable(monkeypatch, "numpy")
    ran = []
    records = [_fake_record("numpy", "pp512", 8192, 34.0), _fake_record("numpy", "pp512", 8192, 500.0, "chunk64"),
               _fake_record("numpy", "pp512", 0, 50.0),  # no llama.cpp figure at depth 0: blank
               _fake_record("numpy", "tg128", 8192, 10.0),
               _fake_record("llama.cpp", "pp512", 8192, 200.0), _fake_record("llama.cpp", "tg128", 8192, 40.0),
               {**_fake_record("llama.cpp", "pp512", 0, 0.0), "supported": False, "reason": "it crashed"}]
    monkeypatch.setattr(throughput, "run", lambda tests, depths, names, *rest: ran.append(names) or records)
    assert main(["pp512", "tg128", "--depth", "0,8192", "--backend", "numpy,llama.cpp", "--variant",
                 "chunk16,chunk64", "--no-record", "-o", "csv"]) == 0
    assert ran == [["numpy", "llama.cpp"]]
    out = capsys.readouterr().out
    table = pd.read_csv(io.StringIO(out.split("\n\n")[0]), keep_default_na=False)
    assert list(table["vs llama.cpp"]) == ["0.17x", "2.50x", "", "0.25x", "1.00x", "1.00x"]
    llama = table[table.backend == "llama.cpp"]
    assert list(llama["weights MiB"]) == ["", ""] and list(llama["harness %"]) == ["", ""]  # not measured: blank
    assert "llama.cpp: pp512 unsupported: it crashed" in out


def test_llama_cpp_alone_probes_none_of_our_backends(monkeypatch):
    _only_usable(monkeypatch)  # none of ours can run: llama.cpp alone still does
    ran = []
    monkeypatch.setattr(throughput, "run", lambda tests, depths, names, *rest: ran.append(names) or [])
    assert main(["pp16", "--backend", "llama.cpp", "--no-record"]) == 0
    assert ran == [["llama.cpp"]]


def test_llama_cpp_failure_is_an_unsupported_record_and_a_gguf_is_loaded_as_given(tmp_path, monkeypatch):
    from backends import llama_cpp
    from reference.gguf_io import write_gguf
    from reference.weights import random_weights

    c = get_config("tiny")
    path = str(tmp_path / "given.gguf")
    write_gguf(path, c, random_weights(c, 0))
    loaded = []

    def fail(gguf_path, tests, depth, *args, **kwargs):
        loaded.append((gguf_path, tests, depth))
        raise RuntimeError("llama.cpp on it failed (exit status 1)")
    monkeypatch.setattr(llama_cpp, "llama_cpp_bench", fail)
    recs = throughput.run_llama_cpp([throughput.BenchTest("pp", 8), throughput.BenchTest("tg", 2)], [0, 16], c,
                                    None, path, 2048, 512, 1)
    assert loaded == [(path, [("pp", 8), ("tg", 2)], 0), (path, [("pp", 8), ("tg", 2)], 16)]
    assert [(r["test"], r["supported"]) for r in recs] == [("pp8", False), ("tg2", False), ("pp8 @ d16", False),
                                                           ("tg2 @ d16", False)]
    assert {r["reason"] for r in recs} == {"llama.cpp on it failed (exit status 1)"}


def test_llama_cpp_runs_beside_ours_end_to_end(capsys):
    """The real thing, small: pp8 and tg4 on numpy and on llama.cpp (a child process on a temporary GGUF)."""
    assert main(["pp8", "tg4", "--model", "tiny", "--backend", "numpy,llama.cpp", "-r", "1", "--no-record",
                 "-o", "json"]) == 0
    out, err = capsys.readouterr()
    recs = json.loads(out)
    assert [(r["backend"], r["test"]) for r in recs] == [("numpy", "pp8"), ("numpy", "tg4"), ("llama.cpp", "pp8"),
                                                         ("llama.cpp", "tg4")]
    for rec in recs[2:]:
        assert rec["supported"] and rec["avg_ts"] > 0 and len(rec["samples_ts"]) == 1
        assert (rec["device"], rec["variant"], rec["form"], rec["flash_attn"], rec["n_threads"]) == \
            ("CPU", "-", "absorbed", True, 2)
        assert rec["driver"].startswith("llama.cpp via llama-cpp-python ") and "weights_bytes" not in rec
    assert "llama.cpp:            pp8" in err


@pytest.mark.parametrize("backend_name", ["opencl", "numpy"])
def test_profile_prints_kernel_time_per_op_and_top_nodes(backend_name, capsys):
    """--profile N: per test, kernel time by op and the N costliest nodes, from the backend's own timer; the records
    carry kernel_ns and the harness share, and not the per-node table."""
    device_backend(backend_name)
    assert main(["tg2", "--model", "tiny", "--backend", backend_name, "-r", "1", "--no-record", "--profile", "3",
                 "-o", "json"]) == 0
    out, err = capsys.readouterr()
    rec = json.loads(out)[0]
    timer = {"opencl": "OpenCL profiling events", "numpy": "host clock, with a wait after each node"}[backend_name]
    assert rec["kernel_ns"] > 0 and 0 <= rec["harness_overhead"] < 1 and rec["kernel_timer"] == timer
    assert "node_ns" not in rec
    assert f"{backend_name} chunk16 tg2: kernel time" in err and "MUL_MAT" in err
    top = err.split("  node ")[1].strip().splitlines()[1:]
    assert len(top) == 3


def test_profile_count_must_not_be_negative(capsys):
    with pytest.raises(SystemExit) as done:
        main(["tg2", "--profile", "-1", "--no-record"])
    assert done.value.code == 2 and "--profile must be >= 0" in capsys.readouterr().err
