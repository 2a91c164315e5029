"""The model with quantized weights resident (issue 13): which weights a session keeps in the file's type (decided from
the graph), the blocks it uploads, the resident size bench reports and plans for, and parity of the quantized kernels
with the reference on llama.cpp-quantized tiny-256 files (cases/test_gguf.py's fixtures)."""
import json

import numpy as np
import pytest

from backends import TESTED_BACKENDS, get_backend
from backends.session import ModelSession
from bench import parity, throughput
from bench.__main__ import main
from cases.test_gguf import FTYPE_TYPES, T256, quantized_files, t256_weights  # noqa: F401 (fixtures)
from conftest import device_backend
from reference import quants
from reference.gguf_io import read_gguf
from reference.model import build_ubatch_graph, weight_types
from reference.tensor import DType, aligned_size
from reference.weights import FileWeights


def _kept(types: dict) -> dict:
    return {name: t for name, t in types.items() if t != DType.F32}


@pytest.mark.parametrize("ftype", list(FTYPE_TYPES))
def test_every_quantized_tensor_is_kept_in_its_file_type(quantized_files, ftype):
    """Absorbed MLA: every weight llama.cpp quantized is read only as a matmul's src0 or the embedding table, so all
    stay in their file type; the decompressed form's attn_kv_b is rebuilt from the split pair, so it is f32 (and the
    split pair is not in that graph)."""
    _, weights = read_gguf(quantized_files / f"{ftype}.gguf")
    quantized = {name: st.qtype.name for name, st in weights.stored.items() if st.qtype.quantized}
    kept = _kept(weight_types(T256, "absorbed", weights.stored))
    assert {name: t.name for name, t in kept.items()} == quantized
    assert {"token_embd.weight", "output.weight", "blk.3.attn_k_b.weight"} <= set(kept)
    decompressed = weight_types(T256, "decompressed", weights.stored)
    assert decompressed["blk.3.attn_kv_b.weight"] == DType.F32
    split = {f"blk.{il}.attn_{part}_b.weight" for il in T256.mla_layers for part in "kv"}
    assert _kept(decompressed) == {name: t for name, t in kept.items() if name not in split}


def test_the_rule_reads_the_graph(quantized_files):
    """A weight whose reader is not a quantized-weight slot stays f32 whatever the file says: a norm (read by MUL) and
    a conv kernel (reshaped into SSM_CONV); a random weight set (no file) is all f32; and a graph given a quantized
    type where no kernel takes one refuses it."""
    _, weights = read_gguf(quantized_files / "Q8_0.gguf")
    stored = dict(weights.stored)
    norm, conv = "blk.0.attn_norm.weight", "blk.0.ssm_conv1d_q.weight"
    stored[norm] = quants.StoredTensor(quants.quant_type("Q8_0"), stored[norm].ne,
                                      quants.quantize(weights[norm], "Q8_0"))
    stored[conv] = quants.StoredTensor(quants.quant_type("F16"), stored[conv].ne, weights[conv].astype(np.float16))
    types = weight_types(T256, "absorbed", stored)
    assert types[norm] == DType.F32 and types[conv] == DType.F32 and types["output.weight"] == DType.Q8_0
    assert not _kept(weight_types(T256, "absorbed", None))
    with pytest.raises(ValueError, match="q8_0"):
        build_ubatch_graph(T256, 1, 0, [0], 1, 1, 2, types={norm: DType.Q8_0})


def _resident_bytes(weights: FileWeights, types: dict) -> int:
    """The stored bytes of the kept weights plus f32 of the rest, each buffer aligned as a backend allocates it."""
    return sum(aligned_size(weights.stored[name].nbytes if t != DType.F32 else weights[name].nbytes)
               for name, t in types.items())


def test_session_uploads_the_blocks_and_counts_them(quantized_files, t256_weights):
    """The session keeps the expected tensors quantized, holds exactly the file's blocks for them, and its
    weights_bytes is the stored bytes of those plus f32 of the rest: what bench's memory_need plans for, and under a
    fifth of the f32 model's."""
    _, weights = read_gguf(quantized_files / "Q4_K_M.gguf")
    backend = get_backend("numpy")
    with ModelSession(backend, T256, weights, 1, 64) as session, \
            ModelSession(backend, T256, t256_weights, 1, 64) as f32_session:
        assert session.weight_types == weight_types(T256, "absorbed", weights.stored)
        for name, t in _kept(session.weight_types).items():
            raw = np.ascontiguousarray(weights.stored[name].raw).view(np.uint8).reshape(-1)
            np.testing.assert_array_equal(backend.read(session.resident[name])[:raw.size], raw, err_msg=name)
        assert session.weights_bytes == _resident_bytes(weights, session.weight_types)
        assert session.weights_bytes < 0.2 * f32_session.weights_bytes
        need = throughput.memory_need(T256, [throughput.BenchTest("pp", 8)], [0], ["chunk16"], "absorbed", 2048, 512,
                                      weights.stored)
        assert need["weights"] == session.weights_bytes
        assert not _kept(f32_session.weight_types)


