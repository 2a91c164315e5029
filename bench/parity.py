"""Model parity: the same Kimi-Linear graphs on a backend and on the reference, node by node, over a scenario that
crosses delta-net chunk boundaries, decodes several steps and keeps two sequences apart.

Every node's value on the backend (its errors propagated from earlier nodes, as in a real run) is compared with the
reference's under that op's NMSE bound (test-backend-ops' bounds); index outputs (TOP_K, ARGSORT) must give the same
index sets. The logits' top-1 token is compared per row.

Against llama.cpp (`--against llama.cpp`) the reference runs the same GGUF the way llama.cpp is fed (each
sequence's prompt, then one decode call per sequence per step) and every node whose llama.cpp callback name matches
one of ours is compared under LLAMA_CPP_NMSE.

Quantized files (read_gguf keeps each tensor's ggml type): the reference computes dequantized weights (ggml's own
dequantization, bit for bit) times float activations. llama.cpp's CPU matmul quantizes the activations first (Q8_0
for the legacy types, Q8_K for the K-quants) and multiplies integer blocks, so it differs from the reference by
that rounding: measured on tiny-256 quantized by llama.cpp (the parity scenario, 680 nodes), one matmul of layer 0
(kda_beta-0) differs by NMSE 3-4e-5, and the difference grows through the layers to at most 4.0e-3 (Q8_0), 4.6e-3
(Q4_K_M), 3.3e-3 (Q2_K) at a node, logits 7.5e-4, 1.3e-3, 1.3e-3; f32 stays at 5e-12. Those nodes are compared
under LLAMA_CPP_QUANT_NMSE (4x the worst measured); a dequantizer bug (a nibble order, a dropped dmin) moves the
first node it touches to NMSE ~1. The same rounding flips the top-1 token where the reference's two best logits
nearly tie (97% agreement measured), so a top-1 disagreement on a quantized file is excused when the reference's
logit gap between the two tokens is under NEAR_TIE_RMS times the row's RMS logit difference (and counted in
top1_excused). A discrete choice flips the same way: where a router picks k < n_expert experts, a near tie sends a
token to another expert, changing its FFN output by O(1), so node-by-node parity on a quantized file needs a model
whose router uses every expert (tiny-256 does); on a real checkpoint expect the MoE nodes after a flip to fail.
Against our backends (`--backend B --model q.gguf`) both sessions keep the file's blocks resident
(reference.model.weight_types) and the backend's quantized kernels run against the reference, which dequantizes the
same blocks: the same weights exactly, so the f32 bounds hold. Measured on tiny-256 quantized by llama.cpp (the
parity scenario, 1226 node results), the worst node is at NMSE 4.4e-12 on OpenCL and 2.5e-12 on Vulkan for Q8_0,
Q4_K_M and Q2_K alike - the f32 file's figures (3.6e-12, 2.2e-12): the kernels dequantize exactly and accumulate in
f32. The ggml backend is the exception (Q8_ACTIVATIONS): its quantized matmuls are ggml's CPU path, which quantizes
the activations first, as llama.cpp does; measured on the same files it reaches NMSE 2.6e-3 (Q8_0) to 3.8e-3 (Q2_K)
at a node, so it is held to LLAMA_CPP_QUANT_NMSE with near-tie top-1 flips excused, as llama.cpp is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backends import get_backend, usable
from backends.session import ModelSession
from cases.harness import check_nmse
from reference.config import KimiConfig
from reference.ops import get_op

INDEX_OPS = {"TOP_K", "ARGSORT"}
# MoE nodes with an expert-slot axis: TOP_K may list the chosen experts in any order (spec section 6), so these are
# compared after putting the backend's slots in the reference's order. Partial sums over the first e slots
# (ffn_moe_out_add<e>) have no such fix and are only compared when the orders agree.
ROUTED = ("ffn_moe_weights", "ffn_moe_weights_norm", "ffn_moe_weights_scaled", "ffn_moe_up", "ffn_moe_gate",
          "ffn_moe_silu", "ffn_moe_gate_par", "ffn_moe_down", "ffn_moe_weighted")
# llama.cpp computes in float32 with its own summation orders and chunking: on tiny every matched node agreed within
# NMSE 3.5e-10 (flash attention off). The bound is test-backend-ops' default; a semantic slip (a wrong scale, eps or
# gate) moves a node far past it.
LLAMA_CPP_NMSE = 1e-7
LLAMA_CPP_QUANT_NMSE = 2e-2  # quantized files: llama.cpp's Q8 activations, measured <= 4.6e-3 (module docstring)
NEAR_TIE_RMS = 3.0
# Backends whose quantized matmuls quantize the activations to Q8 first (ggml's CPU path): on quantized weights they
# differ from the reference as llama.cpp does (module docstring).
Q8_ACTIVATIONS = {"ggml"}


@dataclass(frozen=True)
class Scenario:
    """Two sequences prefilled together (prompt tokens each, in ubatches of n_ubatch), then decode steps that feed
    one token per sequence. Token ids are drawn from a seeded generator."""
    prompt: int = 70  # > 64: crosses a chunk64 boundary, and four chunk16 ones
    decode: int = 3
    n_seqs: int = 2
    n_ubatch: int = 512
    seed: int = 0

    def tokens(self, n_vocab: int) -> np.ndarray:
        """[n_seqs, prompt + decode] token ids."""
        return np.random.default_rng(self.seed).integers(0, n_vocab, size=(self.n_seqs, self.prompt + self.decode))

    def steps(self, n_vocab: int):
        """(label, tokens [n_seqs, T]) per ubatch, in order."""
        toks = self.tokens(n_vocab)
        for start in range(0, self.prompt, self.n_ubatch):
            end = min(start + self.n_ubatch, self.prompt)
            yield f"prefill[{start}:{end}]", toks[:, start:end]
        for i in range(self.decode):
            yield f"decode{i}", toks[:, self.prompt + i:self.prompt + i + 1]


@dataclass
class ParityResult:
    backend: str
    rows: list[dict] = field(default_factory=list)  # one per (step, node)
    top1: list[bool] = field(default_factory=list)
    logits_nmse: list[float] = field(default_factory=list)
    top1_excused: int = 0  # disagreements on near ties of a quantized file (counted as agreeing in top1)

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.rows if not r["ok"]]

    @property
    def passed(self) -> bool:
        return not self.failures and all(self.top1)

    def summary(self) -> dict:
        first = self.failures[0] if self.failures else None
        return {"passed": self.passed, "nodes_checked": len(self.rows),
                "first_failing_node": f"{first['step']}: {first['node']}" if first else None,
                "first_failure": first["problem"] if first else None,
                "max_nmse": max((r["nmse"] for r in self.rows if r["nmse"] is not None), default=0.0),
                "max_logits_nmse": max(self.logits_nmse, default=0.0),
                "top1_agreement": float(np.mean(self.top1)) if self.top1 else 0.0, "top1_excused": self.top1_excused}


def expert_orders(got: dict, ref: dict) -> dict[str, np.ndarray | None]:
    """Per MoE layer: None when the backend chose its experts in the reference's order, else for each token the
    permutation that puts the backend's slots in the reference's order (only when the sets agree)."""
    orders = {}
    for name in ref:
        base, _, layer = name.rpartition("-")
        if base != "ffn_moe_topk":
            continue
        g, r = got[name].reshape(-1, got[name].shape[-1]), ref[name].reshape(-1, ref[name].shape[-1])  # [T, k]
        if np.array_equal(g, r) or not np.array_equal(np.sort(g, axis=-1), np.sort(r, axis=-1)):
            orders[layer] = None
            continue
        orders[layer] = np.stack([np.argsort(gi)[np.argsort(np.argsort(ri))] for gi, ri in zip(g, r)])
    return orders


def reorder_slots(value: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """value with ne [X, k, T] (numpy [..., T, k, X]) or ne [k, T] (numpy [..., T, k]) reordered per token t so
    that slot i holds the backend's slot perm[t, i]."""
    T, k = perm.shape
    if value.shape[-1] == k and value.shape[-2] == T:  # [k, T]
        return np.take_along_axis(value, np.broadcast_to(perm, value.shape), axis=-1)
    idx = np.broadcast_to(perm[..., None], value.shape[:-3] + (T, k, value.shape[-1]))
    return np.take_along_axis(value, idx, axis=-2)


