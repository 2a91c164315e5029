"""Per-op performance, test-backend-ops `perf` style: us/run, GB/s and GFLOPS on each op's perf case (its record's
`perf`, >= 16 MiB per operand for memory-bound ops), beside the same run's copy bandwidth of the backend (its own
buffer copy), so each op shows its fraction of that ceiling."""
from __future__ import annotations

import sys

import numpy as np

import backends as registry
from bench import timing
from cases.harness import host_buffers
from reference.case import Case
from reference.node import make_node
from reference.ops import REGISTRY, get_op

COPY_BYTES = 64 << 20


def _time(run, sync, budget_s: float, batches: int = 5, max_runs: int = 1000) -> tuple[float, list[float]]:
    """Seconds per run: one warm-up and one timed run that sizes the batches, then `batches` timed batches sharing
    ~budget_s, each synced once at its end. Returns the best batch (timing.best) and every batch."""
    once = max(timing.measure(run, sync, 1)[0], 1e-6)
    n = int(min(max_runs, max(1, budget_s / batches / once)))
    samples = timing.measure(run, sync, batches, per_sample=n, warmup=False)
    return timing.best(samples), samples


def copy_bandwidth(backend, budget_s: float) -> dict:
    src, dst = backend.alloc(COPY_BYTES), backend.alloc(COPY_BYTES)
    try:
        secs, samples = _time(backend.copy_launch(src, dst), backend.synchronize, budget_s)
    finally:
        backend.free(src)
        backend.free(dst)
    return {"bytes": 2 * COPY_BYTES, "us_per_run": secs * 1e6, "samples_us": [x * 1e6 for x in samples],
            "gb_s": 2 * COPY_BYTES / secs / 1e9}


MATMUL_OPS = {"MUL_MAT", "MUL_MAT_ID"}


def matmul_ceiling(backend, case: Case, budget_s: float) -> dict:
    """GFLOPS of the library product with the case's total work: cuBLAS through the backend where it has one, else
    NumPy's BLAS on the host (the ceiling for CPU drivers), measured in the same run."""
    if case.op == "MUL_MAT":
        k, n = case.inputs[0].ne[:2]
        m = int(np.prod(case.inputs[1].ne[1:]))
    else:  # MUL_MAT_ID: every (token, slot) multiplies one expert
        k, n = case.inputs[0].ne[:2]
        m = int(np.prod(case.inputs[2].ne[:2]))
    run = backend.library_matmul(m, n, k)
    sync = backend.synchronize
    library = "vendor"
    if run is None:
        rng = np.random.default_rng(0)
        a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        out = np.empty((m, n), dtype=np.float32)
        run, sync, library = (lambda: np.matmul(a, b, out=out)), (lambda: None), "numpy"
    secs, _ = _time(run, sync, budget_s)
    return {"ceiling": library, "ceiling_gflops": 2 * m * n * k / secs / 1e9}


def bench_op(backend, case: Case, budget_s: float) -> dict:
    srcs, dst, op, params = host_buffers(case)
    bufs = [backend.upload(s.raw) for s in srcs]
    src_t = [s.tensor.with_buffer(b) for s, b in zip(srcs, bufs)]
    dst_buf = backend.upload(dst.raw) if dst is not None else None
    dst_t = dst.tensor.with_buffer(dst_buf) if dst is not None else None
    try:
        node = make_node(case.op, src_t, params, dst=dst_t)
        reason = backend.supports(node)
        if reason:
            return {"supported": False, "reason": reason}
        secs, samples = _time(backend.prepare(node), backend.synchronize, budget_s)
    finally:
        for b in bufs + ([dst_buf] if dst_buf else []):
            backend.free(b)
    nbytes = op.bytes(node.srcs, node.dst, node.params)
    flops = op.flops(node.srcs, node.dst, node.params)
    return {"supported": True, "us_per_run": secs * 1e6, "samples_us": [x * 1e6 for x in samples], "bytes": nbytes,
            "flops": flops,
            "gb_s": nbytes / secs / 1e9, "gflops": flops / secs / 1e9}


def run(ops: list[str], backends: list[str], budget_s: float = 0.5) -> list[dict]:
    """Benchmark `ops` on `backends`; returns history records (kind 'ops'), copy bandwidth first per backend."""
    records = []
    for name, backend, info in registry.usable(backends):
        base = {"backend": name, **info}
        copy = copy_bandwidth(backend, budget_s)
        records.append({"kind": "copy", **base, **copy})
        print(f"{name}: copy {copy['gb_s']:.2f} GB/s on {info.get('device')}", file=sys.stderr, flush=True)
        for op in ops:
            case = get_op(op).perf
            fig = bench_op(backend, case, budget_s)
            rec = {"kind": "ops", **base, "op": op, "case": case.label(), "copy_gb_s": copy["gb_s"], **fig}
            if fig["supported"] and op in MATMUL_OPS:
                rec.update(matmul_ceiling(backend, case, budget_s))
                rec["frac_ceiling"] = fig["gflops"] / rec["ceiling_gflops"]
            if fig["supported"]:
                rec["frac_copy"] = fig["gb_s"] / copy["gb_s"]
                ceiling = (f" ({100 * rec['frac_ceiling']:5.1f}% of {rec['ceiling']} {rec['ceiling_gflops']:.1f})"
                           if "frac_ceiling" in rec else "")
                print(f"{name}: {op:10s} {fig['us_per_run']:12.1f} us/run {fig['gb_s']:8.2f} GB/s "
                      f"({100 * rec['frac_copy']:5.1f}% of copy) {fig['gflops']:8.2f} GFLOPS{ceiling}",
                      file=sys.stderr, flush=True)
            else:
                print(f"{name}: {op:10s} unsupported: {fig['reason']}", file=sys.stderr, flush=True)
            records.append(rec)
    return records


def support_matrix(backends: list[str]) -> dict[str, dict[str, str]]:
    """op -> backend -> 'yes' | 'partial (k/n cases): first reason' | 'no: reason' | 'n/a: runtime missing',
    judged on each op's pinned and perf cases."""
    matrix = {}
    for op in sorted(REGISTRY):
        row = {}
        for name in backends:
            reason = registry.availability(name)
            if reason:
                row[name] = "n/a: runtime missing"
                continue
            backend = registry.get_backend(name)
            cases = REGISTRY[op].pinned() + [REGISTRY[op].perf]
            refusals = []
            for case in cases:
                srcs, dst, _, params = host_buffers(case)
                node = make_node(case.op, [s.tensor for s in srcs], params,
                                 dst=None if dst is None else dst.tensor)
                why = backend.supports(node)
                if why:
                    refusals.append(why)
            if not refusals:
                row[name] = "yes"
            else:
                first = refusals[0] if len(refusals[0]) <= 90 else refusals[0][:87] + "..."
                kind = "no" if len(refusals) == len(cases) else f"partial ({len(cases) - len(refusals)}/{len(cases)} cases)"
                row[name] = f"{kind}: {first}"
        matrix[op] = row
    return matrix
