"""The Kimi-Linear model graph end to end: it matches an independent float64 loop in every delta-net variant and MLA
form; prefill in ubatches then decode equals one long prefill; sequences in neighbouring slots do not leak; every
backend matches the reference node by node (bench parity); and the reference matches llama.cpp on the same GGUF."""
import dataclasses

import numpy as np
import pytest

from backends import TESTED_BACKENDS
from backends.numpy_backend import NumpyBackend
from backends.session import ModelSession
from bench import parity
from bench.__main__ import main
from conftest import device_backend
from reference.config import get_config, weight_shapes
from reference.delta_net import VARIANTS
from reference.model import build_ubatch_graph, model_loop
from reference.weights import random_weights
from reports import history

TINY = get_config("tiny")
WEIGHTS = random_weights(TINY, seed=0)
# The graph stores every node in float32 while the loop stays in float64: measured 1e-13 on tiny. Any algebra slip
# (a wrong gate sign, scale, norm, tap order or routing) is O(1e-3) or more.
GRAPH_NMSE = 1e-10


def nmse(got, ref):
    return float(np.sum((got - ref) ** 2) / np.sum(ref ** 2))


def tokens(n_seqs, T, seed=1):
    return np.random.default_rng(seed).integers(0, TINY.n_vocab, size=(n_seqs, T))


@pytest.mark.parametrize("variant,form", [(v, "absorbed") for v in VARIANTS] + [("chunk16", "decompressed")])
def test_graph_matches_loop(variant, form):
    toks = tokens(2, 70)  # crosses the 64-token chunk and four 16-token chunks
    with ModelSession(NumpyBackend(), TINY, WEIGHTS, n_slots=2, n_ctx=80, variant=variant, form=form) as s:
        got = s.ubatch(toks, outputs="all")["logits"].reshape(2, 70, -1)
    for j in range(2):
        assert nmse(got[j], model_loop(TINY, WEIGHTS, toks[j])) < GRAPH_NMSE


Q_LORA = dataclasses.replace(TINY, name="tiny-q-lora", q_lora=48)
Q_LORA_WEIGHTS = random_weights(Q_LORA, seed=0)


@pytest.mark.parametrize("form", ["absorbed", "decompressed"])
def test_q_lora_graph_matches_loop(form):
    """q = q_b(rms_norm(q_a(x)) * q_a_norm) in the MLA layers: the graph against the float64 loop, and the loop
    reads the q-LoRA weights (changing attn_q_a_norm moves the logits)."""
    toks = tokens(1, 20)
    with ModelSession(NumpyBackend(), Q_LORA, Q_LORA_WEIGHTS, n_ctx=32, form=form) as s:
        got = s.ubatch(toks, outputs="all")["logits"]
    expected = model_loop(Q_LORA, Q_LORA_WEIGHTS, toks[0])
    assert nmse(got, expected) < GRAPH_NMSE
    changed = dict(Q_LORA_WEIGHTS, **{"blk.3.attn_q_a_norm.weight": Q_LORA_WEIGHTS["blk.3.attn_q_a_norm.weight"] * 1.1})
    assert nmse(model_loop(Q_LORA, changed, toks[0]), expected) > 1e3 * GRAPH_NMSE


@pytest.mark.parametrize("backend", [b for b in TESTED_BACKENDS])
def test_q_lora_backend_parity(backend):
    device_backend(backend)
    summary = parity.run_parity(backend, Q_LORA, Q_LORA_WEIGHTS, "chunk16", "absorbed",
                                parity.Scenario(prompt=20, decode=1)).summary()
    assert summary["passed"] and summary["top1_agreement"] == 1.0, f"{backend}: {summary}"


def test_loop_is_sensitive():
    """The comparison above can fail: one changed weight moves the logits far past the bound."""
    toks = tokens(1, 20)[0]
    changed = dict(WEIGHTS)
    changed["blk.1.ssm_a"] = WEIGHTS["blk.1.ssm_a"] * 1.01
    assert nmse(model_loop(TINY, changed, toks), model_loop(TINY, WEIGHTS, toks)) > 1e3 * GRAPH_NMSE


def test_prefill_then_decode_equals_one_prefill():
    toks = tokens(1, 46)
    with ModelSession(NumpyBackend(), TINY, WEIGHTS, n_ctx=64, variant="chunk16") as whole:
        expected = whole.ubatch(toks, outputs="all")["logits"]
    with ModelSession(NumpyBackend(), TINY, WEIGHTS, n_ctx=64, variant="chunk16") as parts:
        got = [parts.ubatch(toks[:, a:b], outputs="all")["logits"] for a, b in ((0, 16), (16, 32), (32, 40))]
        got += [parts.ubatch(toks[:, t:t + 1])["logits"] for t in range(40, 46)]
    assert nmse(np.concatenate(got), expected) < GRAPH_NMSE


