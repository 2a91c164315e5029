"""llama-bench's pp/tg tests on the Kimi-Linear graph: prompt processing (ppN: N tokens in ubatches of n_ubatch) and
text generation (tgN: N single-token steps), each after a context of --depth tokens.

llama-bench semantics: one warm-up run, then `reps` timed repetitions; t/s per sample = tokens / seconds; mean and
sample standard deviation. The depth context is not timed: it is prefilled once per (backend, test), its state and
cache are snapshotted, and before each repetition the snapshot is written back, which leaves the backend in exactly
the state a fresh depth prefill would.

Memory columns: weights, state (conv + delta-net states and the MLA latent cache for n_ctx positions), and the
compute buffer - planned (the graph planner's buffer assignment, over every graph the test ran) and measured (what
the backend's allocator counted for those compiled graphs' buffers; the ubatch's own inputs are not in it).

Batches: as llama-bench, a prompt is submitted in batches of n_batch tokens, each split into ubatches of at most
n_ubatch (so n_ubatch is clamped to n_batch, as llama.cpp does, and -b 24 -ub 16 runs 16 + 8 + 16 + ...).

Before anything is allocated, `memory_need` works out what a run asks of memory (weights from the config and the
file's stored types, state from the config, the compute buffer from the graph planner) and `check_memory` refuses a
run that cannot fit the backend. Weights are counted as resident: a GGUF's quantized and f16 blocks where the graph
keeps them (reference.model.weight_types), f32 for the rest, so the weights column of a Q4_K_M file is its blocks.

Every record also carries llama-bench's fields (bench.llama_bench.fields), and long work shows a progress bar on
stderr when it is a terminal: the untimed depth prefill (ubatches), the warm-up and repetitions of each test, and
llama.cpp's anchor runs (one per depth).
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from backends import usable
from backends.session import ModelSession
from bench import llama_bench, timing
from reference.graph import node_storages
from reference.model import KV_PAD, build_ubatch_graph, graph_weight_shapes, state_shapes, weight_types
from reference.tensor import DType, Tensor, aligned_size

TEST_RE = re.compile(r"^(pp|tg)([1-9][0-9]*)$")
LLAMA_CPP = "llama.cpp"  # --backend llama.cpp: llama.cpp's CPU backend run beside ours, as their anchor


@dataclass(frozen=True)
class BenchTest:
    kind: str  # "pp" or "tg"
    n_tokens: int

    @staticmethod
    def parse(name: str) -> "BenchTest":
        m = TEST_RE.match(name)
        if not m:
            raise ValueError(f"unknown test or command {name!r}: tests are ppN (prompt of N tokens) or tgN (N "
                             f"generated tokens), e.g. pp512 tg128; commands: ops, support, delta-net, parity, "
                             f"report, compare, nightly")
        return BenchTest(m.group(1), int(m.group(2)))

    def label(self, depth: int) -> str:
        return f"{self.kind}{self.n_tokens}" + (f" @ d{depth}" if depth else "")


def ubatch_spans(n_tokens: int, n_batch: int, n_ubatch: int) -> list[tuple[int, int]]:
    """(start, end) of each ubatch when n_tokens are submitted in batches of n_batch, each split into ubatches of at
    most n_ubatch tokens (llama-bench's test_prompt and llama_decode's split)."""
    ub = min(n_batch, n_ubatch)
    return [(u, min(u + ub, b + n_batch, n_tokens)) for b in range(0, n_tokens, n_batch)
            for u in range(b, min(b + n_batch, n_tokens), ub)]


def progress(total: int, what: str, unit: str) -> tqdm:
    """A progress bar on sys.stderr as it is at the call; shown only when that is a terminal, and cleared when done
    so that the result lines stay as they were."""
    return tqdm(total=total, desc=what, unit=unit, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)


def prefill(session: ModelSession, tokens: np.ndarray, n_ubatch: int, n_batch: int | None = None,
            what: str = "prefill") -> None:
    """tokens [n_seqs, T] into slots 0.., in batches of n_batch (default: one batch) split into ubatches of at
    most n_ubatch tokens per sequence; a progress bar of the ubatches, labelled `what`."""
    spans = ubatch_spans(tokens.shape[1], n_batch or tokens.shape[1], n_ubatch)
    with progress(len(spans), what, "ubatch") as bar:
        for start, end in spans:
            session.ubatch(tokens[:, start:end])
            bar.update()


class _Peak:
    """The compute buffer of the ubatches it watches: measured, what the backend's allocator counted for the planned
    buffers of each compiled graph they ran; planned, the graph planner's figure for the same graphs (worked out
    after the timed region)."""

    def __init__(self, session: ModelSession):
        self.session = session
        self.seen: dict[int, object] = {}  # id -> compiled graph
        self.measured = 0
        self.planned = 0

    def run(self, tokens: np.ndarray) -> None:
        self.session.ubatch(tokens)
        self.seen[id(self.session.last_plan)] = self.session.last_plan

    def settle(self) -> None:
        for plan in self.seen.values():
            self.planned = max(self.planned, plan.graph.plan()["compute_bytes"])
            self.measured = max(self.measured, plan.compute_bytes)
        self.seen.clear()


def depth_snapshot(session: ModelSession, depth: int, n_ubatch: int, seed: int = 0,
                   n_batch: int | None = None, what: str = "") -> tuple:
    """The state after `depth` tokens of context in slot 0 (prefilled once, restored before every repetition)."""
    session.reset()
    if depth:
        tokens = np.random.default_rng([seed, depth]).integers(0, session.config.n_vocab, size=(1, depth))
        prefill(session, tokens, n_ubatch, n_batch, what=f"{what} prefill d{depth}".strip())
    return session.snapshot()


def run_test(session: ModelSession, test: BenchTest, snapshot: tuple, n_ubatch: int, reps: int,
             seed: int = 0, n_batch: int | None = None, what: str = "") -> dict:
    """One llama-bench test from a depth snapshot: a warm-up (compiles every kernel once), then `reps` timed runs,
    each from the snapshot (restored untimed), then one profiled run (each node timed by the backend's timer, not
    part of t/s). Returns t/s per repetition with their mean and sample standard deviation (timing.mean_std),
    memory, and from the profiled run: `kernel_ns` (the nodes' sum), `harness_overhead` (1 - kernel time / that
    run's wall time: what the host adds), `kernel_timer` (what timed the nodes) and `node_ns` (per node name: op, ns;
    for --profile)."""
    work = np.random.default_rng([seed, test.n_tokens]).integers(0, session.config.n_vocab, size=(1, test.n_tokens))
    peak = _Peak(session)

    def one_run(timings: list | None = None) -> None:
        spans = ubatch_spans(test.n_tokens, n_batch or test.n_tokens, n_ubatch) if test.kind == "pp" \
            else [(i, i + 1) for i in range(test.n_tokens)]
        for start, end in spans:
            if timings is None:
                peak.run(work[:, start:end])
            else:
                session.ubatch(work[:, start:end], timings=timings)

    with progress(reps + 1, f"{what} {test.label(0)} warm-up + reps".strip(), "run") as bar:
        def settled() -> None:
            peak.settle()
            bar.update()
        seconds = timing.measure(one_run, session.backend.synchronize, reps,
                                 before=lambda: session.restore(snapshot), after=settled)
    ts = [test.n_tokens / s for s in seconds]
    avg_ts, stddev_ts = timing.mean_std(ts)
    session.restore(snapshot)
    timings: list[tuple[str, str, int]] = []
    start = time.perf_counter_ns()
    one_run(timings)
    session.backend.synchronize()
    wall_ns = time.perf_counter_ns() - start  # the profiled run's own: timers can slow a runtime down
    kernel_ns = sum(ns for _, _, ns in timings)
    node_ns: dict[str, list] = {}
    for name, op, ns in timings:
        node_ns.setdefault(name, [op, 0])[1] += ns
    return {"samples_ts": ts, "avg_ts": avg_ts, "stddev_ts": stddev_ts,
            "compute_planned_bytes": peak.planned, "compute_measured_bytes": peak.measured,
            "kernel_ns": kernel_ns, "harness_overhead": 1 - kernel_ns / wall_ns,
            "kernel_timer": session.last_plan.replay.timer, "node_ns": node_ns}


def run(tests: list[BenchTest], depths: list[int], backends: list[str], c, weights: dict, model: str,
        variants: list[str], form: str, n_batch: int, n_ubatch: int, reps: int, profile: int = 0) -> list[dict]:
    """Every test at every depth for every delta-net variant on every usable backend; one history record (kind
    'bench') per result. `profile`: print that many nodes with the most kernel time per result (stderr). "llama.cpp"
    among `backends` adds llama.cpp's figures for the same tests (run_llama_cpp)."""
    ub = min(n_batch, n_ubatch)  # llama.cpp's clamp: a ubatch never exceeds its batch; recorded as run
    n_ctx = context_size(tests, depths)
    records = []
    for name, backend, info in usable([b for b in backends if b != LLAMA_CPP]):
        for variant in variants:
            base = {"kind": "bench", "backend": name, **info, "model": model, "model_config": c.name,
                    "variant": variant, "form": form, "n_batch": n_batch, "n_ubatch": ub, "reps": reps}
            records += _run_variant(backend, base, tests, depths, c, weights, variant, form, n_ctx, ub, reps, profile)
    if LLAMA_CPP in backends:
        records += run_llama_cpp(tests, depths, c, weights, model, n_batch, ub, reps)
    n_params = sum(int(w.size) for w in weights.values())
    return [{**r, **llama_bench.fields(r, c.n_layer, n_params)} for r in records]


