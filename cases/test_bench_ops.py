"""`bench ops` in test-backend-ops terms: interleaved rounds, its perf fields and console line, the STREAM ceilings
(kernels of each backend computing the right values) and which one each op is held against, and why an op above its
ceiling is there."""
import dataclasses
import json
import re

import numpy as np
import pytest

import backends
from bench import ops as ops_bench
from bench import timing
from bench.__main__ import main
from reference.case import Case, Input
from reference.ops import REGISTRY, get_op
from reference.tensor import DType


def small_cases(monkeypatch, *ops):
    """The ops' perf cases replaced by their first pinned case, and small STREAM arrays: this checks plumbing."""
    for op in ops:
        monkeypatch.setitem(REGISTRY, op, dataclasses.replace(REGISTRY[op], perf=REGISTRY[op].pinned()[0]))
    monkeypatch.setattr(ops_bench, "STREAM_ARRAY_BYTES", 1 << 20)


# ---- rounds ----------------------------------------------------------------------------------------------------------
def test_rounds_are_interleaved():
    calls = []
    samplers = {key: (lambda key=key: calls.append(key) or float(len(calls))) for key in ("a", "b", "c")}
    samples = timing.interleaved(samplers, 3)
    assert calls == ["a", "b", "c"] * 3  # round 1 visits every key before round 2 starts
    assert samples == {"a": [1.0, 4.0, 7.0], "b": [2.0, 5.0, 8.0], "c": [3.0, 6.0, 9.0]}


def test_every_op_and_ceiling_is_sampled_once_per_round(monkeypatch):
    small_cases(monkeypatch, "ADD", "MUL_MAT")
    order = []
    real = timing.interleaved

    def spy(samplers, rounds, progress=""):
        out = real(samplers, rounds, progress)
        order.extend(samplers)
        return out
    monkeypatch.setattr(timing, "interleaved", spy)
    records = ops_bench.run(["ADD", "MUL_MAT"], ["numpy"], budget_s=0.01, reps=3)
    assert order == [("stream", "copy"), ("stream", "triad"), ("stream", "fill"), ("op", "ADD"), ("op", "MUL_MAT"),
                     ("library", "MUL_MAT")]
    ceilings, add, matmul = records
    assert ceilings["kind"] == "copy"
    assert all(len(ceilings[f"{k}_samples_gb_s"]) == 3 for k in ("copy", "triad", "fill"))
    for rec in (add, matmul):
        assert len(rec["samples_us"]) == 3 and rec["reps"] == 3 and rec["budget_s"] == 0.01
        assert rec["us_per_run"] == pytest.approx(float(np.median(rec["samples_us"])))
    assert len(matmul["ceiling_samples_gflops"]) == 3
    assert matmul["ceiling_gflops"] == pytest.approx(float(np.median(matmul["ceiling_samples_gflops"])))


# ---- test-backend-ops fields and console line ------------------------------------------------------------------------
def test_records_carry_test_backend_ops_fields(monkeypatch):
    small_cases(monkeypatch, "ADD")
    _, rec = ops_bench.run(["ADD"], ["numpy"], budget_s=0.01, reps=2)
    case = REGISTRY["ADD"].perf
    assert rec["backend_name"] == "numpy" and rec["op_name"] == "ADD" and rec["test_mode"] == "perf"
    assert f"ADD({rec['op_params']})" == case.label() and rec["supported"] and rec["passed"]
    assert rec["time_us"] == rec["us_per_run"] and rec["memory_kb"] == rec["bytes"] // 1024
    assert rec["bandwidth_gb_s"] == pytest.approx(rec["bytes"] / (rec["time_us"] / 1e6) / 2**30)
    assert rec["flops"] == 0.0  # a memory-bound op: test-backend-ops counts no flops for it, and shows GB/s
    assert rec["n_runs"] % 2 == 0 and rec["n_runs"] >= 2  # every timed run of both rounds
    # the history's required fields stay
    assert {"op", "backend", "case", "us_per_run", "frac_copy"} <= set(rec)


MEMORY = {"op_name": "ADD", "op_params": "type=f32,ne_a=[4096,1024],ne_b=[4096,1024]", "supported": True,
          "n_runs": 120, "time_us": 1986.11, "flops": 0.0, "memory_kb": 49152, "bandwidth_gb_s": 23.6,
          "flop_per_run": 4194304}


