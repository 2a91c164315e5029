"""Kimi-Linear's MLA attention (no RoPE) as graphs, in both forms (spec section 5):

  decompressed  K = [k_nope | k_pe] and V from wkv_b applied to the cached latents (the reference form)
  absorbed      q_nope folded through wk_b, attention over the 576-float latent cache directly (MQA), wv_b after

Both keep llama.cpp's cache of kv_lora_rank + rope floats per token (c_n | k_pe) per sequence and append the new
tokens with SET, so prefill and decode run the same graph. Scores are scaled by 1/sqrt(qk_nope + qk_rope).

The query is one matrix (attn_q, Kimi-Linear's) or, with q_lora > 0, DeepSeek's q-LoRA: q = q_b(rms_norm(q_a(x)) *
q_a_norm), the weights wq_a, q_a_norm and wq_b in place of wq."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .graph import Graph, GTensor

FORMS = ("decompressed", "absorbed")


@dataclass(frozen=True)
class MlaConfig:
    d_model: int
    n_head: int
    kv_lora: int = 512
    qk_nope: int = 128
    qk_rope: int = 64
    v_head: int = 128
    eps: float = 1e-5
    q_lora: int = 0

    @property
    def qk(self) -> int:
        return self.qk_nope + self.qk_rope

    @property
    def cache_width(self) -> int:
        return self.kv_lora + self.qk_rope


def check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"unknown MLA form {form!r}; known forms: {', '.join(FORMS)}")
    return form


def mla_weights(gr: Graph, c: MlaConfig) -> dict[str, GTensor]:
    """Both forms' weights: wkv_b for the decompressed form, its per-head split wk_b / wv_b for the absorbed one."""
    H = c.n_head
    if c.q_lora:
        query = {"wq_a": gr.input("attn_q_a", (c.d_model, c.q_lora)),
                 "q_a_norm": gr.input("attn_q_a_norm", (c.q_lora,)),
                 "wq_b": gr.input("attn_q_b", (c.q_lora, H * c.qk))}
    else:
        query = {"wq": gr.input("attn_q", (c.d_model, H * c.qk))}
    return {**query,
            "wkv_a": gr.input("attn_kv_a_mqa", (c.d_model, c.cache_width)),
            "kv_norm": gr.input("attn_kv_a_norm", (c.kv_lora,)),
            "wkv_b": gr.input("attn_kv_b", (c.kv_lora, H * (c.qk_nope + c.v_head))),
            "wk_b": gr.input("attn_k_b", (c.qk_nope, c.kv_lora, H)),
            "wv_b": gr.input("attn_v_b", (c.kv_lora, c.v_head, H)),
            "wo": gr.input("attn_output", (H * c.v_head, c.d_model))}


def split_kv_b(wkv_b: np.ndarray, c: MlaConfig) -> tuple[np.ndarray, np.ndarray]:
    """wk_b, wv_b (numpy shapes of their ggml tensors) from wkv_b (numpy [H*(nope+v), kv_lora]), as the converter
    splits kv_b_proj: rows of head h are [k_nope | v]."""
    per_head = wkv_b.reshape(c.n_head, c.qk_nope + c.v_head, c.kv_lora)
    return per_head[:, :c.qk_nope].transpose(0, 2, 1).copy(), per_head[:, c.qk_nope:].copy()


