"""The Kimi-Linear forward pass as one graph per ubatch (spec sections 2-6), written once and run by any backend.

A ubatch holds n sequences of T tokens each (llama.cpp's equal split for recurrent models), in consecutive sequence
slots. Per KDA layer and slot the model keeps llama.cpp's recurrent state: the conv state (the last d_conv-1 raw
q/k/v projections, [Q|K|V] with the taps of a channel contiguous) and the delta-net state [S,S,H]; per MLA layer and
slot a latent KV cache of kv_lora + qk_rope floats per position. These are graph inputs the graph updates in place,
bound to resident backend buffers by ModelSession (backends/session.py), so prefill and decode run the same graph
code.

Node names are llama.cpp's callback names with the layer suffix (attn_norm-0, kda_g1-0, kda_beta-0, kda_normed-0,
kda_out-0, mla_out-3, ffn_inp-1, ffn_norm-1, ffn_moe_out-1, ffn_out-1, l_out-1, result_norm, result_output), so a
node can be matched with llama.cpp's eval callback.

Decode (T = 1) always runs the fused recurrence, as llama.cpp does for single-token ubatches; `variant` chooses the
delta-net form of multi-token ubatches.
"""
from __future__ import annotations

import re

import numpy as np

from .config import KimiConfig, weight_shapes
from .delta_net import VARIANTS, check_variant, delta_net
from .ffn import moe_ffn, moe_loop, swiglu, swiglu_loop
from .graph import Graph, GNode, GTensor
from .mla import check_form, mla_attention, mla_loop
from .ops import get_op
from .ops.gated_delta_net import gdn_recurrence
from .tensor import DType
from .weights import kv_b_from_split, trim_ne

F32 = 4
KV_PAD = 256  # MLA reads the cache in multiples of this many positions (llama.cpp's n_kv padding)


