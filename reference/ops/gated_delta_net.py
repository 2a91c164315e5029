"""GATED_DELTA_NET: the fused gated delta rule over T tokens (GDA: one gate per head; KDA: one per key channel),
writing the outputs [S*H, T*n] then the final states [S*H, S*n]. Also here, public for the delta-net graph tests,
its benchmark and the model reference: the recurrence on NumPy arrays (gdn_recurrence), its input domain
(gdn_domain) and the inputs of a case (gdn_inputs).

Kernels: backends/opencl/gated_delta_net.cl, backends/vulkan/gated_delta_net.comp, backends/cuda/gated_delta_net.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import DType
from . import draw as d
from .ggml_call import GgmlCall, Lit, Src, contiguous, contiguous_rows, requires
from .spec import Mutant, OpSpec, register

F32 = DType.F32
FAMILY = "gated_delta_net"


def _check_gdn(srcs, p):
    q, k, v, g, beta, state = srcs
    S, H, T, n = v.ne
    problems = []
    if q.ne != k.ne or q.ne[0] != S or q.ne[2:] != (T, n) or H % q.ne[1]:
        problems.append(f"q, k must be [S,H_k,T,n] with H % H_k == 0 (q {list(q.ne)}, k {list(k.ne)}, v {list(v.ne)})")
    if g.ne not in ((1, H, T, n), (S, H, T, n)):
        problems.append(f"g must be [1,H,T,n] (GDA) or [S,H,T,n] (KDA), got {list(g.ne)}")
    if beta.ne != (1, H, T, n):
        problems.append(f"beta must be [1,H,T,n], got {list(beta.ne)}")
    if state.ne != (S, S, H, n):
        problems.append(f"state must be [S,S,H,n], got {list(state.ne)}")
    if problems:
        raise ValueError("GATED_DELTA_NET: " + "; ".join(problems))


def gdn_recurrence(q, k, v, g, beta, state):
    """The fused recurrence on NumPy arrays in ggml layout, numpy shapes q,k (n,T,H_k,S), v (n,T,H,S),
    g (n,T,H,1|S), beta (n,T,H,1), state (n,H,S[value j],S[key i]). Returns o (n,T,H,S) and the final state.

    Per token (spec 3.2): decay S by exp(g) along the key dim; delta = (v - S^T k) * beta; S += k delta^T;
    o = S^T q / sqrt(S)."""
    n_seqs, T, H, S = v.shape
    h_k = q.shape[2]
    st = np.array(state, dtype=np.float64).swapaxes(-1, -2)  # (n, H, key, value)
    o = np.zeros(v.shape, dtype=np.float64)
    scale = 1.0 / np.sqrt(S)
    for s in range(n_seqs):
        for h in range(H):
            M = st[s, h]
            for t in range(T):
                kt, qt = k[s, t, h % h_k], q[s, t, h % h_k]
                M *= np.exp(g[s, t, h])[:, None]
                delta = (v[s, t, h] - M.T @ kt) * beta[s, t, h, 0]
                M += np.outer(kt, delta)
                o[s, t, h] = M.T @ qt * scale
    return o, st.swapaxes(-1, -2)


def _gdn_ref(xs, p):
    q, k, v, g, beta, state = (x[...] for x in xs)
    o, st = gdn_recurrence(q, k, v, g, beta, state)
    n, T, H, S = v.shape
    return np.concatenate([o.reshape(n * T, H * S), st.reshape(n * S, H * S)], axis=0)


def gdn_domain(rng, shape, i, p, shapes=None):
    """Kimi-realistic inputs (upstream-cases.md 2): q, k L2-normalised per head, g in [-20, -1e-4] (log gates),
    beta in [0, 1], v in [-0.3, 5], state in [-1, 1]."""
    if i in (0, 1):
        x = rng.normal(size=shape)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    return {2: lambda: rng.uniform(-0.3, 5, shape), 3: lambda: rng.uniform(-20, -1e-4, shape),
            4: lambda: rng.uniform(0, 1, shape), 5: lambda: rng.uniform(-1, 1, shape)}[i]()


def gdn_inputs(S, H, T, n, kda=True, h_k=None, permuted=False):
    """q, k [S,H_k,T,n], v [S,H,T,n], g [1|S,H,T,n], beta [1,H,T,n], state [S,S,H,n]; permuted = q/k/v stored
    token-major ([S,T,H,n]) and viewed head-major, as llama.cpp's reshapes leave them."""
    h_k = h_k or H
    lay = Layout(permute=(0, 2, 1, 3)) if permuted else Layout()
    return (Input((S, h_k, T, n), layout=lay), Input((S, h_k, T, n), layout=lay), Input((S, H, T, n), layout=lay),
            Input((S if kda else 1, H, T, n)), Input((1, H, T, n)), Input((S, S, H, n)))


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def gated_delta_net_cases():
    cases = [Case.of("GATED_DELTA_NET", *gdn_inputs(S, H, T, n, kda))
             for kda in (False, True) for H, S, T, n in ((32, 128, 1, 1), (16, 64, 1, 2), (4, 64, 4, 2))]
    cases += [Case.of("GATED_DELTA_NET", *gdn_inputs(64, 4, 4, 2, kda, h_k=2)) for kda in (False, True)]
    cases += [Case.of("GATED_DELTA_NET", *gdn_inputs(64, 4, 33, 1, kda, permuted=True)) for kda in (False, True)]
    cases += [Case.of("GATED_DELTA_NET", *gdn_inputs(32, 4, T, 1, True)) for T in (33, 64, 65, 100, 127, 200, 256)]
    return cases


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def gated_delta_net(draw):
    S, H = draw(st.sampled_from([1, 2, 16, 32, 64])), draw(st.sampled_from([1, 2, 4]))
    h_k = draw(st.sampled_from(sorted({1, H // 2 or 1, H})))
    return Case.of("GATED_DELTA_NET", *gdn_inputs(S, H, draw(st.sampled_from([1, 2, 33, 65])),
                                                 draw(st.sampled_from([1, 2])), draw(st.booleans()), h_k,
                                                 draw(st.booleans())), seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
_ggml_rules = requires(
    *((i, name, contiguous_rows, f"ggml_gated_delta_net asserts ggml_is_contiguous_rows({name})")
      for i, name in enumerate("qkv")),
    *((i, name, contiguous, f"ggml_gated_delta_net asserts ggml_is_contiguous({name})")
      for i, name in ((3, "g"), (4, "beta"), (5, "state"))))


# K = 1: one state snapshot, the final state after the outputs (as here): output [S*H, T*n + S*n]
_GGML = GgmlCall("ggml_gated_delta_net", (*(Src(i) for i in range(6)), Lit(1, "K")), rules=_ggml_rules)


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "GATED_DELTA_NET", 6, _gdn_ref,
    lambda s, p: (F32, (s[2].ne[0] * s[2].ne[1], s[2].ne[2] * s[2].ne[3] + s[2].ne[0] * s[2].ne[3])),
    check=_check_gdn, domain=gdn_domain,
    flops=lambda s, d, p: 6 * s[2].ne[0] * s[2].ne[0] * s[2].ne[1] * s[2].ne[2] * s[2].ne[3],
    summary="gated delta rule over T tokens: output [S*H, T*n] then the final states [S*H, S*n]",
    family=FAMILY, pinned=gated_delta_net_cases, strategy=gated_delta_net, ggml=_GGML,
    perf=Case.of("GATED_DELTA_NET", *gdn_inputs(128, 32, 512, 1, kda=True)),
    mutants=(
        Mutant("gdn_kda_gate_token_opencl", "opencl", "((__local float*)lg[u])[j] = exp(g[grow + t * NB(T_G, 2)]);",
               "((__local float*)lg[u])[j] = exp(g[grow + u * NB(T_G, 2)]);", "carry",
               "KDA gates staged at the token's index within its block of TB (u) instead of t = t0 + u: every "
               "block after the first reuses the first block's gates"),
        Mutant("gdn_gqa_head_map_vulkan", "vulkan", "hk = h % hk_count;", "hk = h / (H / hk_count);", "broadcast",
               "q/k heads shared by grouping consecutive heads (h / (H / H_k)) where the op repeats them (h % H_k)"),
    )))
