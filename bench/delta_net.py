"""The delta-net variant comparison: time per variant per backend, and each variant's compute buffer, planned by the
graph planner and measured by the backend's allocator, at Kimi dimensions by default (H=32, S=128, T=512)."""
from __future__ import annotations

import sys

import numpy as np

from backends import usable
from bench import timing
from reference.delta_net import build_gdn_graph
from reference.ops.gated_delta_net import gdn_domain
from reference.plan import GraphPlan

INPUTS = ["q", "k", "v", "g", "beta", "state"]


def inputs_for(graph, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: gdn_domain(rng, graph.inputs[name].desc.shape, i, {}) for i, name in enumerate(INPUTS)}


def run(backends: list[str], variants: list[str], S=128, H=32, T=512, n_seqs=1, kda=True, reps=3) -> list[dict]:
    records = []
    for name, backend, info in usable(backends):
        for variant in variants:
            graph = build_gdn_graph(S, H, T, n_seqs, H, kda, variant)
            plan = graph.plan()
            values = inputs_for(graph)
            rec = {"kind": "delta_net", "backend": name, **info, "variant": variant, "S": S, "H": H, "T": T,
                   "n_seqs": n_seqs, "gate": "kda" if kda else "gda", "nodes": plan["nodes"],
                   "planned_compute_bytes": plan["compute_bytes"], "peak_at": plan["peak_at"]}
            try:
                # compiled once (every kernel built, the planner's buffers allocated and counted by the backend),
                # then a warm-up and reps timed replays
                with GraphPlan(backend, graph) as compiled:
                    rec["measured_compute_bytes"] = compiled.compute_bytes
                    samples = timing.measure(lambda: compiled.run(values), backend.synchronize, reps)
            except NotImplementedError as err:
                rec.update(supported=False, reason=str(err))
                print(f"{name}: {variant:9s} unsupported: {err}", file=sys.stderr, flush=True)
                records.append(rec)
                continue
            mean, std = timing.mean_std(samples)
            rec.update(supported=True, ms=1e3 * mean, ms_std=1e3 * std, samples_ms=[1e3 * s for s in samples],
                       tokens_per_s=T * n_seqs / mean)
            print(f"{name}: {variant:9s} {rec['ms']:10.1f} ms  compute buffer planned "
                  f"{plan['compute_bytes'] / 2**20:8.1f} MiB, measured {rec['measured_compute_bytes'] / 2**20:8.1f} MiB",
                  file=sys.stderr, flush=True)
            records.append(rec)
    return records
