"""Kimi-Linear model configurations (spec section 1): the presets, overrides, and the per-layer pattern.

Layer kinds follow the real model's rule with 0-based indices: a layer is MLA when (il + 1) % 4 == 0 or it is the
last layer, else KDA. For 27 layers this gives exactly the checkpoint's MLA layers {3,7,11,15,19,23,26}.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .ffn import MoeConfig
from .mla import MlaConfig


@dataclass(frozen=True)
class KimiConfig:
    name: str
    n_vocab: int
    d_model: int
    n_layer: int
    n_head: int  # KDA heads = MLA heads
    head_dim: int  # KDA head size (key = value)
    d_conv: int
    kv_lora: int
    qk_nope: int
    qk_rope: int
    v_head: int
    n_expert: int
    n_expert_used: int
    d_expert: int  # moe_intermediate_size
    n_shared: int  # shared experts, each d_expert wide
    d_ff: int  # dense FFN of the leading layers
    n_dense_lead: int = 1
    expert_scale: float = 2.446
    eps: float = 1e-5
    n_ctx_train: int = 1_048_576
    q_lora: int = 0  # q-LoRA rank of the MLA layers (q = q_b(rms_norm(q_a(x)))); 0: one attn_q matrix, as Kimi-Linear

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (not isinstance(v, int) or v < 0):
                raise ValueError(f"config {self.name!r}: {f.name} must be a non-negative int, got {v!r}")
        if self.n_layer < 1 or self.n_head < 1 or self.head_dim < 1 or self.d_model < 1 or self.n_vocab < 1:
            raise ValueError(f"config {self.name!r}: n_layer, n_head, head_dim, d_model and n_vocab must be >= 1")
        if not 1 <= self.n_expert_used <= self.n_expert:
            raise ValueError(f"config {self.name!r}: n_expert_used={self.n_expert_used} must be in 1..n_expert="
                             f"{self.n_expert}")
        if self.d_conv < 2:
            raise ValueError(f"config {self.name!r}: d_conv must be >= 2, got {self.d_conv}")

    @property
    def d_inner(self) -> int:
        return self.n_head * self.head_dim

    def is_kda(self, il: int) -> bool:
        return not ((il + 1) % 4 == 0 or il == self.n_layer - 1)

    @property
    def kda_layers(self) -> list[int]:
        return [il for il in range(self.n_layer) if self.is_kda(il)]

    @property
    def mla_layers(self) -> list[int]:
        return [il for il in range(self.n_layer) if not self.is_kda(il)]

    def is_dense(self, il: int) -> bool:
        return il < self.n_dense_lead

    @property
    def mla(self) -> MlaConfig:
        return MlaConfig(self.d_model, self.n_head, self.kv_lora, self.qk_nope, self.qk_rope, self.v_head, self.eps,
                         self.q_lora)

    @property
    def moe(self) -> MoeConfig:
        return MoeConfig(self.d_model, self.n_expert, self.n_expert_used, self.d_expert,
                         self.d_expert * self.n_shared, self.expert_scale)

    @property
    def conv_state_floats(self) -> int:
        """Per KDA layer and sequence: (d_conv-1) taps of q, k and v (llama.cpp n_embd_r)."""
        return 3 * (self.d_conv - 1) * self.d_inner

    def with_overrides(self, n_layer: int | None = None, n_expert: int | None = None) -> KimiConfig:
        """The same widths with fewer layers or experts, so real-width layers fit a given machine."""
        changes = {}
        if n_layer is not None:
            changes["n_layer"] = n_layer
            changes["n_dense_lead"] = min(self.n_dense_lead, n_layer)
        if n_expert is not None:
            changes["n_expert"] = n_expert
            changes["n_expert_used"] = min(self.n_expert_used, n_expert)
        if not changes:
            return self
        suffix = ",".join(f"{k}={v}" for k, v in (("n_layer", n_layer), ("n_expert", n_expert)) if v is not None)
        return dataclasses.replace(self, name=f"{self.name}[{suffix}]", **changes)


PRESETS = {
    # CI: 3 KDA layers (the first with the dense FFN) and 1 MLA layer, MoE in layers 1-3, small widths.
    "tiny": KimiConfig("tiny", n_vocab=256, d_model=64, n_layer=4, n_head=4, head_dim=16, d_conv=4, kv_lora=32,
                       qk_nope=16, qk_rope=8, v_head=16, n_expert=4, n_expert_used=2, d_expert=32, n_shared=1,
                       d_ff=128),
    # The smallest model llama.cpp quantizes to K-quants as users get them: rows of 256 (d_model, d_inner, kv_lora,
    # d_expert), so Q4_K/Q2_K reach every large matrix; the head-sized matrices (ssm_f_b, ssm_g_b, attn_k_b) fall back
    # to llama.cpp's legacy types as they do in the real model.
    "tiny-256": KimiConfig("tiny-256", n_vocab=256, d_model=256, n_layer=4, n_head=4, head_dim=64, d_conv=4,
                           kv_lora=256, qk_nope=64, qk_rope=32, v_head=64, n_expert=4, n_expert_used=4, d_expert=256,
                           n_shared=1, d_ff=512),
    "small": KimiConfig("small", n_vocab=4096, d_model=512, n_layer=8, n_head=8, head_dim=64, d_conv=4, kv_lora=128,
                        qk_nope=64, qk_rope=32, v_head=64, n_expert=16, n_expert_used=4, d_expert=256, n_shared=1,
                        d_ff=1536),
    "kimi-linear-48b-a3b": KimiConfig("kimi-linear-48b-a3b", n_vocab=163840, d_model=2304, n_layer=27, n_head=32,
                                      head_dim=128, d_conv=4, kv_lora=512, qk_nope=128, qk_rope=64, v_head=128,
                                      n_expert=256, n_expert_used=8, d_expert=1024, n_shared=1, d_ff=9216),
}


def get_config(name: str, n_layer: int | None = None, n_expert: int | None = None) -> KimiConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)} (or a .gguf path)")
    return PRESETS[name].with_overrides(n_layer, n_expert)


def weight_shapes(c: KimiConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the model by its llama.cpp GGUF name, as ggml ne (fastest dim first). The one list that random
    initialisation, GGUF validation and the model graph's inputs all use."""
    D, V, Di, S, H = c.d_model, c.n_vocab, c.d_inner, c.head_dim, c.n_head
    shapes = {"token_embd.weight": (D, V), "output_norm.weight": (D,), "output.weight": (D, V)}
    for il in range(c.n_layer):
        b = f"blk.{il}."
        shapes[b + "attn_norm.weight"] = (D,)
        if c.is_kda(il):
            for x in "qkv":
                shapes[b + f"attn_{x}.weight"] = (D, Di)
                shapes[b + f"ssm_conv1d_{x}.weight"] = (c.d_conv, 1, Di, 1)
            shapes.update({b + "ssm_f_a.weight": (D, S), b + "ssm_f_b.weight": (S, Di), b + "ssm_beta.weight": (D, H),
                           b + "ssm_a": (1, H), b + "ssm_dt.bias": (Di,), b + "ssm_g_a.weight": (D, S),
                           b + "ssm_g_b.weight": (S, Di), b + "ssm_norm.weight": (S,),
                           b + "attn_output.weight": (Di, D)})
        else:
            if c.q_lora:
                shapes.update({b + "attn_q_a.weight": (D, c.q_lora), b + "attn_q_a_norm.weight": (c.q_lora,),
                               b + "attn_q_b.weight": (c.q_lora, H * (c.qk_nope + c.qk_rope))})
            else:
                shapes[b + "attn_q.weight"] = (D, H * (c.qk_nope + c.qk_rope))
            shapes.update({b + "attn_kv_a_mqa.weight": (D, c.kv_lora + c.qk_rope),
                           b + "attn_kv_a_norm.weight": (c.kv_lora,),
                           b + "attn_k_b.weight": (c.qk_nope, c.kv_lora, H),
                           b + "attn_v_b.weight": (c.kv_lora, c.v_head, H),
                           b + "attn_output.weight": (H * c.v_head, D)})
        shapes[b + "ffn_norm.weight"] = (D,)
        if c.is_dense(il):
            shapes.update({b + "ffn_gate.weight": (D, c.d_ff), b + "ffn_up.weight": (D, c.d_ff),
                           b + "ffn_down.weight": (c.d_ff, D)})
        else:
            E, F = c.n_expert, c.d_expert
            shapes.update({b + "ffn_gate_inp.weight": (D, E), b + "exp_probs_b.bias": (E,),
                           b + "ffn_gate_exps.weight": (D, F, E), b + "ffn_up_exps.weight": (D, F, E),
                           b + "ffn_down_exps.weight": (F, D, E)})
            if c.n_shared:
                Fs = F * c.n_shared
                shapes.update({b + "ffn_gate_shexp.weight": (D, Fs), b + "ffn_up_shexp.weight": (D, Fs),
                               b + "ffn_down_shexp.weight": (Fs, D)})
    return shapes