def test_console_line_is_test_backend_ops_line():
    line = ops_bench.console_line(MEMORY)
    assert re.fullmatch(r"  ADD\(type=f32,ne_a=\[4096,1024\],ne_b=\[4096,1024\]\): +120 runs -  1986\.11 us/run - "
                        r"+49152 kB/run -   23\.60 GB/s", line), line
    compute = {**MEMORY, "op_name": "MUL_MAT", "flops": 88.1e9, "flop_per_run": 1.07e9, "bandwidth_gb_s": 0.0}
    assert ops_bench.console_line(compute).endswith(" runs -  1986.11 us/run -   1.07 GFLOP/run -  88.10 GFLOPS")
    assert ops_bench.console_line({**MEMORY, "supported": False}) == f"  ADD({MEMORY['op_params']}): not supported"


def test_console_padding_matches_test_backend_ops():
    for params in ("x", "type=f32", "type=f32,ne_a=[1,2,3]"):
        head = f"  ADD({params}): "
        rest = ops_bench.console_line({**MEMORY, "op_params": params, "n_runs": 12345678})[len(head):]
        pad = len(rest) - len(rest.lstrip(" ")) - 4  # its padding, then the 4 spaces before an 8-digit %8d
        last = -(-len(head) // 8) * 8
        assert len(head) + pad == (last + 8 if last - len(head) < 5 else last)


# ---- ceilings --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("read,written,pattern", [(0, 100, "fill"), (12, 100, "fill"), (13, 100, "copy"),
                                                  (100, 100, "copy"), (149, 100, "copy"), (150, 100, "triad"),
                                                  (200, 100, "triad"), (4000, 1, "triad")])
def test_access_pattern_picks_the_ceiling(read, written, pattern):
    assert ops_bench.access_pattern(read, written) == pattern


@pytest.mark.parametrize("op,pattern", [("FILL", "fill"), ("DIAG", "fill"), ("EXP", "copy"), ("CONT", "copy"),
                                        ("ADD", "triad"), ("SUM_ROWS", "triad"), ("CPY", "triad")])
def test_each_op_is_held_against_its_access_pattern(op, pattern):
    # CPY's perf case converts f32 to f16: it reads twice what it writes
    from cases.harness import host_buffers
    from reference.node import make_node
    case = get_op(op).perf
    srcs, dst, _, params = host_buffers(case)
    node = make_node(case.op, [s.tensor for s in srcs], params, dst=None if dst is None else dst.tensor)
    assert ops_bench.access_pattern(*ops_bench.traffic(node)) == pattern


CACHE = 32 << 20


def test_an_op_under_its_ceiling_needs_no_reason():
    assert ops_bench.why_over_ceiling(0.99, 64 << 20, 32 << 20, "triad", CACHE) == ""
    assert ops_bench.why_over_ceiling(1.0, 1, 1, "copy", CACHE) == ""


@pytest.mark.parametrize("read,written,pattern,cache,why", [
    (0, 16 << 20, "fill", CACHE, "moves 16 MiB, which fit in the 32 MiB last-level cache"),
    (16 << 20, 32 << 20, "copy", CACHE, "reads 16 MiB, small enough to stay in the 32 MiB last-level cache"),
    (0, 64 << 20, "fill", CACHE, "writes only"),
    (256 << 20, 1 << 20, "triad", CACHE, "reads almost only"),
    (48 << 20, 64 << 20, "copy", CACHE, "reads less than it writes"),
    (128 << 20, 64 << 20, "triad", None, "the triad kernel is slower than this op's own kernel"),
])
def test_an_op_above_its_ceiling_says_why(read, written, pattern, cache, why):
    assert why in ops_bench.why_over_ceiling(2.5, read, written, pattern, cache)


def test_the_record_of_an_op_above_its_ceiling_carries_the_reason(monkeypatch):
    small_cases(monkeypatch, "FILL")
    backend = backends.get_backend("numpy")
    owned = []
    prepared = ops_bench.prepare_op(backend, REGISTRY["FILL"].perf, owned)
    slow = {"copy_gb_s": 1e-6, "triad_gb_s": 1e-6, "fill_gb_s": 1e-6}  # a ceiling every op exceeds
    rec = ops_bench._op_record("numpy", {"device": "d"}, prepared, [1e-3, 2e-3], 10, slow, CACHE, 2, 0.1)
    for buf in owned:
        backend.free(buf)
    assert rec["bw_ceiling"] == "fill" and rec["frac_bw_ceiling"] > 1
    assert "last-level cache" in rec["over_ceiling_why"]
    assert rec["us_per_run"] == pytest.approx(1500.0) and rec["n_runs"] == 20


