"""SSM_CONV: the causal depthwise convolution of Mamba-style layers, x[ch,t,s] = sum_i sx[t+i,ch,s] * c[i,ch]. Kimi's
delta-net layers run their q, k, v short convolutions this way (kda_*_conv).

Kernels: backends/opencl/ssm_conv.cl, backends/vulkan/ssm_conv.comp, backends/cuda/ssm_conv.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input
from ..tensor import DType
from . import draw as d
from .ggml_call import GgmlCall, Src, need
from .spec import Mutant, OpSpec, register

F32 = DType.F32
FAMILY = "ssm_conv"


def _check_ssm_conv(srcs, p):
    sx, c = srcs
    if c.ne[1] != sx.ne[1] or c.ne[0] > sx.ne[0] or c.ne[2] != 1 or c.ne[3] != 1 or sx.ne[3] != 1:
        raise ValueError(f"SSM_CONV needs sx [d_conv-1+n_t, d_inner, n_s] and c [d_conv, d_inner], got "
                         f"sx {sx.describe()}, c {c.describe()}")


def _ssm_conv_ref(xs, p):
    sx, c = xs  # sx (1, n_s, d_inner, L), c (1, 1, d_inner, d_conv)
    d_conv = c.shape[-1]
    n_t = sx.shape[-1] - d_conv + 1
    windows = np.stack([sx[..., i:i + n_t] for i in range(d_conv)], axis=-1)  # (1, n_s, d, n_t, d_conv)
    out = np.einsum("...dti,di->...td", windows, c[0, 0])
    return out  # (1, n_s, n_t, d_inner)


def _ssm_conv_out(srcs, p):
    return F32, (srcs[0].ne[1], srcs[0].ne[0] - srcs[1].ne[0] + 1, srcs[0].ne[2], 1)


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def ssm_conv_cases():
    cases = []
    for d_conv in (3, 4, 9):
        for d_inner in (1024, 1536, 2048):
            for n_s in (1, 4):
                cases.append(Case.of("SSM_CONV", Input((d_conv - 1 + 2, d_inner, n_s)), Input((d_conv, d_inner))))
        for n_s in (1, 4):  # the long-token path (upstream CUDA bug #20369 past 32 tokens)
            cases.append(Case.of("SSM_CONV", Input((d_conv + 63, 1024, n_s)), Input((d_conv, 1024))))
    return cases


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def ssm_conv(draw):
    d_conv = draw(st.sampled_from([2, 3, 4, 9]))
    d_inner = draw(st.sampled_from([1, 3, 32, 33, 128, 257]))
    n_t = draw(st.sampled_from([1, 2, 31, 32, 33, 64, 65]))
    n_s = draw(st.sampled_from([1, 2, 4]))
    sx = (d_conv - 1 + n_t, d_inner, n_s, 1)
    c = (d_conv, d_inner, 1, 1)
    return Case.of("SSM_CONV", Input(sx, layout=draw(d.layouts(sx, fixed_dims=(3,)))),
                   Input(c, layout=draw(d.layouts(c, fixed_dims=(2, 3)))), seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
def _ggml_rules(s, p) -> list[str]:
    f: list[str] = []
    sx, c = s
    need(sx.nb[0] == 4 and sx.nb[1] == sx.ne[0] * 4,
         f"ggml_compute_forward_ssm_conv_f32 asserts src0->nb[0] == sizeof(float) and "
         f"src0->nb[1] == src0->ne[0]*sizeof(float); sx is {sx.describe()}", f)
    need(c.nb[0] == 4,
         f"ggml_compute_forward_ssm_conv_f32 asserts src1->nb[0] == sizeof(float); c is {c.describe()}", f)
    # Not asserted, but the kernel reads c[i0 + i1*nc] from its thread's first row (ops.cpp, "rowwise dot
    # product"): a c whose rows are padded (nb1 != d_conv*4) is misread from the second row of each chunk on.
    need(c.ne[1] == 1 or c.nb[1] == c.ne[0] * 4,
         f"ggml_compute_forward_ssm_conv_f32 indexes c as c[i0 + i1*d_conv] (dense rows) without asserting "
         f"src1->nb[1] == src1->ne[0]*sizeof(float), so a c with padded rows is misread; c is {c.describe()}", f)
    return f


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "SSM_CONV", 2, _ssm_conv_ref, _ssm_conv_out, check=_check_ssm_conv,
    flops=lambda s, d, p: 2 * s[1].ne[0] * d.nelements,
    summary="causal depthwise conv: x[ch,t,s] = sum_i sx[t+i,ch,s] * c[i,ch]",
    family=FAMILY, pinned=ssm_conv_cases, strategy=ssm_conv,
    ggml=GgmlCall("ggml_ssm_conv", (Src(0), Src(1)), rules=_ggml_rules),
    perf=Case.of("SSM_CONV", Input((1024 + 3, 4096, 1)), Input((4, 4096))),
    mutants=(
        Mutant("ssm_conv_taps_reversed_opencl", "opencl", "taps[i] = cr[i * NB(T_B, 0)];",
               "taps[i] = cr[(D_CONV - 1 - i) * NB(T_B, 0)];", "wrong-op",
               "the taps are read last first: a textbook convolution (flipped kernel) where ggml's ssm_conv is a "
               "correlation, sum_i sx[t + i] * c[i]"),
        Mutant("ssm_conv_window_shift_vulkan", "vulkan",
               "[[unroll]] for (int j = 0; j + 1 < DCONV; ++j) win[j] = win[j + 1];",
               "[[unroll]] for (int j = 0; j + 2 < DCONV; ++j) win[j] = win[j + 1];", "off-by-one",
               "the sliding window shifts one tap short: from the block's second token on, tap DCONV - 2 keeps the "
               "previous token's input"),
    )))  # 4096 channels over 1024 tokens
