"""MLA without RoPE: the absorbed and decompressed forms agree with each other and with a per-token NumPy loop;
prefill then decode equals one long prefill; sequences sharing a graph do not leak into each other."""
import numpy as np
import pytest

from backends import TESTED_BACKENDS
from backends.numpy_backend import NumpyBackend
from conftest import device_backend
from reference.plan import run_graph
from reference.mla import FORMS, MlaConfig, build_mla_graph, causal_mask, check_form, mla_loop, split_kv_b

from .harness import check_graph_nodes

SMALL = MlaConfig(d_model=48, n_head=4, kv_lora=32, qk_nope=16, qk_rope=8, v_head=16)
# float32 nodes, MUL_MAT-class products: upstream's MUL_MAT bound; algebra slips are O(1).
MLA_NMSE = 5e-4


def nmse(got, ref):
    return float(np.sum((got - ref) ** 2) / np.sum(ref ** 2))


def weights(c: MlaConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    w = {"attn_q": rng.normal(size=(c.n_head * c.qk, c.d_model)) / np.sqrt(c.d_model),
         "attn_kv_a_mqa": rng.normal(size=(c.cache_width, c.d_model)) / np.sqrt(c.d_model),
         "attn_kv_a_norm": rng.uniform(0.5, 1.5, c.kv_lora),
         "attn_kv_b": rng.normal(size=(c.n_head * (c.qk_nope + c.v_head), c.kv_lora)) / np.sqrt(c.kv_lora),
         "attn_output": rng.normal(size=(c.d_model, c.n_head * c.v_head)) / np.sqrt(c.n_head * c.v_head)}
    w["attn_k_b"], w["attn_v_b"] = split_kv_b(w["attn_kv_b"], c)
    return w


def run(form, c, w, seqs, xs, caches, n_ctx, backend=None):
    """Run one call over several sequences; returns outputs [T, D] and updated caches."""
    gr = build_mla_graph(c, seqs, n_ctx, form)
    values = dict(w)
    for i, ((pos, T), x, cache) in enumerate(zip(seqs, xs, caches)):
        values |= {f"x_s{i}": x, f"cache_s{i}": cache, f"mask_s{i}": causal_mask(pos, T)}
    out = run_graph(backend or NumpyBackend(), gr, values)
    return [out[f"out_s{i}"].reshape(T, c.d_model) for i, (_, T) in enumerate(seqs)], \
        [out[f"cache_s{i}"].reshape(n_ctx, c.cache_width) for i in range(len(seqs))]


@pytest.mark.parametrize("form", FORMS)
def test_prefill_matches_loop(form):
    c, n_ctx = SMALL, 16
    x = np.random.default_rng(1).normal(size=(11, c.d_model))
    w = weights(c)
    (out,), _ = run(form, c, w, [(0, 11)], [x], [np.zeros((n_ctx, c.cache_width))], n_ctx)
    assert nmse(out, mla_loop(x, w, c)) <= MLA_NMSE


def test_forms_agree():
    c, n_ctx = SMALL, 12
    x = np.random.default_rng(2).normal(size=(9, c.d_model))
    w = weights(c, 3)
    outs = {f: run(f, c, w, [(0, 9)], [x], [np.zeros((n_ctx, c.cache_width))], n_ctx)[0][0] for f in FORMS}
    assert nmse(outs["absorbed"], outs["decompressed"]) <= 1e-9  # same algebra, only float32 rounding apart


@pytest.mark.parametrize("form", FORMS)
def test_prefill_then_decode_equals_one_prefill(form):
    c, n_ctx, T1, steps = SMALL, 16, 6, 4
    x = np.random.default_rng(4).normal(size=(T1 + steps, c.d_model))
    w = weights(c, 5)
    (whole,), _ = run(form, c, w, [(0, T1 + steps)], [x], [np.zeros((n_ctx, c.cache_width))], n_ctx)
    (first,), (cache,) = run(form, c, w, [(0, T1)], [x[:T1]], [np.zeros((n_ctx, c.cache_width))], n_ctx)
    pieces = [first]
    for t in range(T1, T1 + steps):
        (step,), (cache,) = run(form, c, w, [(t, 1)], [x[t:t + 1]], [cache], n_ctx)
        pieces.append(step)
    assert nmse(np.concatenate(pieces), whole) <= 1e-9


def test_sequences_do_not_leak():
    c, n_ctx = SMALL, 10
    rng = np.random.default_rng(6)
    xa, xb = rng.normal(size=(5, c.d_model)), rng.normal(size=(3, c.d_model))
    w = weights(c, 7)
    cache_b = np.zeros((n_ctx, c.cache_width))
    cache_b[:4] = rng.normal(size=(4, c.cache_width))  # sequence b already holds 4 tokens
    both, _ = run("absorbed", c, w, [(0, 5), (4, 3)], [xa, xb], [np.zeros((n_ctx, c.cache_width)), cache_b], n_ctx)
    alone_a, _ = run("absorbed", c, w, [(0, 5)], [xa], [np.zeros((n_ctx, c.cache_width))], n_ctx)
    alone_b, _ = run("absorbed", c, w, [(4, 3)], [xb], [cache_b], n_ctx)
    assert np.array_equal(both[0], alone_a[0]) and np.array_equal(both[1], alone_b[0])


def test_bad_input_refused():
    with pytest.raises(ValueError, match="known forms: decompressed, absorbed"):
        check_form("latent")
    with pytest.raises(ValueError, match="do not fit a cache of 8"):
        build_mla_graph(SMALL, [(6, 3)], 8, "absorbed")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("backend_name", TESTED_BACKENDS)
def test_mla_graph_on_backend(backend_name, form):
    """Every node of a two-sequence decode-after-prefill call on the backend, then the whole call vs the reference."""
    backend = device_backend(backend_name)
    c, n_ctx = SMALL, 12
    rng = np.random.default_rng(8)
    w = weights(c, 9)
    seqs = [(0, 5), (6, 1)]
    xs = [rng.normal(size=(5, c.d_model)), rng.normal(size=(1, c.d_model))]
    caches = [np.zeros((n_ctx, c.cache_width)), np.zeros((n_ctx, c.cache_width))]
    caches[1][:6] = rng.normal(size=(6, c.cache_width))
    gr = build_mla_graph(c, seqs, n_ctx, form)
    values = dict(w) | {f"x_s{i}": x for i, x in enumerate(xs)} | {f"cache_s{i}": k for i, k in enumerate(caches)} \
        | {f"mask_s{i}": causal_mask(p, T) for i, (p, T) in enumerate(seqs)}
    failures = check_graph_nodes(backend, gr, values)
    assert not failures, f"{len(failures)} node(s) failed:\n" + "\n".join(failures)
    got, _ = run(form, c, w, seqs, xs, caches, n_ctx, backend)
    ref, _ = run(form, c, w, seqs, xs, caches, n_ctx)
    assert all(nmse(g, r) <= MLA_NMSE for g, r in zip(got, ref))
