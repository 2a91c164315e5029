"""A model resident on one backend: the Kimi-Linear graph of reference/model.py run ubatch by ubatch, its weights
uploaded once and its per-slot recurrent state and KV cache kept in backend buffers that every ubatch updates in
place (the runtime side of the model; the graphs, configs and the float64 loop stay in reference/).

Weights read from a GGUF (FileWeights) stay resident in the file's types where the graph reads them only through
kernels that take those types (reference.model.weight_types): the raw quantized or f16 blocks are uploaded as the
file holds them; every other weight, and every weight of a preset's random set, is uploaded as float32."""
from __future__ import annotations

import sys

import numpy as np

from reference.config import KimiConfig
from reference.delta_net import check_variant
from reference.graph import Graph
from reference.mla import causal_mask, check_form
from reference.model import (F32, build_ubatch_graph, cache_stores, padded_kv, position_patches, state_shapes,
                             weight_consumers, weight_types)
from reference.node import Node
from reference.ops import get_op
from reference.plan import GraphPlan
from reference.tensor import Buffer, DType
from reference.weights import check_weights, kv_b_from_split


MAX_PLANS = 2  # compiled ubatch graphs a session keeps (each holds its compute buffers): a prompt's and a decode step's


class ModelSession:
    """A model resident on one backend: weights uploaded once, and zeroed per-slot recurrent state and KV cache that
    every ubatch updates in place. `ubatch` runs one graph and returns the requested logits.

    Ubatch graphs are compiled (reference/plan.py) once per shape: tokens, slots, outputs and each sequence's padded
    cache length (padded_kv, which changes every KV_PAD positions). A later ubatch of the same shape at other
    positions replays the compiled graph with its position parameters patched (position_patches) and its mask
    written as an input; the MAX_PLANS most recently used stay compiled.

    `weight_types`: the type each weight is resident in (reference.model.weight_types for a file's weights, less
    any the backend refuses: those fall back to f32, said once on stderr); `weights_bytes`: what the resident
    weights take on the backend."""

    def __init__(self, backend, c: KimiConfig, weights: dict[str, np.ndarray], n_slots: int = 1, n_ctx: int = 4096,
                 variant: str = "chunk16", form: str = "absorbed"):
        check_weights(c, weights)
        check_variant(variant)
        check_form(form)
        if n_slots < 1 or n_ctx < 1:
            raise ValueError(f"n_slots and n_ctx must be >= 1, got {n_slots}, {n_ctx}")
        self.backend, self.config, self.n_slots, self.n_ctx = backend, c, n_slots, n_ctx
        self.variant, self.form = variant, form
        self.positions = [0] * n_slots
        self.resident = {}
        self.plans: dict[tuple, tuple] = {}  # shape key -> (compiled graph, its cache stores), least recently used first
        self.last_plan: GraphPlan | None = None
        def host(name: str) -> np.ndarray:  # attn_kv_b exists only as the split pair in the weights
            if name in weights:
                return weights[name]
            prefix = name.removesuffix("attn_kv_b.weight")
            return kv_b_from_split(weights[prefix + "attn_k_b.weight"], weights[prefix + "attn_v_b.weight"])

        stored = getattr(weights, "stored", {})
        self.weight_types = self._supported_types(weight_types(c, form, stored))
        try:
            for name, dtype in self.weight_types.items():
                data = stored[name].raw if dtype != DType.F32 else np.asarray(host(name), dtype=np.float32)
                self.resident[name] = backend.upload(np.ascontiguousarray(data).view(np.uint8).reshape(-1))
            self.weights_bytes = sum(buf.nbytes for buf in self.resident.values())
            self.state_names = list(state_shapes(c, n_slots, n_ctx))
            for name, ne in state_shapes(c, n_slots, n_ctx).items():
                self.resident[name] = backend.upload(np.zeros(int(np.prod(ne)) * F32, dtype=np.uint8))
            self.state_bytes = sum(self.resident[s].nbytes for s in self.state_names)
        except BaseException:
            self.close()
            raise

    def _supported_types(self, types: dict[str, DType]) -> dict[str, DType]:
        """`types` less the weights whose readers the backend refuses in their file type (supports() on the nodes of
        a decode and a prefill graph, bound as a compiled graph binds them): those become f32, one line on stderr."""
        kept = {name for name, dtype in types.items() if dtype != DType.F32}
        if not kept:
            return types
        bind = lambda t: t.desc.with_buffer(Buffer(t.storage.nbytes))  # noqa: E731
        refused = {}
        for T, variant in ((1, "recurrent"), (2, self.variant)):
            gr = build_ubatch_graph(self.config, T, 0, [0], 1, 1, 2, variant, self.form, types)
            for name, readers in weight_consumers(gr).items():
                for node, _ in readers if name in kept.difference(refused) else ():
                    reason = self.backend.supports(Node(get_op(node.op), [bind(s) for s in node.srcs],
                                                        bind(node.dst), node.params, node.name))
                    if reason:
                        refused[name] = f"{types[name].label} {node.op}: {reason}"
                        break
        if refused:
            print(f"{self.backend.name}: {len(refused)} of {len(kept)} weights kept in their file's type are "
                  f"uploaded as f32 instead, the backend refusing their readers: "
                  + "; ".join(f"{name} ({why})" for name, why in refused.items()), file=sys.stderr, flush=True)
        return {name: DType.F32 if name in refused else dtype for name, dtype in types.items()}

    def release_plans(self) -> None:
        """Close every compiled graph (their compute buffers go back to the backend)."""
        for plan, _ in self.plans.values():
            plan.close()
        self.plans = {}

    def close(self) -> None:
        self.release_plans()
        for buf in self.resident.values():
            self.backend.free(buf)
        self.resident = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def graph(self, n_seq_tokens: int, first_slot: int, n_seqs: int, n_outputs: int) -> Graph:
        return build_ubatch_graph(self.config, n_seq_tokens, first_slot, self.positions[first_slot:first_slot + n_seqs],
                                  n_outputs, self.n_slots, self.n_ctx, self.variant, self.form, self.weight_types)

    @property
    def last_graph(self) -> Graph | None:
        return self.last_plan.graph if self.last_plan else None

    def plan(self, n_seq_tokens: int, first_slot: int, n_seqs: int, n_outputs: int) -> GraphPlan:
        """The compiled graph of a ubatch at the slots' current positions (compiled now, or patched to them)."""
        positions = self.positions[first_slot:first_slot + n_seqs]
        key = (n_seq_tokens, first_slot, n_seqs, n_outputs,
               tuple(padded_kv(pos, n_seq_tokens, self.n_ctx) for pos in positions))
        entry = self.plans.pop(key, None)
        if entry is None:
            while len(self.plans) >= MAX_PLANS:
                self.plans.pop(next(iter(self.plans)))[0].close()
            plan = GraphPlan(self.backend, self.graph(n_seq_tokens, first_slot, n_seqs, n_outputs), self.resident)
            entry = plan, cache_stores(plan.graph)
        else:
            plan, stores = entry
            for index, params in position_patches(plan.graph, positions, stores):
                if any(plan.graph.nodes[index].params[k] != v for k, v in params.items()):
                    plan.set_params(index, **params)
        self.plans[key] = entry
        return entry[0]

    def ubatch(self, tokens, first_slot: int = 0, outputs: str | list[int] = "last", keep: str = "outputs",
               timings: list | None = None) -> dict:
        """tokens: int array [n_seqs, T] for slots first_slot.. ; outputs: 'last' (each sequence's last token),
        'all', or explicit rows of the flattened (sequence-major) token order. Returns {'logits': [n_out, n_vocab],
        'rows': the rows, plus every node's value by name with keep='nodes'}. `timings`: a profiled run (GraphPlan.run)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.size == 0:
            raise ValueError(f"tokens must be a non-empty [n_seqs, T] array, got shape {tokens.shape}")
        if tokens.min() < 0 or tokens.max() >= self.config.n_vocab:
            raise ValueError(f"token ids must be in 0..{self.config.n_vocab - 1}, got {tokens.min()}..{tokens.max()}")
        n, T = tokens.shape
        if first_slot < 0 or first_slot + n > self.n_slots:
            raise ValueError(f"slots {first_slot}..{first_slot + n - 1} do not exist (n_slots={self.n_slots})")
        if outputs == "last":
            rows = [j * T + T - 1 for j in range(n)]
        elif outputs == "all":
            rows = list(range(n * T))
        elif isinstance(outputs, str):
            raise ValueError(f"outputs must be 'last', 'all' or a list of rows, got {outputs!r}")
        else:
            rows = list(outputs)
        plan = self.last_plan = self.plan(T, first_slot, n, len(rows))
        gr = plan.graph
        positions = self.positions[first_slot:first_slot + n]
        values = {"tokens": tokens.reshape(-1).astype(np.int32), "out_ids": np.asarray(rows, dtype=np.int32)}
        values.update({f"kq_mask_s{j}": causal_mask(pos, T, padded_kv(pos, T, self.n_ctx))
                       for j, pos in enumerate(positions)
                       if f"kq_mask_s{j}" in gr.inputs})
        result = plan.run(values, keep=keep, timings=timings)
        for j in range(n):
            self.positions[first_slot + j] += T
        result["logits"] = result["logits"].reshape(len(rows), self.config.n_vocab)
        result["rows"] = rows
        return result

    def reset(self) -> None:
        """Every slot empty: zero state and cache, positions 0."""
        for name in self.state_names:
            self.backend.write(self.resident[name], np.zeros(self.resident[name].nbytes, dtype=np.uint8))
        self.positions = [0] * self.n_slots

    def snapshot(self) -> tuple:
        """The state, caches and positions, to `restore` later (the bytes a fresh prefill would leave)."""
        return list(self.positions), {name: self.backend.read(self.resident[name]) for name in self.state_names}

    def restore(self, snapshot: tuple) -> None:
        positions, states = snapshot
        for name, raw in states.items():
            self.backend.write(self.resident[name], raw)
        self.positions = list(positions)