def compare_nodes(step: str, got: dict, ref: dict, ops: dict[str, str], bound: float | None = None) -> list[dict]:
    """One row per node name in `ops` (name -> op, in graph order): NMSE against the op's bound (or `bound`),
    index sets for index ops, MoE slots put in the reference's order first."""
    orders = expert_orders(got, ref)
    rows = []
    for name, op in ops.items():
        base, _, layer = name.rpartition("-")
        if base.startswith("ffn_moe_out_add") and orders.get(layer) is not None:
            continue
        value, expected = got[name], ref[name]
        limit = None if op in INDEX_OPS else (get_op(op).nmse if bound is None else bound)
        row = {"step": step, "node": name, "op": op, "nmse": None, "bound": limit}
        if value.size != expected.size:
            problems = [f"{value.size} elements where the reference has {expected.size}"]
        else:
            value = value.reshape(expected.shape)
            if base in ROUTED and orders.get(layer) is not None:
                value = reorder_slots(value, orders[layer])
            if op in INDEX_OPS:
                same = np.array_equal(np.sort(value, axis=-1), np.sort(expected, axis=-1))
                problems = [] if same else ["index set differs from the reference's"]
            else:
                row["nmse"], problems = check_nmse(value, expected, limit)
        rows.append({**row, "ok": not problems, "problem": "; ".join(problems)})
    return rows