def mla_attention(gr: Graph, x: GTensor, cache: GTensor, mask: GTensor, pos: int, w: dict, c: MlaConfig,
                  form: str, name: str) -> GTensor:
    """x [D, T] of one sequence at positions pos..pos+T-1; cache [cache_width, n_ctx] (updated in place);
    mask [n_kv, T] (0 or -inf), n_kv >= pos+T: attention reads the first n_kv cache rows, and the mask hides the
    ones past the sequence (llama.cpp pads n_kv the same way, so decode steps share shapes). Returns [D, T]."""
    check_form(form)
    H, T = c.n_head, x.ne[1]
    n_kv = mask.ne[0]
    if not pos + T <= n_kv <= cache.ne[1]:
        raise ValueError(f"mask covers {n_kv} keys; it needs {pos + T}..{cache.ne[1]} (the cache's length)")
    f = 4  # bytes per f32
    if c.q_lora:
        q_a = gr.op("MUL_MAT", w["wq_a"], x, name=f"{name}_q_a")
        q_a = gr.op("MUL", gr.op("RMS_NORM", q_a, eps=c.eps, name=f"{name}_q_a_norm_raw"), w["q_a_norm"],
                    name=f"{name}_q_a_norm")
        q = gr.op("MUL_MAT", w["wq_b"], q_a, name=f"{name}_q")
    else:
        q = gr.op("MUL_MAT", w["wq"], x, name=f"{name}_q")
    q = gr.reshape(q, (c.qk, H, T))
    ckv = gr.op("MUL_MAT", w["wkv_a"], x, name=f"{name}_kv_a")  # [576, T]
    latent = gr.view(ckv, (c.kv_lora, T), nb=(f, ckv.desc.nb[1]))
    k_pe = gr.view(ckv, (c.qk_rope, T), nb=(f, ckv.desc.nb[1]), offset=c.kv_lora * f)
    c_n = gr.op("MUL", gr.op("RMS_NORM", latent, eps=c.eps, name=f"{name}_kv_a_norm_raw"), w["kv_norm"],
                name=f"{name}_kv_a_norm")
    entry = gr.op("CONCAT", c_n, gr.op("CONT", k_pe, name=f"{name}_k_pe"), dim=0, name=f"{name}_kv_entry")
    row = cache.desc.nb[1]
    gr.op("SET", cache, entry, nb1=row, nb2=row * T, nb3=row * T, offset=pos * row, inplace=True,
          name=f"{name}_cache_store")
    kv = gr.view(cache, (c.cache_width, n_kv), nb=(f, row))
    scale = 1.0 / math.sqrt(c.qk)

    if form == "absorbed":
        q_nope = gr.permute(gr.view(q, (c.qk_nope, H, T), nb=q.desc.nb), 0, 2, 1, 3)  # [128, T, H]
        q_pe = gr.permute(gr.view(q, (c.qk_rope, H, T), nb=q.desc.nb, offset=c.qk_nope * f), 0, 2, 1, 3)
        q_abs = gr.op("MUL_MAT", w["wk_b"], q_nope, name=f"{name}_q_absorbed")  # [512, T, H]
        q_full = gr.op("CONCAT", q_abs, gr.op("CONT", q_pe, name=f"{name}_q_pe"), dim=0, name=f"{name}_q_full")
        kq = gr.op("MUL_MAT", kv, q_full, name=f"{name}_kq")  # [n_kv, T, H]
        probs = gr.op("SOFT_MAX_EXT", kq, mask, scale=scale, name=f"{name}_kq_soft_max")
        latent_all = gr.transpose(gr.view(kv, (c.kv_lora, n_kv), nb=kv.desc.nb))  # [n_kv, 512]
        mixed = gr.op("MUL_MAT", latent_all, probs, name=f"{name}_kqv_latent")  # [512, T, H]
        out = gr.op("MUL_MAT", w["wv_b"], mixed, name=f"{name}_kqv")  # [128, T, H]
    else:
        kvd = gr.reshape(gr.op("MUL_MAT", w["wkv_b"], gr.view(kv, (c.kv_lora, n_kv), nb=kv.desc.nb),
                               name=f"{name}_kv_b"), (c.qk_nope + c.v_head, H, n_kv))
        k_nope = gr.view(kvd, (c.qk_nope, H, n_kv), nb=kvd.desc.nb)
        v = gr.view(kvd, (c.v_head, H, n_kv), nb=kvd.desc.nb, offset=c.qk_nope * f)
        pe = gr.view(kv, (c.qk_rope, 1, n_kv), nb=(f, f, row), offset=c.kv_lora * f)  # shared by every head
        pe = gr.op("REPEAT", pe, ne=(c.qk_rope, H, n_kv, 1), name=f"{name}_k_pe_heads")
        k = gr.op("CONCAT", gr.op("CONT", k_nope, name=f"{name}_k_nope"), pe, dim=0, name=f"{name}_k")
        kq = gr.op("MUL_MAT", gr.permute(k, 0, 2, 1, 3), gr.permute(q, 0, 2, 1, 3), name=f"{name}_kq")
        probs = gr.op("SOFT_MAX_EXT", kq, mask, scale=scale, name=f"{name}_kq_soft_max")
        out = gr.op("MUL_MAT", gr.permute(v, 1, 2, 0, 3), probs, name=f"{name}_kqv")  # [128, T, H]
    heads = gr.op("CONT", gr.permute(out, 0, 2, 1, 3), name=f"{name}_kqv_merged")  # [128, H, T]
    return gr.op("MUL_MAT", w["wo"], gr.reshape(heads, (c.v_head * H, T)), name=f"{name}_out")


