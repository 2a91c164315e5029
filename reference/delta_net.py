"""The gated delta net as graphs of ggml ops, in the variants llama.cpp weighs speed against compute buffer with.

  recurrent  the fused GATED_DELTA_NET op
  chunk64    chunks of 64 tokens, the KDA decay as a masked pairwise [S,64,64] tensor per chunk
  chunk16    the same with chunks of 16 (4x less decay memory, 4x more sequential chunk steps)
  block16    chunks of 64 whose Akk/Aqk are assembled from 4x4 blocks of 16x16: diagonal blocks use the pairwise
             decay, off-diagonal blocks factor it through the anchor row n_I of their row block, so both factors
             exp(G_I - G_nI) and exp(G_nI - G_J) have arguments <= 0

Every variant keeps every exponent <= 0: the upper triangle of a pairwise difference is zeroed by a mask BEFORE exp
(exp(0) = 1 is then masked again), and the per-chunk decays are formed as exp(G_last - G_i), never exp(G_i)exp(-G_j).
Inputs are in ggml layout: q, k [S,H_k,T,n], v [S,H,T,n], g [1|S,H,T,n], beta [1,H,T,n], state [S,S,H,n].
"""
from __future__ import annotations

import math

from .graph import Graph, GTensor

VARIANTS = {"recurrent": None, "chunk64": (64, None), "chunk16": (16, None), "block16": (64, 16)}


