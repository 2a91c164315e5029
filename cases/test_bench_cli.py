"""python -m bench refuses bad names with the list of valid ones, and its figures land in the history."""
import dataclasses
import datetime as dt
import io
import json
import os
import sys
import tempfile

import pandas as pd
import pytest

import backends
import bench.__main__ as cli
from bench import delta_net as delta_net_bench
from bench import llama_bench
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
    monkeypatch.setattr(ops_bench, "STREAM_ARRAY_BYTES", 1 << 20)
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
    for module, name in ((throughput, "ModelSession"), (ops_bench, "prepare_streams"), (ops_bench, "prepare_op"),
                         (parity_bench, "run_parity"), (delta_net_bench, "GraphPlan")):
        monkeypatch.setattr(module, name, refuse)


def _small_ops(monkeypatch):
    monkeypatch.setattr(ops_bench, "STREAM_ARRAY_BYTES", 1 << 20)
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
    assert "pp16 at depth 1000000000 with -b 2048 -ub 512 does not fit: numpy needs about" in err
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
    (["pp16", "--depth", "abc"], "-d takes N, first-last, first-last+step or first-last*mult, comma-separated; "
                                 "got 'abc'"),
    (["pp16", "-d", "0,8k"], "-d takes N, first-last, first-last+step or first-last*mult, comma-separated; got '0,8k'"),
    (["pp16", "--n-depth", "0,-1"], "-d takes N, first-last"),
    (["pp16", "-ub", "0"], "-ub must be >= 1, got 0"),
    (["pp16", "-b", "512,0-4+2"], "-b must be >= 1, got 0"),
    (["pp16", "-r", "0"], "-r must be >= 1, got 0"),
    (["-p", "512-16"], "-p: the range '512-16' is empty (last < first)"),
    (["-p", "16-64*1"], "-p: the range '16-64*1' does not advance"),
    (["-n", "0-8*2"], "-n: the range '0-8*2' does not advance"),
    (["-n", "4-8/2"], "-n takes N, first-last"),
    (["-p", "0", "-n", "0"], "no test to run: name ppN/tgN tests or give -p/-n values other than 0"),
    (["-p", "-5"], "-p takes N, first-last"),
    (["-o", "xml"], "argument -o/--output: invalid choice: 'xml'"),
    (["-r", "many"], "argument -r/--repetitions: invalid int value: 'many'"),
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
                 "chunk16,chunk64", "--no-record"]) == 0
    assert ran == [["numpy", "llama.cpp"]]
    out = capsys.readouterr().out
    table = _markdown_table(out)
    assert list(table["vs llama.cpp"]) == ["0.17x", "2.50x", "", "0.25x", "1.00x", "1.00x"]
    llama = table[table.backend == "llama.cpp"]
    assert list(llama["weights MiB"]) == ["", ""] and list(llama["harness %"]) == ["", ""]  # not measured: blank
    assert "llama.cpp: pp512 unsupported: it crashed" in out


def _markdown_table(out: str) -> pd.DataFrame:
    """The first markdown table of `out`, every cell as text (blank cells as "")."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return pd.DataFrame(cells[2:], columns=cells[0])


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
        # llama-bench's fields as llama-bench would fill them for llama.cpp's CPU backend
        assert (rec["backends"], rec["gpu_info"], rec["n_gpu_layers"], rec["flash_attn"], rec["model_type"]) == \
            ("CPU", "", 0, 1, "tiny")
        assert rec["model_size"] == recs[0]["model_size"] == 4 * rec["model_n_params"]  # an F32 GGUF of the same
    assert recs[0]["model_size"] == recs[0]["weights_bytes"]  # weights: ours as our allocator counts them
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


# ---- llama-bench's flags, value syntax and output formats ----------------------------------------------------------

@pytest.mark.parametrize("text,values", [
    ("512", [512]), ("0,128,512", [0, 128, 512]), ("1-4", [1, 2, 3, 4]), ("0-8192+4096", [0, 4096, 8192]),
    ("16-64*2", [16, 32, 64]), ("10-20+7", [10, 17]), ("16-100*2", [16, 32, 64]), ("8,1-2", [8, 1, 2]),
])
def test_llama_bench_value_syntax(text, values):
    """llama-bench's parse_int_range: N, first-last, first-last+step, first-last*mult, comma-separated."""
    assert llama_bench.parse_int_range("-p", text, 0) == values


