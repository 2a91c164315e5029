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
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass

import numpy as np

from backends.base import ALIGN
from reference.model import KV_PAD, ModelSession

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


def prefill(session: ModelSession, tokens: np.ndarray, n_ubatch: int) -> None:
    """tokens [n_seqs, T] into slots 0.., in ubatches of at most n_ubatch tokens per sequence."""
    for start in range(0, tokens.shape[1], n_ubatch):
        session.ubatch(tokens[:, start:start + n_ubatch])


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
            small_inputs = sum(-(-t.storage.nbytes // ALIGN) * ALIGN for name, t in graph.inputs.items()
                               if name not in self.session.resident)
            self.planned = max(self.planned, graph.plan()["compute_bytes"])
            self.measured = max(self.measured, peak - small_inputs)
        self.seen.clear()


def depth_snapshot(session: ModelSession, depth: int, n_ubatch: int, seed: int = 0) -> tuple:
    """The state after `depth` tokens of context in slot 0 (prefilled once, restored before every repetition)."""
    session.reset()
    if depth:
        tokens = np.random.default_rng([seed, depth]).integers(0, session.config.n_vocab, size=(1, depth))
        prefill(session, tokens, n_ubatch)
    return session.snapshot()


def run_test(session: ModelSession, test: BenchTest, snapshot: tuple, n_ubatch: int, reps: int,
             seed: int = 0) -> dict:
    """One llama-bench test from a depth snapshot: a warm-up, then `reps` timed runs. Returns samples and memory."""
    work = np.random.default_rng([seed, test.n_tokens]).integers(0, session.config.n_vocab, size=(1, test.n_tokens))
    peak = _Peak(session)

    def one_run() -> float:
        session.restore(snapshot)
        t0 = time.perf_counter()
        if test.kind == "pp":
            for start in range(0, test.n_tokens, n_ubatch):
                peak.run(work[:, start:start + n_ubatch])
        else:
            for i in range(test.n_tokens):
                peak.run(work[:, i:i + 1])
        session.backend.synchronize()
        elapsed = time.perf_counter() - t0
        peak.settle()
        return elapsed

    one_run()  # warm-up: compiles every kernel once
    seconds = [one_run() for _ in range(reps)]
    ts = [test.n_tokens / s for s in seconds]
    return {"samples_ts": ts, "avg_ts": float(np.mean(ts)), "stddev_ts": float(np.std(ts, ddof=1)) if reps > 1 else 0.0,
            "compute_planned_bytes": peak.planned, "compute_measured_bytes": peak.measured}


def run(tests: list[BenchTest], depths: list[int], backends: list[str], c, weights: dict, model: str,
        variants: list[str], form: str, n_batch: int, n_ubatch: int, reps: int) -> list[dict]:
    """Every test at every depth for every delta-net variant on every usable backend; one history record (kind
    'bench') per result."""
    from bench.ops import usable

    ub = min(n_batch, n_ubatch)  # a batch is split into ubatches: only the smaller size shapes the graphs
    n_ctx = -(-(max(depths) + max(t.n_tokens for t in tests)) // KV_PAD) * KV_PAD
    records = []
    for name, backend, info in usable(backends):
        for variant in variants:
            base = {"kind": "bench", "backend": name, **info, "model": model, "model_config": c.name,
                    "variant": variant, "form": form, "n_batch": n_batch, "n_ubatch": n_ubatch, "reps": reps}
            records += _run_variant(backend, base, tests, depths, c, weights, variant, form, n_ctx, ub, reps)
    return records


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
                snapshot = depth_snapshot(session, depth, ub)
                for test in tests:
                    rec = {**base, **_test_fields(test, depth), **mem, "supported": True,
                           **run_test(session, test, snapshot, ub, reps)}
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