# ---- the STREAM kernels of each backend compute what they claim -----------------------------------------------------
def _stream_backend(name):
    if name == "cuda-emulated":
        from backends.cuda.host_emulation import EmulatedCudaBackend, compiler
        if compiler() is None:
            pytest.skip("no host C++ compiler for the CUDA emulation")
        return EmulatedCudaBackend()
    why = backends.availability(name)
    if why:
        pytest.skip(why)
    return backends.get_backend(name)


@pytest.mark.parametrize("name", ["opencl", "vulkan", "numpy", "ggml", "cuda-emulated", "cuda"])
def test_stream_kernels_compute_copy_triad_and_fill(name):
    backend = _stream_backend(name)
    n = 2 * max(1024, backend.stream_granule) if name != "cuda-emulated" else 600  # a tiny buffer
    rng = np.random.default_rng(1)
    a, b, c = (rng.uniform(-1, 1, n).astype(np.float32) for _ in range(3))
    ins = [backend.upload(x) for x in (a, b, c)]
    out = backend.upload(np.full(n, np.nan, dtype=np.float32))

    def result():
        backend.synchronize()
        return backend.read(out).view(np.float32)[:n]
    backend.stream("copy", [out, ins[0]], n)()
    assert np.array_equal(result(), a)
    backend.stream("triad", [out, ins[1], ins[2]], n, 2.0)()  # s = 2: s*c is exact, fused or not
    assert np.array_equal(result(), b + np.float32(2.0) * c)
    backend.stream("fill", [out], n, -1.25)()
    assert np.array_equal(result(), np.full(n, -1.25, dtype=np.float32))
    assert backend.stream_source != "?"


@pytest.mark.parametrize("kernel,count,n,message", [
    ("scale", 2, 1024, "unknown stream kernel 'scale'"),
    ("triad", 2, 1024, "stream triad takes 3 buffers, got 2"),
    ("copy", 2, 0, "take a positive multiple"),
    ("copy", 2, 1 << 20, "needs 4194304-byte buffers"),
])
def test_bad_stream_arguments_are_refused(kernel, count, n, message):
    backend = backends.get_backend("numpy")
    bufs = [backend.alloc(4096) for _ in range(count)]
    with pytest.raises(ValueError, match=message):
        backend.stream(kernel, bufs, n)


def test_vulkan_refuses_a_count_its_kernel_cannot_cover():
    backend = _stream_backend("vulkan")
    bufs = [backend.alloc(8192) for _ in range(2)]
    with pytest.raises(ValueError, match="multiple of 1024 elements, got 1000"):
        backend.stream("copy", bufs, 1000)


# ---- the command line ------------------------------------------------------------------------------------------------
def test_repetitions_below_one_are_refused_before_work(monkeypatch, capsys):
    monkeypatch.setattr(ops_bench, "prepare_streams", lambda *a: pytest.fail("work started"))
    with pytest.raises(SystemExit) as done:
        main(["ops", "--op", "ADD", "--backend", "numpy", "-r", "0", "--no-record"])
    assert done.value.code == 2 and "-r/--repetitions must be >= 1, got 0" in capsys.readouterr().err


