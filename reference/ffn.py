"""Kimi-Linear's feed-forward blocks as graphs: the dense SwiGLU FFN (layer 0) and the MoE FFN (sigmoid router,
selection by score + correction bias, weights from the unbiased scores renormalised and scaled, SwiGLU experts
through MUL_MAT_ID, plus the shared expert), as llama.cpp's build_moe_ffn builds them. Node names follow
llama.cpp's callbacks (ffn_moe_logits, ffn_moe_probs, ffn_moe_topk, ffn_moe_weights, ...)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph, GTensor

WEIGHT_SUM_MIN = 6.103515625e-5  # llama.cpp clamps the renormalising sum to at least this (2^-14)
F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class MoeConfig:
    d_model: int
    n_expert: int
    n_used: int
    d_expert: int  # expert intermediate size
    d_shared: int  # shared expert intermediate size (0: none)
    scale: float = 2.446  # routed_scaling_factor


def swiglu(gr: Graph, x: GTensor, w_gate: GTensor, w_up: GTensor, w_down: GTensor, name: str) -> GTensor:
    """down(SiLU(gate x) * up x) for x [D, T] and weights [D, F], [D, F], [F, D] (ggml layout)."""
    gate = gr.op("SILU", gr.op("MUL_MAT", w_gate, x, name=f"{name}_gate"), name=f"{name}_gate_silu")
    up = gr.op("MUL_MAT", w_up, x, name=f"{name}_up")
    return gr.op("MUL_MAT", w_down, gr.op("MUL", gate, up, name=f"{name}_gate_par"), name=f"{name}_down")


def dense_ffn_weights(gr: Graph, d_model: int, d_ff: int, prefix: str = "ffn") -> dict[str, GTensor]:
    return {"gate": gr.input(f"{prefix}_gate", (d_model, d_ff)), "up": gr.input(f"{prefix}_up", (d_model, d_ff)),
            "down": gr.input(f"{prefix}_down", (d_ff, d_model))}


def moe_weights(gr: Graph, c: MoeConfig, prefix: str = "ffn") -> dict[str, GTensor]:
    w = {"gate_inp": gr.input(f"{prefix}_gate_inp", (c.d_model, c.n_expert)),
         "probs_b": gr.input(f"{prefix}_exp_probs_b", (c.n_expert,)),
         "gate_exps": gr.input(f"{prefix}_gate_exps", (c.d_model, c.d_expert, c.n_expert)),
         "up_exps": gr.input(f"{prefix}_up_exps", (c.d_model, c.d_expert, c.n_expert)),
         "down_exps": gr.input(f"{prefix}_down_exps", (c.d_expert, c.d_model, c.n_expert))}
    if c.d_shared:
        w.update({k + "_shexp": v for k, v in dense_ffn_weights(gr, c.d_model, c.d_shared, f"{prefix}_shexp").items()})
    return w


def moe_ffn(gr: Graph, cur: GTensor, w: dict[str, GTensor], c: MoeConfig, il: int = 0) -> GTensor:
    """cur [D, T] -> [D, T]."""
    D, T = cur.ne[0], cur.ne[1]
    k = c.n_used
    logits = gr.op("MUL_MAT", w["gate_inp"], cur, name=f"ffn_moe_logits-{il}")  # [n_exp, T]
    probs = gr.op("SIGMOID", logits, name=f"ffn_moe_probs-{il}")
    biased = gr.op("ADD", probs, w["probs_b"], name=f"ffn_moe_probs_biased-{il}")  # selection only
    ids = gr.op("TOP_K", biased, k=k, name=f"ffn_moe_topk-{il}")  # [k, T] i32
    weights = gr.op("GET_ROWS", gr.reshape(probs, (1, c.n_expert, T)), ids, name=f"ffn_moe_weights-{il}")
    weights = gr.reshape(weights, (k, T))
    total = gr.op("CLAMP", gr.op("SUM_ROWS", weights, name=f"ffn_moe_weights_sum-{il}"), min=WEIGHT_SUM_MIN,
                  max=F32_MAX, name=f"ffn_moe_weights_sum_clamped-{il}")
    weights = gr.op("DIV", weights, total, name=f"ffn_moe_weights_norm-{il}")
    weights = gr.op("SCALE", weights, s=c.scale, name=f"ffn_moe_weights_scaled-{il}")

    x = gr.reshape(cur, (D, 1, T))
    up = gr.op("MUL_MAT_ID", w["up_exps"], x, ids, name=f"ffn_moe_up-{il}")  # [F, k, T]
    gate = gr.op("SILU", gr.op("MUL_MAT_ID", w["gate_exps"], x, ids, name=f"ffn_moe_gate-{il}"),
                 name=f"ffn_moe_silu-{il}")
    par = gr.op("MUL", gate, up, name=f"ffn_moe_gate_par-{il}")
    experts = gr.op("MUL_MAT_ID", w["down_exps"], par, ids, name=f"ffn_moe_down-{il}")  # [D, k, T]
    experts = gr.op("MUL", experts, gr.reshape(weights, (1, k, T)), name=f"ffn_moe_weighted-{il}")
    rows = lambda e: gr.view(experts, (D, T), nb=(4, experts.desc.nb[2]), offset=e * experts.desc.nb[1])
    out = rows(0)
    for e in range(1, k):
        out = gr.op("ADD", out, rows(e), name=f"ffn_moe_out_add{e}-{il}")
    if k == 1:
        out = gr.op("CONT", out, name=f"ffn_moe_out-{il}")
    gr.nodes[-1].name = f"ffn_moe_out-{il}"  # the routed experts' sum, as llama.cpp names it
    if c.d_shared:
        shared = swiglu(gr, cur, w["gate_shexp"], w["up_shexp"], w["down_shexp"], f"ffn_shexp-{il}")
        gr.nodes[-1].name = f"ffn_shexp-{il}"
        out = gr.op("ADD", out, shared, name=f"ffn_out-{il}")
    return out


# ---- the plain per-token loops the graphs are tested against -------------------------------------------------
def _silu(x):
    return x / (1.0 + np.exp(-x))


def swiglu_loop(y, gate, up, down):
    """y numpy [T, D]; weights numpy in ggml layout reversed: gate/up (F, D), down (D, F)."""
    return np.stack([down @ (_silu(gate @ t) * (up @ t)) for t in y])


def moe_loop(y, w: dict, c: MoeConfig):
    """Spec section 6 per token, float64. y numpy [T, D]; w numpy arrays as the graph inputs hold them."""
    out = []
    for t in y:
        s = 1.0 / (1.0 + np.exp(-(w["gate_inp"] @ t)))
        chosen = np.argsort(-(s + w["probs_b"]), kind="stable")[:c.n_used]
        weights = s[chosen] / max(s[chosen].sum(), WEIGHT_SUM_MIN) * c.scale
        acc = sum(wt * (w["down_exps"][e] @ (_silu(w["gate_exps"][e] @ t) * (w["up_exps"][e] @ t)))
                  for wt, e in zip(weights, chosen))
        if c.d_shared:
            acc = acc + w["down_shexp"] @ (_silu(w["gate_shexp"] @ t) * (w["up_shexp"] @ t))
        out.append(acc)
    return np.stack(out)
