"""The dense SwiGLU FFN and the MoE FFN graphs against plain per-token NumPy loops (spec section 6), with exact and
near ties in the router scores; then node by node on every backend."""
import numpy as np
import pytest

from backends import TESTED_BACKENDS
from backends.numpy_backend import NumpyBackend
from conftest import device_backend
from reference.ffn import MoeConfig, dense_ffn_weights, moe_ffn, moe_loop, moe_weights, swiglu, swiglu_loop
from reference.graph import Graph
from reference.plan import run_graph

from .harness import check_graph_nodes

CONFIGS = {
    "kimi-like": MoeConfig(d_model=64, n_expert=8, n_used=4, d_expert=32, d_shared=32),
    "top1-noshared": MoeConfig(d_model=32, n_expert=4, n_used=1, d_expert=16, d_shared=0),
}
# float32 nodes against a float64 loop; the products are MUL_MAT-class (upstream bound 5e-4), far above rounding.
FFN_NMSE = 5e-4


def nmse(got, ref):
    return float(np.sum((got - ref) ** 2) / np.sum(ref ** 2))


def moe_problem(c: MoeConfig, T: int, seed: int):
    """Router rows: experts 0 and 1 identical with identical weights (an exact tie that cannot change the output);
    experts 2 and 3 identical rows with correction biases 1e-3 apart (a near tie that must be decided the same way)."""
    rng = np.random.default_rng(seed)
    gr = Graph()
    cur = gr.input("cur", (c.d_model, T))
    w = moe_weights(gr, c)
    gr.output("out", moe_ffn(gr, cur, w, c))
    scale = 1 / np.sqrt(c.d_model)
    values = {name: rng.uniform(-1, 1, np.squeeze(np.empty(t.desc.shape)).shape) * (scale if name != "cur" else 1)
              for name, t in gr.inputs.items()}
    values["cur"] = values["cur"].reshape(T, c.d_model)
    gi, bias = values["ffn_gate_inp"], values["ffn_exp_probs_b"]
    gi *= 4  # spread the router scores
    if c.n_expert >= 4:
        gi[1] = gi[0]
        bias[1] = bias[0]
        for part in ("gate_exps", "up_exps", "down_exps"):
            values[f"ffn_{part}"][1] = values[f"ffn_{part}"][0]
        gi[3] = gi[2]
        bias[3] = bias[2] + 1e-3
    loop_w = {k: values[f"ffn_{k}" if not k.endswith("_shexp") else "ffn_shexp_" + k[:-6]]
              for k in w if k != "probs_b"} | {"probs_b": bias}
    return gr, values, loop_w


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("T", [1, 5, 33])
def test_moe_graph_equals_loop(config, T):
    c = CONFIGS[config]
    gr, values, loop_w = moe_problem(c, T, seed=T)
    out = run_graph(NumpyBackend(), gr, values)["out"]
    assert nmse(out, moe_loop(values["cur"], loop_w, c)) <= FFN_NMSE


def test_dense_ffn_equals_loop():
    rng = np.random.default_rng(0)
    gr = Graph()
    cur = gr.input("cur", (48, 7))
    w = dense_ffn_weights(gr, 48, 96)
    gr.output("out", swiglu(gr, cur, w["gate"], w["up"], w["down"], "ffn-0"))
    values = {n: rng.uniform(-1, 1, t.desc.shape[2:]) / np.sqrt(t.desc.ne[0]) for n, t in gr.inputs.items()}
    out = run_graph(NumpyBackend(), gr, values)["out"]
    ref = swiglu_loop(values["cur"], values["ffn_gate"], values["ffn_up"], values["ffn_down"])
    assert nmse(out, ref) <= FFN_NMSE


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("backend_name", TESTED_BACKENDS)
def test_moe_graph_on_backend(backend_name, config):
    """Every node of the MoE graph on the backend from the reference's inputs, then the whole graph vs the loop."""
    backend = device_backend(backend_name)
    c = CONFIGS[config]
    gr, values, loop_w = moe_problem(c, 9, seed=1)
    failures = check_graph_nodes(backend, gr, values)
    assert not failures, f"{len(failures)} node(s) failed:\n" + "\n".join(failures)
    out = run_graph(backend, gr, values)["out"]
    assert nmse(out, moe_loop(values["cur"], loop_w, c)) <= FFN_NMSE