def _score_logits(result: ParityResult, got: np.ndarray, ref: np.ndarray, excuse_near_ties: bool = False) -> None:
    """Top-1 per row and the logits' NMSE. excuse_near_ties (quantized files against llama.cpp): a row whose top-1
    differs still agrees when the reference scores the two tokens within NEAR_TIE_RMS x the row's RMS difference."""
    got, ref = got.reshape(-1, got.shape[-1]), ref.reshape(-1, ref.shape[-1])
    theirs, ours = np.argmax(got, axis=-1), np.argmax(ref, axis=-1)
    for row, (a, b) in enumerate(zip(theirs, ours)):
        agree = bool(a == b)
        if not agree and excuse_near_ties:
            rms = np.sqrt(np.mean((got[row] - ref[row]) ** 2))
            agree = bool(ref[row, b] - ref[row, a] < NEAR_TIE_RMS * rms)
            result.top1_excused += agree
        result.top1.append(agree)
    result.logits_nmse.append(float(np.sum((got - ref) ** 2) / np.sum(ref ** 2)))


def is_quantized(weights: dict) -> bool:
    """Whether the weights were read from a file holding quantized tensors (read_gguf's FileWeights)."""
    return any(t.qtype.quantized for t in getattr(weights, "stored", {}).values())


def run_parity(backend_name: str, c: KimiConfig, weights: dict, variant: str, form: str,
               scenario: Scenario = Scenario(), reference=None) -> ParityResult:
    """Run the scenario on `backend_name` and on the reference backend in lockstep and compare every node."""
    reference = reference or get_backend("numpy")
    backend = get_backend(backend_name)
    n_ctx = scenario.prompt + scenario.decode
    result = ParityResult(backend_name)
    with ModelSession(reference, c, weights, scenario.n_seqs, n_ctx, variant, form) as ref_session, \
            ModelSession(backend, c, weights, scenario.n_seqs, n_ctx, variant, form) as dev_session:
        q8 = backend_name in Q8_ACTIVATIONS and any(t.quantized for t in dev_session.weight_types.values())
        for label, toks in scenario.steps(c.n_vocab):
            ref = ref_session.ubatch(toks, outputs="all", keep="nodes")
            got = dev_session.ubatch(toks, outputs="all", keep="nodes")
            ops = {node.name: node.op for node in ref_session.last_graph.nodes}
            result.rows += compare_nodes(label, got, ref, ops, LLAMA_CPP_QUANT_NMSE if q8 else None)
            _score_logits(result, got["logits"], ref["logits"], q8)
    return result