def _runs(monkeypatch) -> list[dict]:
    """Every throughput.run call of a main() from now on, with what it was asked; nothing runs."""
    calls = []

    def fake(tests, depths, names, c, weights, model, variants, form, n_batch, n_ubatch, reps, profile=0):
        calls.append({"tests": [t.label(0) for t in tests], "depths": depths, "backends": names,
                      "batch": (n_batch, n_ubatch), "reps": reps})
        return []
    monkeypatch.setattr(throughput, "run", fake)
    return calls


@pytest.mark.parametrize("argv,tests,depths,batches", [
    ([], ["pp512", "tg128"], [0], [(2048, 512)]),  # llama-bench's defaults: -p 512 -n 128 -d 0
    (["-p", "64", "-d", "8192"], ["pp64", "tg128"], [8192], [(2048, 512)]),  # -n keeps its default
    (["-n", "0"], ["pp512"], [0], [(2048, 512)]),
    (["pp16"], ["pp16"], [0], [(2048, 512)]),  # named tests stand alone
    (["pp16", "-p", "32,16", "tg4"], ["pp16", "tg4", "pp32"], [0], [(2048, 512)]),  # combined, each once
    (["-p", "16-64*2", "-p", "8", "-n", "0"], ["pp16", "pp32", "pp64", "pp8"], [0], [(2048, 512)]),  # repeated
    (["pp8", "--depth", "0", "-d", "256-512+256", "--n-depth", "1024"], ["pp8"], [0, 256, 512, 1024], [(2048, 512)]),
    (["tg2", "-b", "1024,2048", "-ub", "256-512*2"], ["tg2"], [0],
     [(1024, 256), (1024, 512), (2048, 256), (2048, 512)]),
    (["tg2", "-b", "256", "-ub", "512"], ["tg2"], [0], [(256, 256)]),  # the ubatch clamped to the batch
])
def test_llama_bench_flags_choose_the_runs(argv, tests, depths, batches, monkeypatch):
    calls = _runs(monkeypatch)
    assert main(argv + ["--backend", "numpy", "--no-record", "-r", "3"]) == 0
    assert [c["batch"] for c in calls] == batches
    assert all(c["tests"] == tests and c["depths"] == depths and c["reps"] == 3 and c["backends"] == ["numpy"]
               for c in calls)