def gguf_tensor_bytes(path: str) -> int:
    """The bytes of a GGUF's tensor data, what llama.cpp's llama_model_size counts for it."""
    import gguf

    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)


def run_llama_cpp(tests: list[BenchTest], depths: list[int], c, weights: dict, model: str, n_batch: int,
                  n_ubatch: int, reps: int, n_threads: int = 2) -> list[dict]:
    """The same tests on the same model through llama.cpp's CPU backend (backends.llama_cpp.llama_cpp_bench), one
    record per (test, depth) as ours, so each of our results has its llama.cpp figure measured beside it. A preset
    goes through a temporary GGUF; a GGUF model is loaded as given. llama.cpp's own memory figures are not measured
    here, so those fields stay out. A llama.cpp failure is an unsupported record with its reason, as ours are."""
    from backends.llama_cpp import llama_cpp_bench
    from reference.gguf_io import write_gguf

    base = {"kind": "bench", "backend": LLAMA_CPP, "device": "CPU",
            "driver": f"llama.cpp via llama-cpp-python {_installed('llama_cpp_python')}", "model": model,
            "model_config": c.name, "variant": "-", "form": "absorbed", "flash_attn": True, "n_threads": n_threads,
            "n_batch": n_batch, "n_ubatch": n_ubatch, "reps": reps}
    records = []
    with tempfile.TemporaryDirectory(prefix="kbo-bench-") as tmp, \
            progress(len(depths), f"{LLAMA_CPP} runs", "depth") as bar:
        path = model if model.endswith(".gguf") else os.path.join(tmp, f"{c.name}.gguf")
        if path != model:
            write_gguf(path, c, weights)
        base["model_size"] = gguf_tensor_bytes(path)  # llama-bench's figure for what llama.cpp loads
        for depth in depths:
            started = llama_bench.now()
            try:
                results = llama_cpp_bench(path, [(t.kind, t.n_tokens) for t in tests], depth, n_batch, n_ubatch,
                                          reps, n_threads, flash_attn=base["flash_attn"])
            except RuntimeError as err:
                print(f"{LLAMA_CPP}: unsupported: {err}", file=sys.stderr, flush=True)
                records += [{**base, **_test_fields(t, depth), "supported": False, "reason": str(err)} for t in tests]
                continue
            finally:
                bar.update()
            for test, result in zip(tests, results):
                rec = {**base, **_test_fields(test, depth), "test_time": started, "supported": True, **result}
                print(f"{LLAMA_CPP}: {rec['test']:>14s} {rec['avg_ts']:10.2f} ± {rec['stddev_ts']:.2f} t/s",
                      file=sys.stderr, flush=True)
                records.append(rec)
    return records