def padded_kv(pos: int, T: int, n_ctx: int) -> int:
    """Cache rows an MLA ubatch at pos..pos+T-1 attends over (masked past pos+T-1)."""
    return min(n_ctx, -(-(pos + T) // KV_PAD) * KV_PAD)


def graph_weight_shapes(c: KimiConfig, form: str) -> dict[str, tuple[int, ...]]:
    """The weights a ubatch graph reads, as ggml ne: the GGUF tensors, except that the decompressed MLA form reads
    the merged attn_kv_b (rebuilt from attn_k_b / attn_v_b) instead of the split pair."""
    shapes = weight_shapes(c)
    if check_form(form) == "decompressed":
        for il in c.mla_layers:
            b = f"blk.{il}."
            del shapes[b + "attn_k_b.weight"], shapes[b + "attn_v_b.weight"]
            shapes[b + "attn_kv_b.weight"] = (c.kv_lora, c.n_head * (c.qk_nope + c.v_head))
    return shapes


# Where a weight may stay in its file's type: (op, source index) of the ops whose kernels read quantized or f16
# weights in place (src0 of a matrix product, the table of a row gather).
WEIGHT_READERS = {("MUL_MAT", 0), ("MUL_MAT_ID", 0), ("GET_ROWS", 0)}


def weight_consumers(gr: Graph) -> dict[str, list[tuple[GNode, int]]]:
    """Per graph input, the (node, source index) of every node that reads it (through any view of its storage)."""
    by_storage = {t.storage: name for name, t in gr.inputs.items()}
    found: dict[str, list[tuple[GNode, int]]] = {name: [] for name in gr.inputs}
    for node in gr.nodes:
        for i, s in enumerate(node.srcs):
            if s.storage in by_storage:
                found[by_storage[s.storage]].append((node, i))
    return found


def weight_types(c: KimiConfig, form: str, stored: dict | None = None) -> dict[str, DType]:
    """The type each weight of the ubatch graph is resident in, decided from the graph itself: a weight stays in its
    file's type (quantized blocks or f16, `stored`: reference.quants.StoredTensor by GGUF name, as read_gguf keeps
    them) when every node that reads it reads the whole tensor as it is (no view, reshape or permute) in a
    WEIGHT_READERS slot that accepts that type (the op's src_dtypes), in the decode graph and in the prefill graph of
    every delta-net variant. Every other weight is f32 (dequantized): norms, conv taps, biases, a weight used as
    src1 or through a view, one the file does not hold as such (attn_kv_b rebuilt from the split pair, a file
    tensor of another shape) and a type no reader takes (BF16, the IQ types). Weights without a file (random ones)
    are all f32."""
    shapes = graph_weight_shapes(c, form)
    types = {name: DType.F32 for name in shapes}
    candidates = {}
    for name, ne in shapes.items():
        st = (stored or {}).get(name)
        if st is None or st.qtype.name == "F32" or st.qtype.name not in DType.__members__:
            continue
        if trim_ne(st.ne) == trim_ne(ne):
            candidates[name] = DType[st.qtype.name]
    if not candidates:
        return types
    probes = [build_ubatch_graph(c, 1, 0, [0], 1, 1, 2, "recurrent", form)]
    probes += [build_ubatch_graph(c, 2, 0, [0], 1, 1, 2, variant, form) for variant in VARIANTS]
    for gr in probes:
        for name, readers in weight_consumers(gr).items():
            if name not in candidates:
                continue
            whole = gr.inputs[name].desc
            if not readers or not all(
                    (node.op, i) in WEIGHT_READERS and candidates[name] in get_op(node.op).src_dtypes[i]
                    and node.srcs[i].desc.ne == whole.ne and node.srcs[i].desc.nb == whole.nb
                    and node.srcs[i].desc.offset == whole.offset for node, i in readers):
                del candidates[name]
    return {**types, **candidates}


def state_shapes(c: KimiConfig, n_slots: int, n_ctx: int) -> dict[str, tuple[int, ...]]:
    """The model's persistent state by input name, as ggml ne."""
    shapes = {}
    for il in range(c.n_layer):
        if c.is_kda(il):
            shapes[f"conv_state-{il}"] = (c.conv_state_floats, n_slots)
            shapes[f"ssm_state-{il}"] = (c.head_dim, c.head_dim, c.n_head, n_slots)
        else:
            shapes[f"kv_cache-{il}"] = (c.mla.cache_width, n_ctx, n_slots)
    return shapes


CACHE_STORE = re.compile(r"mla_s(\d+)_cache_store(?:-\d+)?")  # mla_attention's cache write, named per layer


def cache_stores(gr: Graph) -> list[tuple[int, int]]:
    """(node index, sequence) of each MLA layer's cache store in a ubatch graph."""
    found = ((i, CACHE_STORE.fullmatch(node.name)) for i, node in enumerate(gr.nodes) if node.op == "SET")
    return [(i, int(m.group(1))) for i, m in found if m]


def position_patches(gr: Graph, positions: list[int], stores: list[tuple[int, int]] | None = None) \
        -> list[tuple[int, dict]]:
    """(node index, parameters) that make a ubatch graph built at other positions of the same shape (same T and
    padded_kv per sequence) the graph at `positions`: each MLA layer's cache store writes at its sequence's position.
    Everything else a position changes is an input value (the mask). `stores`: cache_stores(gr), found once."""
    return [(i, {"offset": positions[j] * gr.nodes[i].params["nb1"]})
            for i, j in (cache_stores(gr) if stores is None else stores)]


def build_ubatch_graph(c: KimiConfig, n_seq_tokens: int, first_slot: int, positions: list[int], n_outputs: int,
                       n_slots: int, n_ctx: int, variant: str = "chunk16", form: str = "absorbed",
                       types: dict[str, DType] | None = None) -> Graph:
    """One ubatch: inputs `tokens` (I32 [T*n], sequence-major), `out_ids` (I32 [n_outputs], rows of that token order
    whose logits are wanted), `kq_mask_s{j}` per sequence, the weights of graph_weight_shapes() (each of the type
    `types` gives it, f32 by default; see weight_types) and the state inputs of state_shapes(); output `logits`
    [n_vocab, n_outputs]."""
    check_variant(variant)
    check_form(form)
    T, n = n_seq_tokens, len(positions)
    if T < 1 or n < 1:
        raise ValueError(f"a ubatch needs at least one token and one sequence, got T={T}, n={n}")
    if first_slot < 0 or first_slot + n > n_slots:
        raise ValueError(f"slots {first_slot}..{first_slot + n - 1} do not exist (n_slots={n_slots})")
    for j, pos in enumerate(positions):
        if pos < 0 or pos + T > n_ctx:
            raise ValueError(f"sequence slot {first_slot + j}: positions {pos}..{pos + T - 1} do not fit n_ctx={n_ctx}")
    if not 1 <= n_outputs <= T * n:
        raise ValueError(f"n_outputs must be in 1..{T * n}, got {n_outputs}")

    gr = Graph()
    w = {name: gr.input(name, ne, (types or {}).get(name, DType.F32))
         for name, ne in graph_weight_shapes(c, form).items()}
    states = {name: gr.input(name, ne) for name, ne in state_shapes(c, n_slots, n_ctx).items()}
    tokens = gr.input("tokens", (T * n,), DType.I32)
    out_ids = gr.input("out_ids", (n_outputs,), DType.I32)
    masks = [gr.input(f"kq_mask_s{j}", (padded_kv(pos, T, n_ctx), T)) for j, pos in enumerate(positions)] \
        if c.mla_layers else []

    h = gr.op("GET_ROWS", w["token_embd.weight"], tokens, name="inp_embd")  # [D, N]
    for il in range(c.n_layer):
        first_node = len(gr.nodes)
        b = f"blk.{il}."
        inp_sa = h
        cur = _rms_norm(gr, h, w[b + "attn_norm.weight"], c.eps, "attn_norm")
        if c.is_kda(il):
            cur = _kda_layer(gr, c, cur, w, b, states, il, T, n, first_slot, variant)
        else:
            cur = _mla_layer(gr, c, cur, w, b, states[f"kv_cache-{il}"], masks, positions, first_slot, n_ctx, form, T)
        if il == c.n_layer - 1:  # only the requested rows go on, as llama.cpp's inp_out_ids
            cur = gr.op("GET_ROWS", cur, out_ids, name="attn_out_rows")
            inp_sa = gr.op("GET_ROWS", inp_sa, out_ids, name="inp_sa_rows")
        ffn_inp = gr.op("ADD", cur, inp_sa, name="ffn_inp")
        cur = _rms_norm(gr, ffn_inp, w[b + "ffn_norm.weight"], c.eps, "ffn_norm")
        if c.is_dense(il):
            cur = swiglu(gr, cur, w[b + "ffn_gate.weight"], w[b + "ffn_up.weight"], w[b + "ffn_down.weight"], "ffn")
            gr.nodes[-1].name = "ffn_out"
        else:
            cur = _moe(gr, c, cur, w, b, il)
        h = gr.op("ADD", cur, ffn_inp, name="l_out")
        _suffix_layer(gr, first_node, il)
    h = _rms_norm(gr, h, w["output_norm.weight"], c.eps, "result_norm")
    gr.output("logits", gr.op("MUL_MAT", w["output.weight"], h, name="result_output"))
    return gr


def _rms_norm(gr: Graph, x: GTensor, weight: GTensor, eps: float, name: str) -> GTensor:
    return gr.op("MUL", gr.op("RMS_NORM", x, eps=eps, name=f"{name}_raw"), weight, name=name)


def _suffix_layer(gr: Graph, first_node: int, il: int) -> None:
    """llama.cpp's callback names carry the layer: attn_norm -> attn_norm-3 (names that already end in -<il> stay)."""
    for node in gr.nodes[first_node:]:
        if not re.search(rf"-{il}$", node.name):
            node.name = f"{node.name}-{il}"


def _kda_layer(gr, c: KimiConfig, x, w, b, states, il, T, n, first_slot, variant) -> GTensor:
    S, H, Di, dc = c.head_dim, c.n_head, c.d_inner, c.d_conv
    N = T * n
    conv_all = states[f"conv_state-{il}"]
    per_slot = c.conv_state_floats * F32

    def short_conv(part: int, proj_name: str, conv_name: str, label: str) -> GTensor:
        proj = gr.reshape(gr.op("MUL_MAT", w[b + proj_name], x, name=f"kda_{label}_proj"), (Di, T, n))
        state = gr.view(conv_all, (dc - 1, Di, n), nb=(F32, F32 * (dc - 1), per_slot),
                        offset=first_slot * per_slot + part * (dc - 1) * Di * F32)
        conv_x = gr.op("CONCAT", state, gr.transpose(proj), dim=0, name=f"kda_{label}_conv_x")  # [dc-1+T, Di, n]
        last = gr.view(conv_x, (dc - 1, Di, n), nb=conv_x.desc.nb, offset=T * F32)
        gr.op("SET", conv_all, last, nb1=F32 * (dc - 1), nb2=per_slot, nb3=per_slot * n,
              offset=first_slot * per_slot + part * (dc - 1) * Di * F32, inplace=True, name=f"kda_{label}_conv_save")
        conv = gr.op("SSM_CONV", conv_x, gr.reshape(w[b + conv_name], (dc, Di)), name=f"kda_{label}_conv")
        return gr.reshape(gr.op("SILU", conv, name=f"kda_{label}_conv_silu"), (S, H, T, n))

    q = gr.op("L2_NORM", short_conv(0, "attn_q.weight", "ssm_conv1d_q.weight", "q"), eps=c.eps, name="kda_q_l2")
    k = gr.op("L2_NORM", short_conv(1, "attn_k.weight", "ssm_conv1d_k.weight", "k"), eps=c.eps, name="kda_k_l2")
    v = short_conv(2, "attn_v.weight", "ssm_conv1d_v.weight", "v")

    f = gr.op("MUL_MAT", w[b + "ssm_f_b.weight"], gr.op("MUL_MAT", w[b + "ssm_f_a.weight"], x, name="kda_f_a"),
              name="kda_f_b")
    f = gr.op("SOFTPLUS", gr.op("ADD", f, w[b + "ssm_dt.bias"], name="kda_f_dt"), name="kda_f_softplus")
    g = gr.op("MUL", gr.reshape(f, (S, H, N)), gr.reshape(w[b + "ssm_a"], (1, H, 1)), name="kda_g1")
    beta = gr.reshape(gr.op("MUL_MAT", w[b + "ssm_beta.weight"], x, name="kda_beta"), (1, H, T, n))
    beta = gr.op("SIGMOID", beta, name="kda_beta_sigmoid")

    ssm_all = states[f"ssm_state-{il}"]
    slot_bytes = S * S * H * F32
    state = gr.view(ssm_all, (S, S, H, n), offset=first_slot * slot_bytes)
    o, new_state = delta_net(gr, q, k, v, gr.reshape(g, (S, H, T, n)), beta, state,
                             "recurrent" if T == 1 else variant)
    gr.op("SET", ssm_all, new_state, nb1=S * F32, nb2=S * S * F32, nb3=slot_bytes, offset=first_slot * slot_bytes,
          inplace=True, name="kda_state_save")
    producer = gr.nodes[o.storage.producer] if o.storage.producer is not None else None
    if producer is not None and producer.op == "CONT" and producer.dst.desc is o.desc:
        producer.name = "attn_output"  # the chunked forms end in a CONT already
    else:
        o = gr.op("CONT", o, name="attn_output")  # as llama.cpp copies the fused op's output out

    gate = gr.op("MUL_MAT", w[b + "ssm_g_b.weight"], gr.op("MUL_MAT", w[b + "ssm_g_a.weight"], x, name="kda_g_a"),
                 name="kda_g2")
    normed = _rms_norm(gr, gr.reshape(o, (S, H, N)), w[b + "ssm_norm.weight"], c.eps, "kda_normed")
    gated = gr.op("MUL", normed, gr.op("SIGMOID", gr.reshape(gate, (S, H, N)), name="kda_gate"), name="kda_gated")
    return gr.op("MUL_MAT", w[b + "attn_output.weight"], gr.reshape(gated, (Di, N)), name="kda_out")


def _mla_layer(gr, c: KimiConfig, x, w, b, cache_all, masks, positions, first_slot, n_ctx, form, T) -> GTensor:
    m = c.mla
    names = {"wq": "attn_q", "wq_a": "attn_q_a", "q_a_norm": "attn_q_a_norm", "wq_b": "attn_q_b",
             "wkv_a": "attn_kv_a_mqa", "kv_norm": "attn_kv_a_norm", "wk_b": "attn_k_b",
             "wv_b": "attn_v_b", "wkv_b": "attn_kv_b", "wo": "attn_output"}  # the form's weights are present
    mw = {key: w[b + name + ".weight"] for key, name in names.items() if b + name + ".weight" in w}
    D = c.d_model
    slot_bytes = m.cache_width * n_ctx * F32
    outs = []
    for j, pos in enumerate(positions):
        xj = gr.view(x, (D, T), nb=(F32, x.desc.nb[1]), offset=j * T * x.desc.nb[1])
        cache = gr.view(cache_all, (m.cache_width, n_ctx), nb=(F32, cache_all.desc.nb[1]),
                        offset=(first_slot + j) * slot_bytes)
        outs.append(mla_attention(gr, xj, cache, masks[j], pos, mw, m, form, f"mla_s{j}"))
    out = outs[0]
    for j, o in enumerate(outs[1:], start=1):
        out = gr.op("CONCAT", out, o, dim=1, name=f"mla_out_s{j}")
    gr.nodes[-1].name = "mla_out"
    return out


def _moe(gr, c: KimiConfig, x, w, b, il) -> GTensor:
    mw = {"gate_inp": w[b + "ffn_gate_inp.weight"], "probs_b": w[b + "exp_probs_b.bias"],
          "gate_exps": w[b + "ffn_gate_exps.weight"], "up_exps": w[b + "ffn_up_exps.weight"],
          "down_exps": w[b + "ffn_down_exps.weight"]}
    if c.n_shared:
        mw.update({"gate_shexp": w[b + "ffn_gate_shexp.weight"], "up_shexp": w[b + "ffn_up_shexp.weight"],
                   "down_shexp": w[b + "ffn_down_shexp.weight"]})
    return moe_ffn(gr, x, mw, c.moe, il)


# ---- the plain float64 loop the graph is tested against (spec sections 2-6, one sequence at a time) ------------
def model_loop(c: KimiConfig, weights: dict[str, np.ndarray], tokens) -> np.ndarray:
    """Logits [T, n_vocab] of every position of one sequence from an empty state, in float64, layer by layer over
    the whole sequence, with the KDA recurrence token by token. Shares no graph code with build_ubatch_graph."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    rms = lambda x, wt: x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + c.eps) * wt
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))
    h = w["token_embd.weight"][np.asarray(tokens)]  # [T, D]
    T, S, H = len(h), c.head_dim, c.n_head
    for il in range(c.n_layer):
        b = f"blk.{il}."
        x = rms(h, w[b + "attn_norm.weight"])
        if c.is_kda(il):
            def conv_silu(name):
                proj = x @ w[b + f"attn_{name}.weight"].T  # [T, Di]
                taps = w[b + f"ssm_conv1d_{name}.weight"].reshape(c.d_inner, c.d_conv)  # [Di, d_conv]
                padded = np.concatenate([np.zeros((c.d_conv - 1, c.d_inner)), proj])
                y = sum(padded[i:i + T] * taps[:, i] for i in range(c.d_conv))
                return (y * sigmoid(y)).reshape(T, H, S)

            def l2(u):
                return u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), c.eps)

            q, k, v = l2(conv_silu("q")), l2(conv_silu("k")), conv_silu("v")
            f = (x @ w[b + "ssm_f_a.weight"].T) @ w[b + "ssm_f_b.weight"].T + w[b + "ssm_dt.bias"]
            softplus = np.where(f > 20, f, np.log1p(np.exp(np.minimum(f, 20))))
            g = (softplus.reshape(T, H, S) * w[b + "ssm_a"].reshape(H, 1))
            beta = sigmoid(x @ w[b + "ssm_beta.weight"].T).reshape(T, H, 1)
            o, _ = gdn_recurrence(q[None], k[None], v[None], g[None], beta[None], np.zeros((1, H, S, S)))
            z = ((x @ w[b + "ssm_g_a.weight"].T) @ w[b + "ssm_g_b.weight"].T).reshape(T, H, S)
            attn = (rms(o[0], w[b + "ssm_norm.weight"]) * sigmoid(z)).reshape(T, c.d_inner)
            h = h + attn @ w[b + "attn_output.weight"].T
        else:
            query = ("attn_q_a", "attn_q_a_norm", "attn_q_b") if c.q_lora else ("attn_q",)
            mw = {name: w[b + name + ".weight"] for name in (*query, "attn_kv_a_mqa", "attn_kv_a_norm", "attn_output")}
            mw["attn_kv_b"] = kv_b_from_split(w[b + "attn_k_b.weight"], w[b + "attn_v_b.weight"])
            h = h + mla_loop(x, mw, c.mla)
        y = rms(h, w[b + "ffn_norm.weight"])
        if c.is_dense(il):
            h = h + swiglu_loop(y, w[b + "ffn_gate.weight"], w[b + "ffn_up.weight"], w[b + "ffn_down.weight"])
        else:
            mw = {"gate_inp": w[b + "ffn_gate_inp.weight"], "probs_b": w[b + "exp_probs_b.bias"]}
            mw.update({f"{part}_exps": w[b + f"ffn_{part}_exps.weight"] for part in ("gate", "up", "down")})
            if c.n_shared:
                mw.update({f"{part}_shexp": w[b + f"ffn_{part}_shexp.weight"] for part in ("gate", "up", "down")})
            h = h + moe_loop(y, mw, c.moe)
    return rms(h, w["output_norm.weight"]) @ w["output.weight"].T