def causal_mask(pos: int, T: int, n_kv: int | None = None) -> np.ndarray:
    """numpy [T, n_kv] (n_kv defaults to pos+T): query i (position pos+i) sees keys 0..pos+i."""
    keys = np.arange(n_kv or pos + T)[None, :]
    return np.where(keys <= pos + np.arange(T)[:, None], 0.0, -np.inf)


def build_mla_graph(c: MlaConfig, seqs: list[tuple[int, int]], n_ctx: int, form: str) -> Graph:
    """One MLA layer over several sequences, each (pos, n_tokens) with its own cache. Inputs x_s{i} [D, T],
    cache_s{i} [576, n_ctx], mask_s{i}, the weights; outputs out_s{i} [D, T] and the updated cache_s{i}."""
    gr = Graph()
    w = mla_weights(gr, c)
    for i, (pos, T) in enumerate(seqs):
        if pos + T > n_ctx:
            raise ValueError(f"sequence {i}: positions up to {pos + T} do not fit a cache of {n_ctx}")
        x = gr.input(f"x_s{i}", (c.d_model, T))
        cache = gr.input(f"cache_s{i}", (c.cache_width, n_ctx))
        mask = gr.input(f"mask_s{i}", (pos + T, T))
        gr.output(f"out_s{i}", mla_attention(gr, x, cache, mask, pos, w, c, form, f"attn_s{i}"))
        gr.output(f"cache_s{i}", cache)
    return gr


def mla_loop(x: np.ndarray, w: dict, c: MlaConfig) -> np.ndarray:
    """Spec 5.1, token by token in float64, decompressed, causal over the whole sequence x [T, D]."""
    H = c.n_head
    rms = lambda u, weight: u / np.sqrt(np.mean(u ** 2, axis=-1, keepdims=True) + c.eps) * weight
    q = rms(x @ w["attn_q_a"].T, w["attn_q_a_norm"]) @ w["attn_q_b"].T if c.q_lora else x @ w["attn_q"].T
    q = q.reshape(len(x), H, c.qk)
    ckv = x @ w["attn_kv_a_mqa"].T
    lat, k_pe = ckv[:, :c.kv_lora], ckv[:, c.kv_lora:]
    c_n = rms(lat, w["attn_kv_a_norm"])
    kv = (c_n @ w["attn_kv_b"].T).reshape(len(x), H, c.qk_nope + c.v_head)
    out = np.zeros((len(x), H * c.v_head))
    for t in range(len(x)):
        for h in range(H):
            k = np.concatenate([kv[:t + 1, h, :c.qk_nope], k_pe[:t + 1]], axis=-1)
            s = k @ q[t, h] / np.sqrt(c.qk)
            p = np.exp(s - s.max())
            p /= p.sum()
            out[t, h * c.v_head:(h + 1) * c.v_head] = p @ kv[:t + 1, h, c.qk_nope:]
    return out @ w["attn_output"].T
