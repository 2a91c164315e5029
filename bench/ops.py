"""Per-op performance in test-backend-ops' `perf` mode: us/run, GB/s and GFLOPS of each op's perf case (its record's
`perf`, >= 16 MiB per operand for memory-bound ops), each held against a ceiling measured in the same run by the
backend itself.

Timing: every op, STREAM kernel and library product of a backend is prepared first, then measured in R rounds
interleaved (timing.interleaved): each round takes one timed batch of each, sized so the R batches share --budget;
us_per_run is the median of the R rounds, and samples_us keeps them all.

Ceilings: the backend's own STREAM kernels (Backend.stream: copy c = a, triad a = b + s*c, fill a = s) over arrays
of STREAM_ARRAY_BYTES, far beyond any cache, give the bandwidth of each access pattern; an op is held against the
one whose traffic is most like its own (access_pattern). An op still above its ceiling gets the reason in
over_ceiling_why (why_over_ceiling) instead of a bare percentage. Matrix products are also held against the
library's GFLOPS on the same product (cuBLAS through the backend, else NumPy's BLAS on the host), measured in the
same rounds.

Records carry test-backend-ops' perf fields (backend_name, op_name, op_params, test_mode, time_us, flops = FLOP/s,
bandwidth_gb_s in its GiB-based unit, memory_kb, n_runs, device_description) beside our own, and console_line prints
its line.

Quantized weights (`--type q4_K`): MUL_MAT's perf cases become reference.ops.matmul.quantized_perf_cases(type), the
decode mat-vec at Kimi's widest projection, reported as GB/s of weights read (weights_gb_s, against the STREAM
ceiling) whatever its flops per byte, and the same weights over 512 columns, reported as GFLOPS. Every record carries
its weights' type (`type`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

import backends as registry
from backends.base import STREAM_SCALAR, STREAM_SOURCES
from bench import timing
from bench.llama_bench import sql_script
from cases.harness import host_buffers
from reference.case import Case
from reference.node import make_node
from reference.ops import REGISTRY, get_op
from reference.ops.matmul import quantized_perf_cases
from reference.tensor import QUANTIZED, DType

STREAM_ARRAY_BYTES = 64 << 20  # per array: several times any last-level cache (an H200's L2 holds 50 MiB)
MATMUL_OPS = {"MUL_MAT", "MUL_MAT_ID"}
# Above this many flops per byte moved an op is compute-bound: its console line shows FLOPS, as test-backend-ops'
# does for the ops it counts flops of (matrix products, the delta net), and GB/s otherwise.
COMPUTE_BOUND_FLOP_PER_BYTE = 4
# Bytes a STREAM kernel moves per element: STREAM's count (reads + writes, no write-allocate traffic).
STREAM_MOVES = {kernel: 4 * (sources + 1) for kernel, sources in STREAM_SOURCES.items()}
MIB = 1 << 20


def access_pattern(read_bytes: int, written_bytes: int) -> str:
    """The STREAM kernel whose traffic is most like an op's: "fill" when it (almost) only writes (reads < 1/8 of its
    writes), "triad" when it reads at least 1.5x what it writes (two inputs, a reduction), else "copy"."""
    if read_bytes * 8 < written_bytes:
        return "fill"
    if read_bytes >= 1.5 * written_bytes:
        return "triad"
    return "copy"


def traffic(node) -> tuple[int, int]:
    """(bytes read, bytes written) of a node: the op's bytes moved, of which its destination's are writes."""
    moved = node.op.bytes(node.srcs, node.dst, node.params)
    written = min(node.dst.nbytes(), moved)
    return moved - written, written


def why_over_ceiling(frac: float, read_bytes: int, written_bytes: int, pattern: str, cache_bytes: int | None) -> str:
    """Why an op's GB/s can exceed its ceiling (frac > 1), from its traffic against the last-level cache; "" when it
    does not exceed it."""
    if frac <= 1:
        return ""
    moved = read_bytes + written_bytes
    if cache_bytes and moved <= cache_bytes:
        return (f"moves {moved / MIB:.3g} MiB, which fit in the {cache_bytes / MIB:.3g} MiB last-level cache: runs "
                f"after the first hit cache, not memory")
    if cache_bytes and 0 < read_bytes <= cache_bytes:
        return (f"reads {read_bytes / MIB:.3g} MiB, small enough to stay in the {cache_bytes / MIB:.3g} MiB "
                f"last-level cache between runs")
    if pattern == "fill":
        return "writes only, faster than the backend's fill kernel (a better store path in the op's kernel)"
    if pattern == "triad" and read_bytes >= 4 * written_bytes:
        return "reads almost only (a reduction): no write traffic, where triad writes a third of its bytes"
    if pattern == "copy" and read_bytes < written_bytes:
        return "reads less than it writes: its small or broadcast source stays in cache"
    return f"the {pattern} kernel is slower than this op's own kernel on this backend"


def weight_type(label: str) -> DType:
    """The quantized type `bench ops --type` names (ggml's name, any case: q4_K, Q8_0); ValueError otherwise."""
    by_label = {t.label.lower(): t for t in QUANTIZED}
    if label.lower() not in by_label:
        raise ValueError(f"--type must be a quantized type: {', '.join(t.label for t in QUANTIZED)}; got {label!r}")
    return by_label[label.lower()]


def perf_cases(ops: list[str], dtype: DType | None = None) -> list[Case]:
    """What `bench ops` times: each op's record perf case, or with a weight type MUL_MAT's cases for that type (the
    only op --type applies to; ValueError for another)."""
    if dtype is None:
        return [get_op(op).perf for op in ops]
    if ops != ["MUL_MAT"]:
        raise ValueError(f"--type selects MUL_MAT's quantized perf cases; --op must be MUL_MAT, got {','.join(ops)}")
    return quantized_perf_cases(dtype)


def case_keys(cases: list[Case]) -> list[str]:
    """A name for each case in the rounds and records: its op, or its label where one op has several cases."""
    ops = [c.op for c in cases]
    return [c.op if ops.count(c.op) == 1 else c.label() for c in cases]


def quantized_mat_vec(node) -> bool:
    """A product of quantized weights by one column (decode): it reads each weight byte once, so GB/s is its figure
    even where a low-bit type gives it more flops per byte than COMPUTE_BOUND_FLOP_PER_BYTE."""
    b = node.srcs[1]
    return node.op.name == "MUL_MAT" and node.srcs[0].dtype.quantized and b.ne[1] * b.ne[2] * b.ne[3] == 1


def op_params(case: Case) -> str:
    """test-backend-ops' op_params: the case's vars string, what its label holds between the parentheses."""
    return case.label()[len(case.op) + 1:-1]


@dataclass
class Timed:
    """One thing measured in the rounds: its run, the sync that waits for it, and its batch size."""
    run: Callable[[], None]
    sync: Callable[[], None]
    runs: int = 1

    def sample(self) -> float:
        return timing.measure(self.run, self.sync, 1, per_sample=self.runs, warmup=False)[0]


def _stream_elements(backend) -> int:
    return STREAM_ARRAY_BYTES // 4 // backend.stream_granule * backend.stream_granule


def prepare_streams(backend, owned: list) -> dict[str, Timed]:
    """The backend's STREAM kernels over three arrays (appended to `owned`), as STREAM runs them."""
    n = _stream_elements(backend)
    a, b, c = (backend.upload(np.full(n, v, dtype=np.float32)) for v in (1.0, 2.0, 0.5))
    owned += [a, b, c]
    kernels = {"copy": [c, a], "triad": [a, b, c], "fill": [a]}
    return {k: Timed(backend.stream(k, bufs, n, STREAM_SCALAR), backend.synchronize) for k, bufs in kernels.items()}


@dataclass
class PreparedOp:
    case: Case
    node: object = None
    timed: Timed | None = None
    reason: str = ""  # why the backend does not run it


def prepare_op(backend, case: Case, owned: list) -> PreparedOp:
    """The case's node bound to buffers of the backend (appended to `owned`) and prepared, or the backend's refusal."""
    srcs, dst, _, params = host_buffers(case)
    bufs = [backend.upload(s.raw) for s in srcs]
    dst_buf = backend.upload(dst.raw) if dst is not None else None
    owned += bufs + ([dst_buf] if dst_buf else [])
    node = make_node(case.op, [s.tensor.with_buffer(b) for s, b in zip(srcs, bufs)], params,
                     dst=dst.tensor.with_buffer(dst_buf) if dst is not None else None)
    reason = backend.supports(node)
    if reason:
        return PreparedOp(case, node, reason=reason)
    return PreparedOp(case, node, Timed(backend.prepare(node), backend.synchronize))


def _matmul_shape(case: Case) -> tuple[int, int, int]:
    """(m, n, k) of the library product with the case's total work."""
    k, n = case.inputs[0].ne[:2]
    if case.op == "MUL_MAT":
        return int(np.prod(case.inputs[1].ne[1:])), n, k
    return int(np.prod(case.inputs[2].ne[:2])), n, k  # MUL_MAT_ID: every (token, slot) multiplies one expert


def _library_matmul(backend, case: Case) -> tuple[str, Timed]:
    """(library, its timed product): cuBLAS through the backend where it has one, else NumPy's BLAS on the host (the
    ceiling for CPU drivers)."""
    m, n, k = _matmul_shape(case)
    run = backend.library_matmul(m, n, k)
    if run is not None:
        return "cuBLAS", Timed(run, backend.synchronize)
    rng = np.random.default_rng(0)
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    return f"NumPy BLAS ({np.__version__})", Timed(lambda: np.matmul(a, b, out=out), lambda: None)


def _stream_record(name: str, info: dict, backend, streams: dict, samples: dict, reps: int, budget_s: float) -> dict:
    """The backend's STREAM ceilings (kind "copy": gb_s is the copy kernel's, beside triad's and fill's)."""
    n = _stream_elements(backend)
    rec = {"kind": "copy", "backend": name, **info, "ceiling_source": backend.stream_source, "array_bytes": 4 * n,
           "reps": reps, "budget_s": budget_s, "last_level_cache_bytes": backend.last_level_cache_bytes()}
    for kernel in STREAM_SOURCES:
        secs = samples[("stream", kernel)]
        moved = STREAM_MOVES[kernel] * n
        rec[f"{kernel}_gb_s"] = moved / timing.median(secs) / 1e9
        rec[f"{kernel}_samples_gb_s"] = [moved / s / 1e9 for s in secs]
        rec[f"{kernel}_runs"] = streams[kernel].runs
    rec["gb_s"] = rec["copy_gb_s"]
    return rec


def _op_record(name: str, info: dict, prepared: PreparedOp, secs: list[float], runs: int, ceilings: dict,
               cache_bytes: int | None, reps: int, budget_s: float) -> dict:
    node, case = prepared.node, prepared.case
    op = node.op
    read, written = traffic(node)
    moved, flop = read + written, op.flops(node.srcs, node.dst, node.params)
    t = timing.median(secs)
    gb_s = moved / t / 1e9
    compute_bound = flop >= COMPUTE_BOUND_FLOP_PER_BYTE * moved and not quantized_mat_vec(node)
    pattern = access_pattern(read, written)
    frac = gb_s / ceilings[f"{pattern}_gb_s"]
    weights = node.srcs[0]
    weights_gb_s = weights.nbytes() / t / 1e9
    quantized = {} if not weights.dtype.quantized else {  # GB/s of the quantized blocks read (weights MiB's bytes)
        "weight_bytes": weights.nbytes(), "weights_gb_s": weights_gb_s,
        "frac_weights_bw_ceiling": weights_gb_s / ceilings[f"{pattern}_gb_s"]}
    return {
        # test-backend-ops' perf fields (build_commit and test_time are the history's commit and time)
        "backend_name": name, "op_name": op.name, "op_params": op_params(case), "test_mode": "perf",
        "supported": True, "passed": True, "error_message": "", "time_us": t * 1e6,
        "flops": flop / t if compute_bound else 0.0,  # FLOP/s, for the ops it counts flops of
        "bandwidth_gb_s": 0.0 if compute_bound else moved / t / 2**30,  # its unit: GiB/s
        "memory_kb": moved // 1024, "n_runs": runs * reps, "device_description": info.get("device"),
        # ours
        "us_per_run": t * 1e6, "samples_us": [s * 1e6 for s in secs], "reps": reps, "budget_s": budget_s,
        "bytes": moved, "read_bytes": read, "written_bytes": written, "flop_per_run": flop,
        "gb_s": gb_s, "gflops": flop / t / 1e9,
        "bw_ceiling": pattern, "bw_ceiling_gb_s": ceilings[f"{pattern}_gb_s"], "frac_bw_ceiling": frac,
        "over_ceiling_why": why_over_ceiling(frac, read, written, pattern, cache_bytes),
        "copy_gb_s": ceilings["copy_gb_s"], "frac_copy": gb_s / ceilings["copy_gb_s"], **quantized,
    }


def bench_backend(name: str, backend, info: dict, cases: list[Case], budget_s: float, reps: int) -> list[dict]:
    """The records of one backend: its STREAM ceilings (kind "copy") first, then one per case (kind "ops")."""
    base = {"backend": name, **info}
    owned = []  # every buffer allocated here, freed when the rounds are over
    try:
        streams = prepare_streams(backend, owned)
        prepared = {key: prepare_op(backend, case, owned) for key, case in zip(case_keys(cases), cases)}
        libraries = {key: _library_matmul(backend, p.case) for key, p in prepared.items()
                     if p.case.op in MATMUL_OPS and p.timed}
        samplers = {("stream", k): t for k, t in streams.items()}
        samplers |= {("op", key): p.timed for key, p in prepared.items() if p.timed}
        samplers |= {("library", key): t for key, (_, t) in libraries.items()}
        for timed in samplers.values():
            timed.runs = timing.runs_per_batch(timed.run, timed.sync, budget_s / reps)
        samples = timing.interleaved({key: t.sample for key, t in samplers.items()}, reps, progress=f"{name} ops")
    finally:
        for buf in owned:
            backend.free(buf)
    ceilings = _stream_record(name, info, backend, streams, samples, reps, budget_s)
    records = [ceilings]
    cache_bytes = ceilings["last_level_cache_bytes"]
    for key, p in prepared.items():
        op = p.case.op
        rec = {"kind": "ops", **base, "op": op, "case": p.case.label(), "type": p.case.inputs[0].dtype.label}
        if not p.timed:
            records.append({**rec, "backend_name": name, "op_name": op, "op_params": op_params(p.case),
                            "test_mode": "perf", "supported": False, "passed": False, "error_message": p.reason,
                            "reason": p.reason})
            continue
        rec |= _op_record(name, info, p, samples[("op", key)], p.timed.runs, ceilings, cache_bytes, reps, budget_s)
        if key in libraries:
            library, timed = libraries[key]
            m, n, k = _matmul_shape(p.case)
            gflops = [2 * m * n * k / s / 1e9 for s in samples[("library", key)]]
            rec |= {"ceiling": library, "ceiling_gflops": float(np.median(gflops)), "ceiling_samples_gflops": gflops}
            rec["frac_ceiling"] = rec["gflops"] / rec["ceiling_gflops"]
        records.append(rec)
    return records


def run(ops: list[str], backends: list[str], budget_s: float = 0.5, reps: int = 5,
        dtype: DType | None = None) -> list[dict]:
    """Benchmark `ops` on `backends` (reps rounds sharing budget_s per case); with `dtype`, MUL_MAT's cases for
    weights of that quantized type (perf_cases). Returns history records, each backend's ceilings first. Prints
    test-backend-ops' console lines on stderr as each backend finishes."""
    if reps < 1:
        raise ValueError(f"-r/--repetitions must be >= 1, got {reps}")
    cases = perf_cases(ops, dtype)
    records = []
    for name, backend, info in registry.usable(backends):
        part = bench_backend(name, backend, info, cases, budget_s, reps)
        print(f"Backend {name}: {info.get('device')}\n{ceiling_line(part[0])}", file=sys.stderr, flush=True)
        for rec in part[1:]:
            print(console_line(rec), file=sys.stderr, flush=True)
        records += part
    return records


def _flop_text(flop: float) -> str:
    """test-backend-ops' flop count format."""
    for scale, unit in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if flop >= scale:
            return f"{flop / scale:6.2f} {unit}"
    return f"{flop / 1e3:6.2f} kFLOP"


def console_line(rec: dict) -> str:
    """test-backend-ops' perf line: `  OP(params): N runs - X us/run - K kB/run - Y GB/s`, or `- F GFLOP/run - G
    GFLOPS` for the ops it counts flops of; `not supported` for a refusal. Padding as it pads."""
    head = f"  {rec['op_name']}({rec['op_params']}): "
    if not rec["supported"]:
        return head + "not supported"
    last = -(-len(head) // 8) * 8
    last += 8 if last - len(head) < 5 else 0
    line = head + " " * (last - len(head)) + f"    {rec['n_runs']:8d} runs - {rec['time_us']:8.2f} us/run - "
    if rec["flops"] > 0:
        return line + f"{_flop_text(rec['flop_per_run'])}/run - {_flop_text(rec['flops'])}S"
    return line + f"{rec['memory_kb']:8d} kB/run - {rec['bandwidth_gb_s']:7.2f} GB/s"


def ceiling_line(rec: dict) -> str:
    """The backend's STREAM ceilings in one line."""
    figures = ", ".join(f"{k} {rec[f'{k}_gb_s']:.2f} GB/s" for k in STREAM_SOURCES)
    return (f"  STREAM ceilings: {figures} ({rec['ceiling_source']}; {rec['array_bytes'] / MIB:.0f} MiB arrays, median "
            f"of {rec['reps']} rounds)")


# test-backend-ops' `-o sql` table and its columns (TEXT, INTEGER, REAL), then ours
SQL_TABLE = "test_backend_ops"
SQL_FIELDS = [("test_time", "TEXT"), ("build_commit", "TEXT"), ("backend_name", "TEXT"), ("op_name", "TEXT"),
              ("op_params", "TEXT"), ("test_mode", "TEXT"), ("supported", "INTEGER"), ("passed", "INTEGER"),
              ("error_message", "TEXT"), ("time_us", "REAL"), ("flops", "REAL"), ("bandwidth_gb_s", "REAL"),
              ("memory_kb", "INTEGER"), ("n_runs", "INTEGER"), ("device_description", "TEXT"),
              ("reps", "INTEGER"), ("gb_s", "REAL"), ("bw_ceiling", "TEXT"), ("bw_ceiling_gb_s", "REAL"),
              ("frac_bw_ceiling", "REAL"), ("over_ceiling_why", "TEXT")]


def _sql_value(value, kind: str):
    """A record's value as its column's type; None (NULL) for a missing or non-finite figure."""
    if value is None or (kind == "REAL" and not np.isfinite(float(value))):
        return None
    return {"INTEGER": int, "REAL": float, "TEXT": str}[kind](value)


def to_sql(records: list[dict], commit: str, time: str) -> str:
    """The "ops" records as test-backend-ops' `-o sql` writes them: CREATE TABLE IF NOT EXISTS, one INSERT each."""
    rows = [[_sql_value({"test_time": time, "build_commit": commit, **rec}.get(name), kind)
             for name, kind in SQL_FIELDS] for rec in records if rec.get("kind") == "ops"]
    return sql_script(SQL_TABLE, SQL_FIELDS, rows)


def support_matrix(backends: list[str]) -> dict[str, dict[str, str]]:
    """op -> backend -> 'yes' | 'partial (k/n cases): first reason' | 'no: reason' | 'n/a: runtime missing',
    judged on each op's pinned and perf cases."""
    from cases.coverage import RUNTIME_MISSING, case_node, support_verdict  # shared with pytest --show-coverage

    matrix = {}
    for op in sorted(REGISTRY):
        nodes = [case_node(case) for case in REGISTRY[op].pinned() + [REGISTRY[op].perf]]
        matrix[op] = {name: RUNTIME_MISSING if registry.availability(name)
                      else support_verdict(registry.get_backend(name), nodes) for name in backends}
    return matrix