def test_session_falls_back_to_f32_where_the_backend_refuses(quantized_files, monkeypatch, capsys):
    """A backend that refuses quantized MUL_MAT_ID gets the expert stacks as f32, said once on stderr, and the
    model still runs (the logits of the session that kept them quantized, within f32 rounding)."""
    config, weights = read_gguf(quantized_files / "Q4_K_M.gguf")
    backend = get_backend("numpy")
    tokens = np.array([[1, 2, 3]])
    with ModelSession(backend, config, weights, 1, 64) as reference:
        expected = reference.ubatch(tokens)["logits"]
    honest = backend.supports

    def no_quantized_experts(node):
        if node.op.name == "MUL_MAT_ID" and node.srcs[0].dtype.quantized:
            return "quantized experts not implemented (planted)"
        return honest(node)

    monkeypatch.setattr(backend, "supports", no_quantized_experts)
    with ModelSession(backend, config, weights, 1, 64) as session:
        experts = {n for n in weights.stored if "_exps." in n}
        assert {n for n, t in session.weight_types.items() if t == DType.F32} >= experts
        assert set(_kept(session.weight_types)) == set(_kept(weight_types(config, "absorbed", weights.stored))) - experts
        err = capsys.readouterr().err
        assert err.count("uploaded as f32 instead") == 1 and "quantized experts not implemented (planted)" in err
        assert all(n in err for n in experts)
        np.testing.assert_allclose(session.ubatch(tokens)["logits"], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["opencl", "vulkan"])
def test_quantized_parity_on_backend(quantized_files, backend):
    """`bench parity --backend B --model q.gguf`: the backend's quantized kernels read the file's blocks and the
    reference dequantizes the same blocks, so the f32 bounds hold (measured worst node 4.4e-12 on OpenCL, 2.5e-12 on
    Vulkan, as on the f32 file)."""
    assert backend in TESTED_BACKENDS
    device_backend(backend)
    config, weights = read_gguf(quantized_files / "Q4_K_M.gguf")
    summary = parity.run_parity(backend, config, weights, "chunk16", "absorbed",
                                parity.Scenario(prompt=20, decode=2)).summary()
    assert summary["passed"] and summary["top1_agreement"] == 1.0, summary


def _same_layout_pair(weights: FileWeights) -> tuple[str, str]:
    """Two quantized expert stacks of one layer with the same type and shape (gate and up)."""
    for name, st in weights.stored.items():
        other = name.replace("ffn_gate_exps", "ffn_up_exps")
        if other != name and weights.stored[other].qtype == st.qtype and weights.stored[other].ne == st.ne:
            return name, other
    raise AssertionError("no same-typed gate/up expert pair")


def test_quantized_parity_catches_the_wrong_blocks(quantized_files, monkeypatch):
    """The device session uploading another tensor's blocks (gate and up experts swapped; the reference session
    reads the honest ones) fails parity at the first node that reads them: the kernels compute on the blocks the
    session uploads, not on the float weights."""
    device_backend("opencl")
    config, weights = read_gguf(quantized_files / "Q4_K_M.gguf")
    gate, up = _same_layout_pair(weights)
    honest = ModelSession.__init__

    def swapped(self, backend, c, w, *args, **kwargs):
        if backend.name == "opencl":
            stored = {**w.stored, gate: w.stored[up], up: w.stored[gate]}
            w = FileWeights(w, stored, w.layout)
        honest(self, backend, c, w, *args, **kwargs)

    monkeypatch.setattr(ModelSession, "__init__", swapped)
    result = parity.run_parity("opencl", config, weights, "chunk16", "absorbed", parity.Scenario(prompt=8, decode=0))
    assert not result.passed
    first = result.failures[0]
    layer = gate.split(".")[1]
    assert first["node"] in (f"ffn_moe_gate-{layer}", f"ffn_moe_up-{layer}") and first["nmse"] > 0.1, first


def test_ggml_parity_on_a_quantized_file(quantized_files):
    """ggml's quantized matmuls quantize the activations to Q8 first (parity.Q8_ACTIVATIONS): on a quantized file it
    is held to llama.cpp's bound, which its measured worst node (3.5e-3) meets, with near-tie top-1 flips excused."""
    device_backend("ggml")
    config, weights = read_gguf(quantized_files / "Q4_K_M.gguf")
    summary = parity.run_parity("ggml", config, weights, "chunk16", "absorbed",
                                parity.Scenario(prompt=20, decode=2)).summary()
    assert summary["passed"], summary
    assert 1e-6 < summary["max_nmse"] < parity.LLAMA_CPP_QUANT_NMSE


def test_bench_reports_the_resident_size(quantized_files, capsys):
    """`bench pp8 tg2 --model q.gguf`: weights MiB is the resident (quantized) size, as memory_need planned it."""
    path = quantized_files / "Q4_K_M.gguf"
    assert main(["pp8", "tg2", "--model", str(path), "--backend", "numpy", "-r", "1", "--no-record",
                 "-o", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    _, weights = read_gguf(path)
    resident = _resident_bytes(weights, weight_types(T256, "absorbed", weights.stored))
    need = throughput.memory_need(T256, [throughput.BenchTest("pp", 8), throughput.BenchTest("tg", 2)], [0],
                                  ["chunk16"], "absorbed", 2048, 512, weights.stored)
    assert {r["weights_bytes"] for r in records} == {resident} == {need["weights"]}