def test_sequences_do_not_leak():
    """Slot 1 gives the same logits whether slot 0 is busy with another sequence or not."""
    toks = tokens(2, 30)
    with ModelSession(NumpyBackend(), TINY, WEIGHTS, n_slots=2, n_ctx=40) as pair:
        both = pair.ubatch(toks[:, :24], outputs="all")["logits"][24:]
        both = np.concatenate([both, pair.ubatch(toks[:, 24:25])["logits"][1:]])
    with ModelSession(NumpyBackend(), TINY, WEIGHTS, n_slots=2, n_ctx=40) as alone:
        single = alone.ubatch(toks[1:, :24], first_slot=1, outputs="all")["logits"]
        single = np.concatenate([single, alone.ubatch(toks[1:, 24:25], first_slot=1)["logits"]])
    assert nmse(both, single) < 1e-12


def test_node_names_follow_llama_cpp():
    gr = build_ubatch_graph(TINY, 4, 0, [0], 4, 1, 256)
    names = [n.name for n in gr.nodes]
    assert len(names) == len(set(names))
    for name in ["attn_norm-0", "kda_g1-0", "kda_beta-0", "attn_output-0", "kda_normed-0", "kda_out-0", "ffn_out-0",
                 "ffn_moe_topk-1", "ffn_moe_out-1", "ffn_shexp-1", "mla_out-3", "l_out-3", "result_output"]:
        assert name in names


@pytest.mark.parametrize("change,message", [
    (dict(tokens=np.array([[0, 256]])), "token ids must be in 0..255"),
    (dict(tokens=np.array([1, 2])), "tokens must be a non-empty [n_seqs, T] array"),
    (dict(first_slot=1), "slots 1..1 do not exist"),
    (dict(tokens=np.zeros((1, 70), dtype=int)), "do not fit n_ctx=64"),
])
def test_bad_ubatch_refused(change, message):
    args = {"tokens": np.array([[1, 2]]), "first_slot": 0, **change}
    with ModelSession(NumpyBackend(), TINY, WEIGHTS, n_ctx=64) as s:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            s.ubatch(args["tokens"], first_slot=args["first_slot"])


def test_unsupported_node_refused_before_any_kernel_runs():
    class NoSoftmax(NumpyBackend):
        name = "no-softmax"
        prepared = 0

        def supports(self, node):
            return "no SOFT_MAX_EXT here" if node.op.name == "SOFT_MAX_EXT" else super().supports(node)

        def prepare(self, node):
            NoSoftmax.prepared += 1
            return super().prepare(node)

    backend = NoSoftmax()
    with ModelSession(backend, TINY, WEIGHTS, n_ctx=64) as s:
        before = s.snapshot()[1]
        with pytest.raises(NotImplementedError, match=r"no-softmax does not run mla_s0_kq_soft_max-3: .*no SOFT_MAX"):
            s.ubatch(tokens(1, 4))
        assert NoSoftmax.prepared == 0 and s.positions == [0]
        assert all(np.array_equal(before[k], v) for k, v in s.snapshot()[1].items())  # state untouched
    assert backend.live_bytes == 0  # nothing leaked


def test_bad_weights_refused():
    missing = {k: v for k, v in WEIGHTS.items() if k != "blk.3.attn_k_b.weight"}
    with pytest.raises(ValueError, match="missing tensor.*blk.3.attn_k_b.weight"):
        ModelSession(NumpyBackend(), TINY, missing)
    wrong = dict(WEIGHTS, **{"blk.0.ssm_a": np.zeros((3, 1), np.float32)})
    with pytest.raises(ValueError, match=r"blk.0.ssm_a has ne \[1, 3\], expected \[1, 4\]"):
        ModelSession(NumpyBackend(), TINY, wrong)
    with pytest.raises(ValueError, match="unknown delta-net variant"):
        ModelSession(NumpyBackend(), TINY, WEIGHTS, variant="chunk32")


def test_48b_preset_has_the_checkpoint_shape():
    c = get_config("kimi-linear-48b-a3b")
    assert c.mla_layers == [3, 7, 11, 15, 19, 23, 26] and len(c.kda_layers) == 20
    assert weight_shapes(c)["blk.1.ffn_gate_exps.weight"] == (2304, 1024, 256)
    assert weight_shapes(c)["blk.3.attn_k_b.weight"] == (128, 512, 32)
    small = get_config("kimi-linear-48b-a3b", n_layer=4, n_expert=8)
    assert small.mla_layers == [3] and small.n_expert_used == 8 and small.d_model == 2304