def _installed(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def context_size(tests: list[BenchTest], depths: list[int]) -> int:
    """n_ctx of a run: the deepest context plus the longest test, padded as llama.cpp pads the KV cache."""
    return -(-(max(depths) + max(t.n_tokens for t in tests)) // KV_PAD) * KV_PAD


def _run_variant(backend, base, tests, depths, c, weights, variant, form, n_ctx, ub, reps, profile) -> list[dict]:
    def refused(depth_list, err):
        print(f"{base['backend']}: {variant}: unsupported: {err}", file=sys.stderr, flush=True)
        return [{**base, **_test_fields(t, d), "supported": False, "reason": str(err)}
                for d in depth_list for t in tests]

    try:
        session = ModelSession(backend, c, weights, 1, n_ctx, variant, form)
    except (NotImplementedError, MemoryError) as err:
        return refused(depths, err)
    records = []
    with session:
        mem = {"weights_bytes": session.weights_bytes, "state_bytes": session.state_bytes, "n_ctx": n_ctx}
        for depth in depths:
            try:
                what = f"{base['backend']} {variant}"
                snapshot = depth_snapshot(session, depth, ub, n_batch=base["n_batch"], what=what)
                for test in tests:
                    rec = {**base, **_test_fields(test, depth), **mem, "supported": True,  # test_time: at the start
                           **run_test(session, test, snapshot, ub, reps, n_batch=base["n_batch"], what=what)}
                    print(f"{base['backend']}: {variant:9s} {rec['test']:>14s} {rec['avg_ts']:10.2f} ± "
                          f"{rec['stddev_ts']:.2f} t/s, harness {100 * rec['harness_overhead']:.0f}% of wall",
                          file=sys.stderr, flush=True)
                    node_ns = rec.pop("node_ns")
                    if profile:
                        print_profile(rec, node_ns, profile)
                    records.append(rec)
            except (NotImplementedError, MemoryError) as err:
                done = {r["test"] for r in records}
                records += [r for r in refused([depth], err) if r["test"] not in done]
    return records


def print_profile(rec: dict, node_ns: dict, top: int) -> None:
    """The nodes with the most kernel time over one run of a test, and the time per op (GGML_SCHED / nsys style)."""
    total = rec["kernel_ns"] or 1
    out = sys.stderr
    print(f"\n{rec['backend']} {rec['variant']} {rec['test']}: kernel time {rec['kernel_ns'] / 1e6:.3f} ms per run "
          f"({rec['kernel_timer']}), harness {100 * rec['harness_overhead']:.1f}% of wall", file=out)
    by_op: dict[str, list] = {}
    for op, ns in node_ns.values():
        entry = by_op.setdefault(op, [0, 0])
        entry[0] += ns
        entry[1] += 1
    print(f"  {'op':<14s} {'nodes':>6s} {'ms':>10s} {'%':>6s}", file=out)
    for op, (ns, count) in sorted(by_op.items(), key=lambda kv: -kv[1][0]):
        print(f"  {op:<14s} {count:6d} {ns / 1e6:10.3f} {100 * ns / total:6.1f}", file=out)
    print(f"  {'node':<40s} {'op':<14s} {'ms':>10s} {'%':>6s}", file=out)
    for name, (op, ns) in sorted(node_ns.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"  {name:<40s} {op:<14s} {ns / 1e6:10.3f} {100 * ns / total:6.1f}", file=out)


def _test_fields(test: BenchTest, depth: int) -> dict:
    return {"test": test.label(depth), "test_kind": test.kind, "n_prompt": test.n_tokens if test.kind == "pp" else 0,
            "n_gen": test.n_tokens if test.kind == "tg" else 0, "n_depth": depth, "test_time": llama_bench.now()}


# ---- memory: what a run needs, what the backend has ------------------------------------------------------------
def _tensor_bytes(shapes: dict, types: dict[str, DType] | None = None) -> dict[str, int]:
    """The bytes each tensor's buffer takes, in its type of `types` (f32 by default), as a backend allocates it."""
    return {name: aligned_size(Tensor.new((types or {}).get(name, DType.F32), ne).nbytes())
            for name, ne in shapes.items()}


def memory_need(c, tests: list[BenchTest], depths: list[int], variants: list[str], form: str, n_batch: int,
                n_ubatch: int, stored: dict | None = None) -> dict:
    """What a run asks of memory, worked out from the config and the graph planner before anything is allocated:
    weights in the types ModelSession keeps them in (a GGUF's `stored` tensors, read_gguf's FileWeights.stored,
    where reference.model.weight_types keeps them, f32 otherwise; a backend that refuses a kept type gets f32 from
    ModelSession, which this does not foresee) and state (conv + delta-net states, the latent cache for n_ctx) as
    ModelSession allocates them; the compute buffer of the worst ubatch (the planner's peak) plus that ubatch's own
    inputs (tokens, output ids, the attention mask over the cache); the largest single buffer; and the host's copies
    (the model's float32 weight arrays, a file's dequantized ones included, and the depth snapshot of the state).
    The graphs priced are, per ubatch size, the one at the deepest position any test or depth prefill reaches, which
    bounds the others (a ubatch's buffers only grow with its position)."""
    ub = min(n_batch, n_ubatch)
    n_ctx = context_size(tests, depths)
    shapes = graph_weight_shapes(c, form)
    types = weight_types(c, form, stored)
    weights = _tensor_bytes(shapes, types)
    state = _tensor_bytes(state_shapes(c, 1, n_ctx))
    depth = max(depths)
    deepest: dict[int, int] = {}  # ubatch tokens -> the deepest position a ubatch of that size starts at
    spans = ubatch_spans(depth, n_batch, ub)
    for test in tests:
        spans += ([(depth + s, depth + e) for s, e in ubatch_spans(test.n_tokens, n_batch, ub)]
                  if test.kind == "pp" else [(depth + test.n_tokens - 1, depth + test.n_tokens)])
    for start, end in spans:
        deepest[end - start] = max(deepest.get(end - start, 0), start)
    compute = {"bytes": 0}
    largest = max([*weights.values(), *state.values()])
    for variant in variants:
        for T, pos in sorted(deepest.items()):
            if T == 1 and variant != variants[0]:
                continue  # single-token ubatches run the fused recurrence in every variant: one graph
            gr = build_ubatch_graph(c, T, 0, [pos], 1, 1, n_ctx, variant, form, types)
            inputs = sum(aligned_size(t.storage.nbytes) for name, t in gr.inputs.items()
                         if name not in weights and name not in state)
            total = gr.plan()["compute_bytes"] + inputs
            if total > compute["bytes"]:
                compute = {"bytes": total, "variant": variant, "tokens": T, "position": pos}
            largest = max(largest, *(aligned_size(st.nbytes) for node in gr.nodes for st in node_storages(node)))
    return {"n_ctx": n_ctx, "weights": sum(weights.values()), "state": sum(state.values()), "compute": compute,
            "largest_buffer": largest, "host_copies": sum(_tensor_bytes(shapes).values()) + sum(state.values())}


def host_ram() -> int:
    """This machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(nbytes: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**20:.1f} MiB"


def check_memory(name: str, need: dict, limits: dict) -> str | None:
    """None when the run fits the backend (Backend.memory_limits), else why not, with the figures: device memory,
    the largest single allocation, then this machine's RAM (the host's copies, plus the device's buffers when they
    live there)."""
    compute = need["compute"]
    device = need["weights"] + need["state"] + compute["bytes"]
    parts = (f"weights {_size(need['weights'])} + state {_size(need['state'])} (n_ctx {need['n_ctx']}) + compute "
             f"{_size(compute['bytes'])} ({compute.get('variant')}, a {compute.get('tokens')}-token ubatch at "
             f"position {compute.get('position')}, its inputs included)")
    if limits["device"] and device > limits["device"][0]:
        size, what = limits["device"]
        return f"{name} needs about {_size(device)}, more than {what} ({_size(size)}): {parts}"
    if limits["max_alloc"] and need["largest_buffer"] > limits["max_alloc"][0]:
        size, what = limits["max_alloc"]
        return (f"{name}: its largest buffer would be {_size(need['largest_buffer'])}, more than {what} "
                f"({_size(size)}); in all it needs {_size(device)}: {parts}")
    host = need["host_copies"] + (device if limits["host_memory"] else 0)
    if host > host_ram():
        on_host = f"{parts} + " if limits["host_memory"] else ""
        return (f"{name} needs about {_size(host)} of host memory, more than this machine's RAM ({_size(host_ram())}): "
                f"{on_host}host copies {_size(need['host_copies'])} (the weight arrays and the depth snapshot of the "
                f"state)")
    return None
