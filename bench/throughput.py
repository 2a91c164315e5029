"""llama-bench's pp/tg tests on the Kimi-Linear graph: prompt processing (ppN: N tokens in ubatches of n_ubatch) and
text generation (tgN: N single-token steps), each after a context of --depth tokens.

llama-bench semantics: one warm-up run, then `reps` timed repetitions; t/s per sample = tokens / seconds; mean and
sample standard deviation. The depth context is not timed: it is prefilled once per (backend, test), its state and
cache are snapshotted, and before each repetition the snapshot is written back, which leaves the backend in exactly
the state a fresh depth prefill would.

Memory columns: weights, state (conv + delta-net states and the MLA latent cache for n_ctx positions), and the
compute buffer - planned (the graph planner's peak over every graph the test ran) and measured (the allocator's peak
of live bytes during the timed runs minus the resident weights/state and the ubatch's own small inputs: tokens,
output rows, masks). Measured exceeds planned by the allocator's 16-byte rounding of each allocation.

Batches: as llama-bench, a prompt is submitted in batches of n_batch tokens, each split into ubatches of at most
n_ubatch (so n_ubatch is clamped to n_batch, as llama.cpp does, and -b 24 -ub 16 runs 16 + 8 + 16 + ...).

Before anything is allocated, `memory_need` works out what a run asks of memory (weights and state from the config,
the compute buffer from the graph planner) and `check_memory` refuses a run that cannot fit the backend.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from backends import usable
from backends.base import aligned_size
from backends.session import ModelSession
from bench import timing
from reference.graph import node_storages
from reference.model import F32, KV_PAD, build_ubatch_graph, graph_weight_shapes, state_shapes

TEST_RE = re.compile(r"^(pp|tg)([1-9][0-9]*)$")


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


def prefill(session: ModelSession, tokens: np.ndarray, n_ubatch: int, n_batch: int | None = None) -> None:
    """tokens [n_seqs, T] into slots 0.., in batches of n_batch (default: one batch) split into ubatches of at
    most n_ubatch tokens per sequence."""
    for start, end in ubatch_spans(tokens.shape[1], n_batch or tokens.shape[1], n_ubatch):
        session.ubatch(tokens[:, start:end])


class _Peak:
    """The compute buffer of the runs it watches: the allocator's peak above the resident bytes minus the ubatch's
    own uploaded inputs, and the planner's peak of the same graphs (worked out after the timed region)."""

    def __init__(self, session: ModelSession):
        self.session = session
        self.seen: list[tuple] = []  # (graph, allocator peak above the resident bytes)
        self.measured = 0
        self.planned = 0

    def run(self, tokens: np.ndarray) -> None:
        b = self.session.backend
        base = b.live_bytes
        b.peak_bytes = base
        self.session.ubatch(tokens)
        self.seen.append((self.session.last_graph, b.peak_bytes - base))

    def settle(self) -> None:
        for graph, peak in self.seen:
            small_inputs = sum(aligned_size(t.storage.nbytes) for name, t in graph.inputs.items()
                               if name not in self.session.resident)
            self.planned = max(self.planned, graph.plan()["compute_bytes"])
            self.measured = max(self.measured, peak - small_inputs)
        self.seen.clear()


def depth_snapshot(session: ModelSession, depth: int, n_ubatch: int, seed: int = 0,
                   n_batch: int | None = None) -> tuple:
    """The state after `depth` tokens of context in slot 0 (prefilled once, restored before every repetition)."""
    session.reset()
    if depth:
        tokens = np.random.default_rng([seed, depth]).integers(0, session.config.n_vocab, size=(1, depth))
        prefill(session, tokens, n_ubatch, n_batch)
    return session.snapshot()


def run_test(session: ModelSession, test: BenchTest, snapshot: tuple, n_ubatch: int, reps: int,
             seed: int = 0, n_batch: int | None = None) -> dict:
    """One llama-bench test from a depth snapshot: a warm-up (compiles every kernel once), then `reps` timed runs,
    each from the snapshot (restored untimed). Returns t/s per repetition with their mean and sample standard
    deviation (timing.mean_std), and memory."""
    work = np.random.default_rng([seed, test.n_tokens]).integers(0, session.config.n_vocab, size=(1, test.n_tokens))
    peak = _Peak(session)

    def one_run() -> None:
        if test.kind == "pp":
            for start, end in ubatch_spans(test.n_tokens, n_batch or test.n_tokens, n_ubatch):
                peak.run(work[:, start:end])
        else:
            for i in range(test.n_tokens):
                peak.run(work[:, i:i + 1])

    seconds = timing.measure(one_run, session.backend.synchronize, reps, before=lambda: session.restore(snapshot),
                             after=peak.settle)
    ts = [test.n_tokens / s for s in seconds]
    avg_ts, stddev_ts = timing.mean_std(ts)
    return {"samples_ts": ts, "avg_ts": avg_ts, "stddev_ts": stddev_ts,
            "compute_planned_bytes": peak.planned, "compute_measured_bytes": peak.measured}