# ---- parity: every backend against the reference, the reference against llama.cpp --------------------------------
@pytest.mark.parametrize("backend", [b for b in TESTED_BACKENDS])
@pytest.mark.parametrize("variant,form", [("chunk16", "absorbed"), ("block16", "decompressed")])
def test_backend_parity(backend, variant, form):
    device_backend(backend)
    result = parity.run_parity(backend, TINY, WEIGHTS, variant, form)
    summary = result.summary()
    assert summary["passed"], f"{backend}: {summary}"
    assert summary["top1_agreement"] == 1.0 and summary["nodes_checked"] > 1000


def test_parity_catches_a_wrong_kernel():
    """A backend whose SIGMOID is off by 1e-3 fails parity at the first sigmoid node."""

    class Skewed(NumpyBackend):
        name = "skewed"

        def prepare(self, node):
            run = super().prepare(node)
            if node.op.name != "SIGMOID":
                return run

            def skewed():
                run()
                view = node.dst.buffer.handle[node.dst.offset:node.dst.offset + node.dst.nbytes()].view(np.float32)
                view *= np.float32(1.001)
            return skewed

    result = parity.run_parity("numpy", TINY, WEIGHTS, "chunk16", "absorbed",
                               parity.Scenario(prompt=20, decode=1), reference=Skewed())
    assert not result.passed
    assert result.failures[0]["op"] == "SIGMOID" and result.failures[0]["node"] == "kda_beta_sigmoid-0"


def test_reference_matches_llama_cpp(tmp_path):
    from reference.gguf_io import write_gguf

    path = tmp_path / "tiny.gguf"
    write_gguf(path, TINY, WEIGHTS)
    result = parity.run_llama_parity(path, TINY, WEIGHTS, "chunk16", "absorbed")
    summary = result.summary()
    assert summary["passed"], summary
    assert summary["nodes_checked"] > 500 and summary["top1_agreement"] == 1.0
    checked = {r["node"] for r in result.rows}
    assert {"kda_g1-0", "kda_beta-0", "attn_output-0", "kda_normed-0", "mla_out-3", "ffn_moe_topk-1",
            "ffn_moe_out-2", "l_out-3", "result_output"} <= checked


def test_parity_cli_records_history(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(history, "HISTORY", tmp_path / "h.jsonl")
    assert main(["parity", "--backend", "ggml", "--prompt", "18", "--decode", "1"]) == 0
    rec, = history.load(tmp_path / "h.jsonl")
    assert rec["kind"] == "parity" and rec["passed"] and rec["backend"] == "ggml" and rec["model"] == "tiny"
    assert "ggml vs the reference: PASS" in capsys.readouterr().out


# ---- llama-bench style throughput -----------------------------------------------------------------------------
def test_throughput_records(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(history, "HISTORY", tmp_path / "h.jsonl")
    assert main(["pp16", "tg2", "--depth", "0,20", "-r", "2", "--backend", "ggml", "-ub", "8"]) == 0
    recs = history.load(tmp_path / "h.jsonl")
    assert [r["test"] for r in recs] == ["pp16", "tg2", "pp16 @ d20", "tg2 @ d20"]
    for r in recs:
        assert r["kind"] == "bench" and r["supported"] and len(r["samples_ts"]) == 2 and r["avg_ts"] > 0
        assert r["weights_bytes"] >= sum(a.nbytes for a in WEIGHTS.values()) and r["state_bytes"] > 0
        # What the allocator counted for the compiled graphs' buffers is the planner's assignment.
        assert r["compute_measured_bytes"] == r["compute_planned_bytes"] > 0
    assert "pp16 @ d20" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["pp0"], "unknown test or command 'pp0'"),
    (["tg128", "--backend", "metal"], "unknown backend 'metal'"),
    (["pp512", "--model", "huge"], "unknown model 'huge': give a preset (tiny, tiny-256, small, kimi-linear-48b-a3b)"),
    (["pp512", "--variant", "chunk32"], "known variants: recurrent, chunk64, chunk16, block16"),
    (["pp512", "--depth", "-1"], "-d takes N, first-last"),
    (["parity", "--model", "tiny", "--form", "latent"], "known forms: decompressed, absorbed"),
])
def test_bench_refuses_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv + ["--no-record"])
    assert done.value.code == 2
    assert message in capsys.readouterr().err