def test_console_lines_json_and_sql_outputs(monkeypatch, capsys):
    small_cases(monkeypatch, "ADD")
    assert main(["ops", "--op", "ADD", "--backend", "numpy", "--budget", "0.01", "-r", "2", "--no-record",
                 "-o", "jsonl"]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["kind"] for r in records] == ["copy", "ops"] and records[1]["samples_us"]
    assert re.search(r"^  ADD\(.*\): +\d+ runs - +[\d.]+ us/run - +\d+ kB/run - +[\d.]+ GB/s$", err, re.M), err
    assert "STREAM ceilings: copy" in err
    assert main(["ops", "--op", "ADD", "--backend", "numpy", "--budget", "0.01", "-r", "2", "--no-record",
                 "-o", "sql"]) == 0
    sql = capsys.readouterr().out
    assert sql.startswith("CREATE TABLE IF NOT EXISTS test_backend_ops (\n  test_time TEXT,")
    assert "INSERT INTO test_backend_ops (test_time, build_commit, backend_name, op_name, op_params" in sql
    assert "'numpy', 'ADD', 'type=f32" in sql and "'perf', 1, 1, ''" in sql
    import sqlite3
    db = sqlite3.connect(":memory:")
    db.executescript(sql)
    assert db.execute("select op_name, test_mode, n_runs > 0 from test_backend_ops").fetchall() == [("ADD", "perf", 1)]
    assert main(["ops", "--op", "ADD", "--backend", "numpy", "--budget", "0.01", "-r", "2", "--no-record",
                 "-o", "csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()[:2]
    assert header.split(",")[:4] == ["backend", "op", "us_per_run", "gb_s"] and float(row.split(",")[2]) > 0


# ---- --type: quantized weights --------------------------------------------------------------------------------------
def small_quantized(monkeypatch):
    """bench ops --type's cases at a small width (256 x 64 weights), and small STREAM arrays: plumbing only."""
    def cases(dtype):
        return [Case.of("MUL_MAT", Input((256, 64), dtype), Input((256, m))) for m in (1, 512)]
    monkeypatch.setattr(ops_bench, "quantized_perf_cases", cases)
    monkeypatch.setattr(ops_bench, "STREAM_ARRAY_BYTES", 1 << 20)


def test_type_selects_the_mat_vec_as_gb_s_and_the_batch_as_gflops(monkeypatch):
    small_quantized(monkeypatch)
    ceilings, mat_vec, batch = ops_bench.run(["MUL_MAT"], ["numpy"], budget_s=0.01, reps=2, dtype=DType.Q4_K)
    assert ceilings["kind"] == "copy"
    for rec in (mat_vec, batch):
        assert rec["type"] == "q4_K" and rec["op"] == "MUL_MAT" and rec["weight_bytes"] == 64 * 144
        assert rec["weights_gb_s"] == pytest.approx(rec["weight_bytes"] / (rec["us_per_run"] / 1e6) / 1e9)
        assert rec["frac_weights_bw_ceiling"] == pytest.approx(rec["weights_gb_s"] / rec["bw_ceiling_gb_s"])
    assert mat_vec["flops"] == 0.0 and mat_vec["bandwidth_gb_s"] > 0 and "GB/s" in ops_bench.console_line(mat_vec)
    assert batch["flops"] > 0 and "GFLOPS" in ops_bench.console_line(batch)
    assert mat_vec["case"] != batch["case"] and "ne_a=[256,64]" in mat_vec["op_params"]


def test_low_bit_mat_vec_stays_bandwidth_bound(monkeypatch):
    """q2_K's mat-vec has more flops per byte than COMPUTE_BOUND_FLOP_PER_BYTE; it is reported in GB/s anyway."""
    small_quantized(monkeypatch)
    _, mat_vec, _ = ops_bench.run(["MUL_MAT"], ["numpy"], budget_s=0.01, reps=1, dtype=DType.Q2_K)
    assert mat_vec["flop_per_run"] > ops_bench.COMPUTE_BOUND_FLOP_PER_BYTE * mat_vec["bytes"]
    assert mat_vec["flops"] == 0.0 and mat_vec["type"] == "q2_K"


def test_plain_records_carry_their_type_too(monkeypatch):
    small_cases(monkeypatch, "ADD")
    _, rec = ops_bench.run(["ADD"], ["numpy"], budget_s=0.01, reps=1)
    assert rec["type"] == "f32" and "weights_gb_s" not in rec


def test_type_table_names_cases_and_weights_gb_s(monkeypatch, capsys):
    small_quantized(monkeypatch)
    assert main(["ops", "--type", "q8_0", "--backend", "numpy", "--budget", "0.01", "-r", "1", "--no-record",
                 "-o", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["backend", "op", "case"] and "weights_gb_s" in header and len(lines) == 3


@pytest.mark.parametrize("argv,message", [
    (["--type", "f16"], "--type must be a quantized type: q8_0, q4_0"),
    (["--type", "q9_0"], "got 'q9_0'"),
    (["--type", "q4_K", "--op", "ADD"], "--type selects MUL_MAT's quantized perf cases; --op must be MUL_MAT, got ADD"),
])
def test_bad_type_refused_before_work(monkeypatch, capsys, argv, message):
    monkeypatch.setattr(ops_bench, "prepare_streams", lambda *a: pytest.fail("work started"))
    with pytest.raises(SystemExit) as done:
        main(["ops", "--backend", "numpy", "--no-record", *argv])
    assert done.value.code == 2 and message in capsys.readouterr().err


def test_sql_writes_a_missing_or_non_finite_figure_as_null():
    import sqlite3

    from bench import ops as ops_bench

    record = {"kind": "ops", "backend_name": "OpenCL", "op_name": "ADD", "supported": True, "time_us": 5.0,
              "gb_s": float("nan"), "n_runs": 3}
    db = sqlite3.connect(":memory:")
    db.executescript(ops_bench.to_sql([record, {"kind": "copy"}], "abc", "2026-12-01T00:00:00Z"))
    assert db.execute(f"SELECT op_name, supported, time_us, gb_s, memory_kb FROM {ops_bench.SQL_TABLE}").fetchall() \
        == [("ADD", 1, 5.0, None, None)]