def run(tests: list[BenchTest], depths: list[int], backends: list[str], c, weights: dict, model: str,
        variants: list[str], form: str, n_batch: int, n_ubatch: int, reps: int) -> list[dict]:
    """Every test at every depth for every delta-net variant on every usable backend; one history record (kind
    'bench') per result."""
    ub = min(n_batch, n_ubatch)  # llama.cpp's clamp: a ubatch never exceeds its batch; recorded as run
    n_ctx = context_size(tests, depths)
    records = []
    for name, backend, info in usable(backends):
        for variant in variants:
            base = {"kind": "bench", "backend": name, **info, "model": model, "model_config": c.name,
                    "variant": variant, "form": form, "n_batch": n_batch, "n_ubatch": ub, "reps": reps}
            records += _run_variant(backend, base, tests, depths, c, weights, variant, form, n_ctx, ub, reps)
    return records


def context_size(tests: list[BenchTest], depths: list[int]) -> int:
    """n_ctx of a run: the deepest context plus the longest test, padded as llama.cpp pads the KV cache."""
    return -(-(max(depths) + max(t.n_tokens for t in tests)) // KV_PAD) * KV_PAD


def _run_variant(backend, base, tests, depths, c, weights, variant, form, n_ctx, ub, reps) -> list[dict]:
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
                snapshot = depth_snapshot(session, depth, ub, n_batch=base["n_batch"])
                for test in tests:
                    rec = {**base, **_test_fields(test, depth), **mem, "supported": True,
                           **run_test(session, test, snapshot, ub, reps, n_batch=base["n_batch"])}
                    print(f"{base['backend']}: {variant:9s} {rec['test']:>14s} {rec['avg_ts']:10.2f} ± "
                          f"{rec['stddev_ts']:.2f} t/s", file=sys.stderr, flush=True)
                    records.append(rec)
            except (NotImplementedError, MemoryError) as err:
                done = {r["test"] for r in records}
                records += [r for r in refused([depth], err) if r["test"] not in done]
    return records


def _test_fields(test: BenchTest, depth: int) -> dict:
    return {"test": test.label(depth), "test_kind": test.kind, "n_prompt": test.n_tokens if test.kind == "pp" else 0,
            "n_gen": test.n_tokens if test.kind == "tg" else 0, "n_depth": depth}


# ---- memory: what a run needs, what the backend has ------------------------------------------------------------
def _tensor_bytes(shapes: dict) -> dict[str, int]:
    return {name: aligned_size(int(np.prod(ne, dtype=object)) * F32) for name, ne in shapes.items()}


def memory_need(c, tests: list[BenchTest], depths: list[int], variants: list[str], form: str, n_batch: int,
                n_ubatch: int) -> dict:
    """What a run asks of memory, worked out from the config and the graph planner before anything is allocated:
    weights and state (conv + delta-net states, the latent cache for n_ctx) as ModelSession allocates them; the
    compute buffer of the worst ubatch (the planner's peak) plus that ubatch's own inputs (tokens, output ids, the
    attention mask over the cache); the largest single buffer; and the host's copies (the model's weight arrays and
    the depth snapshot of the state). The graphs priced are, per ubatch size, the one at the deepest position any
    test or depth prefill reaches, which bounds the others (a ubatch's buffers only grow with its position)."""
    ub = min(n_batch, n_ubatch)
    n_ctx = context_size(tests, depths)
    weights = _tensor_bytes(graph_weight_shapes(c, form))
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
            gr = build_ubatch_graph(c, T, 0, [pos], 1, 1, n_ctx, variant, form)
            inputs = sum(aligned_size(t.storage.nbytes) for name, t in gr.inputs.items()
                         if name not in weights and name not in state)
            total = gr.plan()["compute_bytes"] + inputs
            if total > compute["bytes"]:
                compute = {"bytes": total, "variant": variant, "tokens": T, "position": pos}
            largest = max(largest, *(aligned_size(st.nbytes) for node in gr.nodes for st in node_storages(node)))
    return {"n_ctx": n_ctx, "weights": sum(weights.values()), "state": sum(state.values()), "compute": compute,
            "largest_buffer": largest, "host_copies": sum(weights.values()) + sum(state.values())}


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