def test_help_shows_the_throughput_flags(capsys):
    """A user finds -p/-n/-d from `python -m bench --help`, and no help names the old history file."""
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("-p N, --n-prompt N", "-n N, --n-gen N", "-d N, --n-depth N, --depth N", "-b N, --batch-size N",
                 "-ub N, --ubatch-size N", "-r N, --repetitions N", "{md,csv,json,jsonl,sql}", "first-last*mult",
                 "--history PATH", "ops", "parity"):
        assert flag in out
    for argv in (["--help"], ["pp8", "--help"], ["ops", "--help"], ["delta-net", "--help"], ["parity", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "reports/history.jsonl" not in text
        assert argv == ["--help"] or "--history PATH" in text


@pytest.fixture(scope="module")
def tiny_records():
    """One real pp8/tg2 run on numpy, 2 repetitions: records as throughput.run returns them."""
    from reference.weights import random_weights

    c = get_config("tiny")
    return throughput.run([throughput.BenchTest("pp", 8), throughput.BenchTest("tg", 2)], [0], ["numpy"], c,
                          random_weights(c, 0), "tiny", ["chunk16"], "absorbed", 2048, 512, 2)


def _formatted(fmt, records, monkeypatch, capsys, extra=()) -> tuple[str, str]:
    """stdout and stderr of `python -m bench -o fmt` whose run returned `records` (and the `extra` ones)."""
    monkeypatch.setattr(throughput, "run", lambda *args: [dict(r) for r in records] + list(extra))
    assert main(["pp8", "tg2", "--backend", "numpy", "--no-record", "-o", fmt]) == 0
    return capsys.readouterr()


_PY_TYPES = {llama_bench.TEXT: str, llama_bench.INT: int, llama_bench.BOOL: bool, llama_bench.FLOAT: float}


def _check_llama_bench_row(row: dict) -> None:
    """Every llama-bench field with its type, its order, its units, and our columns after them."""
    assert list(row)[:len(llama_bench.FIELDS) + 2] == llama_bench.FIELD_NAMES + ["samples_ns", "samples_ts"]
    for name, kind in llama_bench.FIELDS:
        assert type(row[name]) is _PY_TYPES[kind], (name, row[name])
    tokens = row["n_prompt"] + row["n_gen"]
    assert row["samples_ns"] == [round(1e9 * tokens / ts) for ts in row["samples_ts"]]
    assert row["avg_ns"] == round(sum(row["samples_ns"]) / len(row["samples_ns"])) and row["stddev_ns"] > 0
    assert row["build_commit"] == history.commit().removesuffix("-dirty")
    assert row["build_number"] > 0 and row["cpu_info"] == history.machine()["cpu"]
    assert (row["backends"], row["gpu_info"], row["n_gpu_layers"], row["type_k"], row["flash_attn"]) == \
        ("NumPy", "", 0, "f32", 0)
    assert row["model_size"] == row["weights_bytes"] and row["model_n_params"] > 0
    assert row["model_type"] == "tiny chunk16 absorbed" and row["model_filename"] == "tiny"
    dt.datetime.strptime(row["test_time"], "%Y-%m-%dT%H:%M:%SZ")
    for name in ("backend", "variant", "form", "compute_planned_bytes", "compute_measured_bytes", "state_bytes",
                 "harness_overhead"):
        assert name in row


_UNSUPPORTED = {"kind": "bench", "backend": "numpy", "test": "tg2", "supported": False, "reason": "not today"}


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_formats_carry_llama_bench_fields(fmt, tiny_records, monkeypatch, capsys):
    out, err = _formatted(fmt, tiny_records, monkeypatch, capsys, [_UNSUPPORTED])
    rows = json.loads(out) if fmt == "json" else [json.loads(line) for line in out.splitlines()]
    assert [r["test"] for r in rows] == ["pp8", "tg2"]  # results only: the unsupported one is said on stderr
    for row in rows:
        _check_llama_bench_row(row)
        assert set(llama_bench.COMPARE_REQUIRED) <= set(row)
    assert "numpy: tg2 unsupported: not today" in err


def test_csv_is_llama_bench_fields_then_ours_all_numeric(tiny_records, monkeypatch, capsys):
    out, err = _formatted("csv", tiny_records, monkeypatch, capsys, [_UNSUPPORTED])
    assert "±" not in out and "numpy: tg2 unsupported: not today" in err
    table = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert list(table.columns) == llama_bench.FIELD_NAMES + [name for name, _ in llama_bench.OUR_COLUMNS]
    assert list(table["test"]) == ["pp8", "tg2"]
    for name, kind in llama_bench.FIELDS + llama_bench.OUR_COLUMNS:
        if kind != llama_bench.TEXT:  # numbers, booleans as 0/1 (llama-bench's csv)
            assert pd.api.types.is_numeric_dtype(table[name]), name
    assert list(table["avg_ts"]) == pytest.approx([r["avg_ts"] for r in tiny_records])
    assert set(table["cpu_strict"]) == {0} and set(table["flash_attn"]) == {0}


def test_sql_creates_llama_benchs_table_and_runs_in_sqlite(tiny_records, monkeypatch, capsys):
    import sqlite3

    quoted = [{**r, "model_filename": "it's.gguf"} for r in tiny_records]  # a quote in a value stays a value
    out, err = _formatted("sql", quoted, monkeypatch, capsys, [_UNSUPPORTED])
    assert out.startswith(f"CREATE TABLE IF NOT EXISTS {llama_bench.SQL_TABLE} (\n  build_commit TEXT,\n")
    assert out.count("INSERT INTO llama_bench (") == 2 and "numpy: tg2 unsupported: not today" in err
    db = sqlite3.connect(":memory:")
    db.executescript(out)
    db.executescript(out)  # appending a second run to the same database
    columns = [row[1] for row in db.execute(f"PRAGMA table_info({llama_bench.SQL_TABLE})")]
    assert columns == llama_bench.FIELD_NAMES + [name for name, _ in llama_bench.OUR_COLUMNS]
    rows = db.execute("SELECT model_filename, n_prompt, n_gen, typeof(avg_ts), typeof(avg_ns), typeof(cpu_strict), "
                      "backend, compute_planned_bytes FROM llama_bench").fetchall()
    assert rows == 2 * [("it's.gguf", 8, 0, "real", "integer", "integer", "numpy",
                         tiny_records[0]["compute_planned_bytes"]),
                        ("it's.gguf", 0, 2, "real", "integer", "integer", "numpy",
                         tiny_records[1]["compute_planned_bytes"])]
    # compare-llama-bench.py's sqlite loader: its key properties, build_commit, test_time and avg_ts, in llama_bench
    db.execute(f"SELECT {', '.join(llama_bench.COMPARE_REQUIRED)} FROM llama_bench").fetchall()


def test_llama_bench_field_list_covers_what_compare_llama_bench_needs():
    names = llama_bench.FIELD_NAMES
    assert len(names) == len(set(names)) == 42  # test::get_fields() of the llama.cpp read
    assert set(llama_bench.COMPARE_REQUIRED) <= set(names)
    assert not set(names) & {name for name, _ in llama_bench.OUR_COLUMNS}


def test_history_records_keep_their_fields_and_gain_llama_benchs(tiny_records):
    for rec in tiny_records:
        assert history.problem(history.stamp(rec)) is None
        for name in ("test", "backend", "model", "variant", "form", "n_batch", "n_ubatch", "n_depth", "avg_ts",
                     "stddev_ts", "samples_ts", "reps", "weights_bytes", "state_bytes", "compute_planned_bytes",
                     "compute_measured_bytes", "kernel_ns", "harness_overhead", "kernel_timer", "test_kind"):
            assert name in rec
        assert set(llama_bench.FIELD_NAMES) <= set(rec)


# ---- --history PATH ----------------------------------------------------------------------------------------------

_FAKE_RUNS = {
    "pp": (["pp8", "-r", "1"], lambda monkeypatch: monkeypatch.setattr(
        throughput, "run", lambda *args: [_fake_record("numpy", "pp8", 0, 10.0)])),
    "ops": (["ops", "--op", "ADD"], lambda monkeypatch: monkeypatch.setattr(
        ops_bench, "run", lambda *args: [{"kind": "copy", "backend": "numpy"}])),
    "delta-net": (["delta-net", "--T", "16", "--variant", "chunk16"], lambda monkeypatch: monkeypatch.setattr(
        delta_net_bench, "run", lambda *args: [{"kind": "delta_net", "backend": "numpy", "variant": "chunk16",
                                                "planned_compute_bytes": 1}])),
    "parity": (["parity"], lambda monkeypatch: monkeypatch.setattr(
        parity_bench, "run_cli", lambda *args: ([{"kind": "parity", "backend": "numpy", "passed": True}], True))),
}


@pytest.mark.parametrize("command", list(_FAKE_RUNS))
def test_history_flag_names_where_records_go(command, tmp_path, monkeypatch, capsys):
    argv, fake = _FAKE_RUNS[command]
    default = tmp_path / "default.jsonl"
    monkeypatch.setattr(history, "HISTORY", default)
    fake(monkeypatch)
    chosen = tmp_path / "elsewhere" / "mine.jsonl"
    assert main(argv + ["--backend", "numpy", "--history", str(chosen)]) == 0
    lines = [json.loads(line) for line in chosen.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["backend"] == "numpy" and lines[0]["commit"]
    assert not default.exists()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as done:  # refused before any work, naming the file
        main(argv + ["--backend", "numpy", "--history", str(tmp_path / "a_file" / "h.jsonl")])
    assert done.value.code == 2
    assert f"cannot append to the history {tmp_path / 'a_file' / 'h.jsonl'}" in capsys.readouterr().err


# ---- progress on long work -----------------------------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_prefill_and_repetitions_on_a_terminal(monkeypatch, capsys):
    args = ["pp8", "-d", "24", "-ub", "8", "-r", "2", "--backend", "numpy", "--no-record", "-o", "json"]
    assert main(args) == 0
    assert "prefill" not in capsys.readouterr().err  # not a terminal: no bar
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(args) == 0
    shown = terminal.getvalue()
    # each bar shows as it starts (later updates are rate-limited): three ubatches of 8; a warm-up and 2 repetitions
    assert "numpy chunk16 prefill d24:   0%" in shown and " 0/3 " in shown.split("prefill d24")[1].split("\r")[0]
    assert "numpy chunk16 pp8 warm-up + reps:   0%" in shown
