"""ADD, SUB, MUL and DIV: a op b element by element, b repeated over a (ggml_can_repeat: each of a's ne a multiple of
b's), as the gates and residuals of Kimi's layers broadcast.

Kernels: backends/opencl/binary.cl, backends/vulkan/binary.comp, backends/cuda/binary.cu.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from . import draw as d
from .ggml_call import GgmlCall, Src, dense_nb0, requires
from .spec import PERF_NE, Mutant, OpSpec, register, same_shape

FAMILY = "binary"
_FNS = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide}


def _binary_domain(op: str):
    def draw(rng, shape, i, p, shapes=None):
        if op == "DIV" and i == 1:  # keep divisors away from zero
            return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        return rng.uniform(-1, 1, shape)
    return draw


def _check_repeat(srcs, p):
    a, b = srcs
    if any(bn == 0 or an % bn for an, bn in zip(a.ne, b.ne)):
        raise ValueError(f"b {list(b.ne)} cannot be broadcast to a {list(a.ne)}: each a.ne must be a multiple")


def _binary_ref(fn):
    def ref(xs, p):
        a, b = xs
        return fn(a, np.tile(b, [x // y for x, y in zip(a.shape, b.shape)]))
    return ref


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def binary_cases(op):
    a = (10, 5, 4, 3)
    bs = [(10, 5, 4, 3), (10, 1, 4, 1), (1, 1, 1, 1), (10, 5, 1, 1), (1, 5, 4, 3), (5, 5, 2, 3)]
    cases = [Case.of(op, Input(a), Input(b)) for b in bs]
    cases += [Case.of(op, Input(a, layout=Layout(permute=(0, 2, 1, 3))),
                      Input((10, 1, 4, 1), layout=Layout(pad=(2, 0, 1, 0)))),
              Case.of(op, Input((1024, 64)), Input((1024,)))]
    # b repeated along rows longer than one OpenCL work item's run (CHUNK = 256, not a multiple of b.ne0 = 5): each
    # run must start b at begin % b.ne0
    cases += [Case.of(op, Input((1000, 2)), Input((5, 1)))]
    # a transposed a, with b broadcast along ne0 and not: OpenCL's strided-row path with BCAST0 and without
    cases += [Case.of(op, Input((64, 5, 4), layout=Layout(permute=(1, 0, 2, 3))), Input(b)) for b in ((1, 5, 4),
                                                                                              (64, 5, 4))]
    return cases


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def binary(draw, op):
    a = draw(d.shapes())
    b = tuple(draw(st.sampled_from(sorted({1, n} | {k for k in (2, 3, 5) if n % k == 0}))) for n in a)
    return Case.of(op, Input(a, layout=draw(d.layouts(a))), Input(b, layout=draw(d.layouts(b))), seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
_ggml_rules = requires((0, "a", dense_nb0, "apply_binary_op (binary-ops.cpp) asserts nb00 == sizeof(src0_t)"))


# ---- planted bugs -------------------------------------------------------------------------------------------------
_PLAIN_LOOP_CL = "    for (int i = begin; i < end; ++i) dr[i * sd] = OP(ar[i * sa], br[i * sb]);\n"
_AGAIN_CL = """\
    const int again = (I1 + NE(T_DST, 1) / 2) % NE(T_DST, 1) - I1;
    __global const float* b2 = b + OFF(T_B) + ((I1 + again) % NE(T_B, 1)) * NB(T_B, 1) + (I2 % NE(T_B, 2)) * NB(T_B, 2)
                               + (I3 % NE(T_B, 3)) * NB(T_B, 3);
    for (int i = begin; i < end; ++i)
        dr[again * NB(T_DST, 1) + i * sd] = OP(ar[again * NB(T_A, 1) + i * sa], b2[i * sb]);
"""
_VEC4_STORE_COMP = "        D4[(off_d + f) >> 2] = floatBitsToUint(r);\n"
_AGAIN_COMP = """\
        int n4 = n & ~3, g = (f + ((n4 / 2) & ~3)) % n4;
        vec4 a2 = uintBitsToFloat(S04[(off_0 + g) >> 2]), b2 = uintBitsToFloat(S14[(off_1 + g) >> 2]);
        D4[(off_d + g) >> 2] = floatBitsToUint(vec4(apply(a2.x, b2.x), apply(a2.y, b2.y), apply(a2.z, b2.z),
                                                    apply(a2.w, b2.w)));
"""
_MUTANTS = {
    "MUL": (Mutant("mul_bcast0_chunk_restart_opencl", "opencl", "j = begin % neb0", "j = 0", "broadcast",
                   "BCAST0: each work item's run restarted b's row at 0 instead of at begin % b.ne0, so b is "
                   "misaligned after the first run of a row longer than CHUNK"),),
    "ADD": (Mutant("add_b_strides_vulkan", "vulkan", "float b = LOAD_F32(S1, at(j, nb_1, off_1));",
                   "float b = LOAD_F32(S1, at(j, nb_0, off_1));", "stride",
                   "the broadcast path read b through a's strides (right only when b has a's shape and layout)"),
            # Slowdowns: every element computed twice, the second time by the work item half the tensor away, so the
            # second reads miss the caches the first warmed (same values written twice: the result is unchanged).
            Mutant("add_twice_slowdown_opencl", "opencl", _PLAIN_LOOP_CL, _PLAIN_LOOP_CL + _AGAIN_CL, "slowdown",
                   "the row half the rows away computed again: twice the memory traffic"),
            Mutant("add_twice_slowdown_vulkan", "vulkan", _VEC4_STORE_COMP, _VEC4_STORE_COMP + _AGAIN_COMP,
                   "slowdown", "the vec4 half the tensor away computed again: twice the memory traffic")),
}

# ---- the records ----------------------------------------------------------------------------------------------------
for _name, _fn in _FNS.items():
    register(OpSpec(
        _name, 2, _binary_ref(_fn), same_shape, check=_check_repeat, domain=_binary_domain(_name),
        summary=f"a {_name.lower()} b, b repeated over a (ggml_can_repeat)", elementwise=True,
        family=FAMILY, pinned=partial(binary_cases, _name), strategy=partial(binary, _name),
        ggml=GgmlCall(f"ggml_{_name.lower()}", (Src(0), Src(1)), rules=_ggml_rules),
        perf=Case.of(_name, Input(PERF_NE), Input(PERF_NE)), mutants=_MUTANTS.get(_name, ())))