def run_llama_parity(gguf_path, c: KimiConfig, weights: dict, variant: str, form: str,
                     scenario: Scenario = Scenario()) -> ParityResult:
    """The reference against llama.cpp on the same GGUF file, call by call and node by node."""
    from backends.llama_cpp import llama_cpp_run

    toks = scenario.tokens(c.n_vocab)
    seqs = [(list(map(int, t[:scenario.prompt])), list(map(int, t[scenario.prompt:]))) for t in toks]
    theirs = llama_cpp_run(gguf_path, seqs, nodes=["*"], ubatch=scenario.n_ubatch)
    result = ParityResult("llama.cpp")
    quantized = is_quantized(weights)
    bound = LLAMA_CPP_QUANT_NMSE if quantized else LLAMA_CPP_NMSE
    n_ctx = scenario.prompt + scenario.decode
    calls_per_seq: dict[int, int] = {}
    with ModelSession(get_backend("numpy"), c, weights, scenario.n_seqs, n_ctx, variant, form) as session:
        for seq, first, count in theirs["calls"]:
            call = calls_per_seq.get(seq, 0)
            calls_per_seq[seq] = call + 1
            ref = session.ubatch(toks[seq:seq + 1, first:first + count], first_slot=seq, outputs="all", keep="nodes")
            got = theirs["nodes"][(seq, call)]
            ops = {node.name: node.op for node in session.last_graph.nodes if node.name in got}
            result.rows += compare_nodes(f"seq{seq} [{first}:{first + count}]", got, ref, ops, bound)
            _score_logits(result, theirs["logits"][seq][first:first + count], ref["logits"], quantized)
    return result


def run_cli(backends: list[str], c: KimiConfig, weights: dict, model: str, variant: str, form: str,
            scenario: Scenario, against: str, show: int = 12) -> tuple[list[dict], bool]:
    """`python -m bench parity`: prints, per run, the worst nodes (NMSE / bound), the first failing node and the
    top-1 agreement; returns history records (kind 'parity') and whether every run passed."""
    base = {"kind": "parity", "against": against, "model": model, "model_config": c.name, "variant": variant,
            "form": form, "prompt": scenario.prompt, "decode": scenario.decode, "n_seqs": scenario.n_seqs}
    runs = []
    if against == "llama.cpp":
        import tempfile

        from reference.gguf_io import write_gguf

        with tempfile.TemporaryDirectory() as tmp:
            path = model if model.endswith(".gguf") else f"{tmp}/{model}.gguf"
            if path != model:
                write_gguf(path, c, weights)
            runs.append(({"backend": "numpy", "device": "llama.cpp (llama-cpp-python 0.3.36, CPU)"},
                         run_llama_parity(path, c, weights, variant, form, scenario)))
    else:
        for name, _, info in usable(backends):
            runs.append(({"backend": name, **info}, run_parity(name, c, weights, variant, form, scenario)))
    records, ok = [], True
    for info, result in runs:
        summary = result.summary()
        records.append({**base, **info, **summary})
        ok &= summary["passed"]
        print(f"\n{info['backend']} vs {'llama.cpp' if against == 'llama.cpp' else 'the reference'}: "
              f"{'PASS' if summary['passed'] else 'FAIL'}, {summary['nodes_checked']} node results, "
              f"max NMSE {summary['max_nmse']:.3g}, logits NMSE {summary['max_logits_nmse']:.3g}, "
              f"top-1 agreement {100 * summary['top1_agreement']:.1f}%"
              + (f" ({summary['top1_excused']} near ties excused)" if summary["top1_excused"] else ""))
        if summary["first_failing_node"]:
            print(f"first node past its bound: {summary['first_failing_node']} ({summary['first_failure']})")
        print(node_table(result.rows, show))
    return records, ok


def node_table(rows: list[dict], show: int) -> str:
    """Per node, its worst NMSE over every step, closest to the bound first, as a markdown table."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return "(no nodes compared)"
    df["of bound"] = df.nmse / df.bound
    worst = df.sort_values("of bound", ascending=False, na_position="last").drop_duplicates("node")
    return worst.head(show)[["node", "op", "step", "nmse", "bound", "of bound", "ok"]].to_markdown(
        index=False, floatfmt=".3g")