def check_variant(name: str) -> str:
    if name not in VARIANTS:
        raise ValueError(f"unknown delta-net variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return name


def build_gdn_graph(S: int, H: int, T: int, n_seqs: int = 1, h_k: int | None = None, kda: bool = True,
                    variant: str = "chunk64") -> Graph:
    """A graph with inputs q, k, v, g, beta, state and outputs o [S,H,T,n], state_out [S,S,H,n]."""
    check_variant(variant)
    h_k = h_k or H
    gr = Graph()
    q = gr.input("q", (S, h_k, T, n_seqs))
    k = gr.input("k", (S, h_k, T, n_seqs))
    v = gr.input("v", (S, H, T, n_seqs))
    g = gr.input("g", (S if kda else 1, H, T, n_seqs))
    beta = gr.input("beta", (1, H, T, n_seqs))
    state = gr.input("state", (S, S, H, n_seqs))
    o, st = delta_net(gr, q, k, v, g, beta, state, variant)
    gr.output("o", o)
    gr.output("state_out", st)
    return gr


def delta_net(gr: Graph, q: GTensor, k: GTensor, v: GTensor, g: GTensor, beta: GTensor, state: GTensor,
              variant: str) -> tuple[GTensor, GTensor]:
    """The delta net of one ubatch inside a larger graph: o [S,H,T,n] and the new state [S,S,H,n] (views into the
    fused op's output for `recurrent`)."""
    check_variant(variant)
    if variant == "recurrent":
        S, H, T, n = v.ne
        out = gr.op("GATED_DELTA_NET", q, k, v, g, beta, state, name="gdn_out")
        return (gr.view(out, (S, H, T, n)), gr.view(out, (S, S, H, n), offset=S * H * T * n * 4))
    chunk, block = VARIANTS[variant]
    return _chunked(gr, q, k, v, g, beta, state, chunk, block)


def _chunks(gr: Graph, x: GTensor, chunk: int, pad_t: int, name: str) -> GTensor:
    """[s,H,T,n] -> [s, C, nc, H*n]: tokens padded with zeros to whole chunks, chunk positions along ne1."""
    if pad_t:
        x = gr.op("PAD", x, pad=(0, 0, pad_t, 0), name=f"{name}_pad")
    s, h, t, n = x.ne
    x = gr.op("CONT", gr.permute(x, 0, 2, 1, 3), name=f"{name}_chunks")  # [s, T, H, n]
    return gr.reshape(x, (s, chunk, t // chunk, h * n))


def _rows(t: GTensor, first: int, count: int) -> GTensor:
    """Rows first..first+count-1 (along ne1) of a contiguous [s, C, NB] tensor, as a view."""
    s, c, nb_, _ = t.ne
    return Graph.view(t, (s, count, nb_, 1), nb=(4, 4 * s, 4 * s * c, 4 * s * c * nb_), offset=4 * s * first)


def _pairwise(gr: Graph, gam: GTensor, kk: GTensor, qq: GTensor, name: str):
    """Akk (no beta, no mask) and Aqk (masked incl. diagonal) of chunks [S, C, NB] from the masked pairwise decay
    E[d, j, i] = exp(min(G_i[d] - G_j[d], masked to 0 above the diagonal)). Returns [C(j), C(i), NB] each."""
    s, c, nbat, _ = gam.ne
    g_i = gr.view(gam, (s, 1, c, nbat), nb=(4, 4 * s, 4 * s, 4 * s * c))
    g_j = gr.view(gam, (s, c, 1, nbat), nb=(4, 4 * s, 4 * s * c, 4 * s * c))
    ones = gr.op("FILL", gr.new_tensor(f"{name}_ones", (c, c)), c=1.0, inplace=True, name=f"{name}_ones")
    mask = gr.op("TRI", ones, type="LOWER_DIAG", name=f"{name}_mask")  # keep j <= i
    diff = gr.op("SUB", gr.op("REPEAT", g_i, ne=(s, c, c, nbat), name=f"{name}_gi"), g_j, name=f"{name}_gdiff")
    masked = gr.op("MUL", diff, gr.view(mask, (1, c, c, 1), nb=(4, 4, 4 * c, 4 * c * c)), name=f"{name}_gdiff_m")
    decay = gr.op("EXP", masked, name=f"{name}_decay")
    k_j = gr.view(kk, (s, c, 1, nbat), nb=(4, 4 * s, 4 * s * c, 4 * s * c))
    kdec = gr.op("MUL", decay, k_j, name=f"{name}_kdecay")  # [S, C(j), C(i), NB]
    k_i = gr.view(kk, (s, 1, c, nbat), nb=(4, 4 * s, 4 * s, 4 * s * c))
    q_i = gr.view(qq, (s, 1, c, nbat), nb=(4, 4 * s, 4 * s, 4 * s * c))
    akk = gr.reshape(gr.op("MUL_MAT", kdec, k_i, name=f"{name}_akk_raw"), (c, c, nbat))
    aqk = gr.reshape(gr.op("MUL_MAT", kdec, q_i, name=f"{name}_aqk_raw"), (c, c, nbat))
    return akk, aqk


def _blocked(gr: Graph, gam: GTensor, kk: GTensor, qq: GTensor, block: int):
    """Akk (no beta) and Aqk of 64-chunks from 16x16 blocks, [C, C, NB] each, unmasked above the diagonal blocks."""
    s, c, nbat, _ = gam.ne
    nblk = c // block
    as_blocks = lambda t: gr.reshape(t, (s, block, nblk * nbat))  # contiguous rows: block b of chunk = batch b
    akk_d, aqk_d = _pairwise(gr, as_blocks(gam), as_blocks(kk), as_blocks(qq), "kda_diag")
    akk = gr.op("FILL", gr.new_tensor("kda_akk_blocks", (c, c, nbat)), c=0.0, inplace=True, name="kda_akk_zero")
    aqk = gr.op("FILL", gr.new_tensor("kda_aqk_blocks", (c, c, nbat)), c=0.0, inplace=True, name="kda_aqk_zero")
    row, mat = 4 * c, 4 * c * c
    for b in range(nblk):  # diagonal blocks
        at = dict(nb1=row, nb2=mat, nb3=mat, offset=b * block * 4 + b * block * row, inplace=True)
        for dst, src, nm in ((akk, akk_d, "akk"), (aqk, aqk_d, "aqk")):
            blk = gr.view(src, (block, block, 1, nbat), nb=(4, 4 * block, 4 * block * block, 4 * block * block * nblk),
                          offset=b * 4 * block * block)
            gr.op("SET", dst, blk, name=f"kda_{nm}_diag{b}", **at)
    for b in range(1, nblk):  # row block b, column blocks 0..b-1, anchored at row n = b*block
        anchor = _rows(gam, b * block, 1)
        g_rows = _rows(gam, b * block, block)
        g_prev = _rows(gam, 0, b * block)
        left = gr.op("EXP", gr.op("SUB", g_rows, anchor, name=f"kda_anchor_l{b}"), name=f"kda_decay_l{b}")
        right = gr.op("EXP", gr.op("NEG", gr.op("SUB", g_prev, anchor, name=f"kda_anchor_r{b}")),
                      name=f"kda_decay_r{b}")
        k_right = gr.op("MUL", _rows(kk, 0, b * block), right, name=f"kda_kright{b}")
        for dst, x, nm in ((akk, kk, "akk"), (aqk, qq, "aqk")):
            x_left = gr.op("MUL", _rows(x, b * block, block), left, name=f"kda_{nm}_left{b}")
            blk = gr.op("MUL_MAT", k_right, x_left, name=f"kda_{nm}_off{b}")  # [b*block (j), block (i), NB]
            gr.op("SET", dst, blk, nb1=row, nb2=mat, nb3=mat * nbat, offset=b * block * row, inplace=True,
                  name=f"kda_{nm}_offset{b}")
    return akk, aqk


def _chunked(gr, q, k, v, g, beta, state, chunk: int, block: int | None):
    S, H, T, n = v.ne
    nc = -(-T // chunk)
    pad_t = nc * chunk - T
    B = H * n
    if q.ne[1] != H:  # q/k head broadcast h mod H_k, as the fused op does
        q = gr.op("REPEAT", q, ne=v.ne, name="q_rep")
        k = gr.op("REPEAT", k, ne=v.ne, name="k_rep")
    if g.ne[0] != S:  # GDA: one gate per head, the same for every key channel
        g = gr.op("REPEAT", g, ne=v.ne, name="g_rep")
    qs = gr.op("SCALE", q, s=1.0 / math.sqrt(S), name="q_scaled")
    qc, kc, vc, gc = (_chunks(gr, x, chunk, pad_t, nm) for x, nm in ((qs, "q"), (k, "k"), (v, "v"), (g, "g")))
    bc = _chunks(gr, beta, chunk, pad_t, "beta")  # [1, C, nc, B]
    nbat = nc * B
    flat = lambda t: gr.reshape(t, (t.ne[0], chunk, nbat))
    qc, kc, vc, bc = flat(qc), flat(kc), flat(vc), flat(bc)

    # G = inclusive cumsum of the gates over chunk positions (CUMSUM runs along ne0: transpose there and back).
    g_t = gr.op("CONT", gr.permute(flat(gc), 1, 0, 2, 3), name="kda_g_t")  # [C, S, NB]
    gam = gr.op("CONT", gr.permute(gr.op("CUMSUM", g_t, name="kda_gcs_t"), 1, 0, 2, 3), name="kda_gcs")

    if block:
        akk, aqk = _blocked(gr, gam, kc, qc, block)
    else:
        akk, aqk = _pairwise(gr, gam, kc, qc, "kda")
    akk = gr.op("TRI", gr.op("MUL", akk, bc, name="kda_akk_beta"), type="LOWER", name="kda_akk")
    aqk = gr.op("TRI", aqk, type="LOWER_DIAG", name="kda_aqk")
    ones = gr.op("FILL", gr.new_tensor("kda_ident_ones", (chunk, 1)), c=1.0, inplace=True, name="kda_ident_ones")
    eye_plus = gr.op("ADD", akk, gr.op("DIAG", ones, name="kda_ident"), name="kda_i_plus_akk")

    # W = (I + Akk)^-1 (beta K exp(G)), U = (I + Akk)^-1 (beta V): forward substitution, no explicit inverse.
    eg = gr.op("EXP", gam, name="kda_exp_g")
    kb = gr.op("MUL", gr.op("MUL", kc, eg, name="kda_k_eg"), bc, name="kda_kbeta")
    w = gr.op("SOLVE_TRI", eye_plus, kb, name="kda_w")
    u = gr.op("SOLVE_TRI", eye_plus, gr.op("MUL", vc, bc, name="kda_vbeta"), name="kda_u")
    qe = gr.op("MUL", qc, eg, name="kda_q_eg")
    g_last = _rows(gam, chunk - 1, 1)  # [S, 1, NB]
    kg = gr.op("MUL", kc, gr.op("EXP", gr.op("NEG", gr.op("SUB", gam, g_last, name="kda_glast_diff")),
                                name="kda_k_decay"), name="kda_kg")
    eg_last = gr.op("EXP", g_last, name="kda_exp_glast")  # [S, 1, NB]

    def per_chunk(t: GTensor, c: int) -> GTensor:  # chunk c of a [s, r, nc*B] tensor, as [s, r, 1, B]
        s, r = t.ne[0], t.ne[1]
        return gr.view(t, (s, r, 1, B), nb=(4, 4 * s, 4 * s * r, 4 * s * r * nc), offset=c * 4 * s * r)

    o_all = gr.op("FILL", gr.new_tensor("kda_o", w.ne), c=0.0, inplace=True, name="kda_o_zero")  # [S, C, NB]
    st = gr.reshape(state, (S, S, 1, B))
    for c in range(nc):
        ws = gr.op("MUL_MAT", st, per_chunk(w, c), name=f"kda_ws-c{c}")  # [S(v), C, 1, B]
        v_new = gr.op("SUB", per_chunk(u, c), ws, name=f"kda_vnew-c{c}")
        o_inter = gr.op("MUL_MAT", st, per_chunk(qe, c), name=f"kda_o_inter-c{c}")
        o_intra = gr.op("MUL_MAT", gr.transpose(v_new), per_chunk(aqk, c), name=f"kda_o_intra-c{c}")
        o_c = gr.op("ADD", o_inter, o_intra, name=f"kda_o-c{c}")
        gr.op("SET", o_all, o_c, nb1=4 * S, nb2=4 * S * chunk, nb3=4 * S * chunk * nc, offset=c * 4 * S * chunk,
              inplace=True, name=f"kda_o_set-c{c}")
        decayed = gr.op("MUL", st, per_chunk(eg_last, c), name=f"kda_state_decay-c{c}")
        update = gr.op("MUL_MAT", gr.transpose(per_chunk(kg, c)), gr.transpose(v_new), name=f"kda_state_upd-c{c}")
        st = gr.op("ADD", decayed, update, name=f"kda_state-c{c}")

    o = gr.permute(gr.reshape(o_all, (S, nc * chunk, H, n)), 0, 2, 1, 3)  # [S, H, T_pad, n]
    o = gr.op("CONT", gr.view(o, (S, H, T, n), nb=o.desc.nb), name="kda_o_out")
    return o, gr.reshape(st, (S, S, H, n))
