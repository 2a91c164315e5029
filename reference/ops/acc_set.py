"""ACC and SET: b written (SET) or added (ACC) into a block of a, at byte strides nb1, nb2, nb3 from a byte offset;
dst is a copy of a, or a itself in place. The chunked delta net assembles its matrices this way (kda_o_set).

Kernels: backends/opencl/acc_set.cl, backends/vulkan/acc_set.comp, backends/cuda/acc_set.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import DType, Tensor, contiguous_strides
from . import draw as d
from .ggml_call import GgmlCall, Param, Src, contiguous, dense_nb0, need
from .spec import INT, PERF_NE, Kind, Mutant, OpSpec, register, same_shape, uniform

F32, I32 = DType.F32, DType.I32
FAMILY = "acc_set"


def _block_view(a: Tensor, b: Tensor, p: dict) -> Tensor:
    """The region of a that acc/set write: b's shape at byte strides (elsize, nb1, nb2, nb3) from byte `offset`."""
    return Tensor(a.dtype, b.ne, (a.dtype.size, p["nb1"], p["nb2"], p["nb3"]), p["offset"])


def _check_block(srcs, p):
    a, b = srcs
    if a.dtype != b.dtype:
        raise ValueError(f"a and b must share a type, got {a.dtype.label} and {b.dtype.label}")
    if not a.is_contiguous():
        raise ValueError(f"a must be contiguous (ggml asserts it), got {a.describe()}")
    view = _block_view(a, b, p)  # validates alignment and signs
    if view.offset + view.extent() > a.nbytes():
        raise ValueError(f"the block {view.describe()} runs past a ({a.nbytes()} bytes)")
    # Strides must nest (nb1 >= ne0*size, nb2 >= nb1*ne1, nb3 >= nb2*ne2) so a byte of a maps to at most one
    # element of b; kernels decompose an offset by nb3, nb2, nb1 in that order.
    need_nb = a.dtype.size
    for dim in range(1, 4):
        need_nb *= b.ne[dim - 1]
        if view.nb[dim] < need_nb:
            raise ValueError(f"block stride nb{dim}={view.nb[dim]} is below nb{dim - 1}*ne{dim - 1}={need_nb}: "
                             f"elements of b would overlap in a")
        need_nb = view.nb[dim]


def _block_ref(mode: str):
    def ref(xs, p):
        a, b = xs
        out = np.array(a, dtype=a.dtype if mode == "set" else np.float64, order="C")
        esize = 4  # strides are bytes of the tensor type; ACC/SET take only 4-byte types (f32, i32)
        flat = out.reshape(-1)
        strides = (p["nb3"] // esize, p["nb2"] // esize, p["nb1"] // esize, 1)
        block = np.lib.stride_tricks.as_strided(flat[p["offset"] // esize:], shape=b.shape,
                                                strides=tuple(s * flat.itemsize for s in strides))
        if mode == "acc":
            block += b
        else:
            block[...] = b
        return out
    return ref


def _block_words(srcs, p):
    e = srcs[0].dtype.size
    return [p["nb1"] // e, p["nb2"] // e, p["nb3"] // e, p["offset"] // e]


def block_params(a_ne, dtype=F32, offset=0) -> dict:
    """nb1, nb2, nb3 of a contiguous a of ne `a_ne`, and `offset`: a block laid out with a's own strides."""
    nb = contiguous_strides(dtype, a_ne)
    return dict(nb1=nb[1], nb2=nb[2], nb3=nb[3], offset=offset)


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def _padded_b(ne, dim):
    """b as a view into a tensor padded by 1 in `dim`, starting one row (nb[1] bytes) in."""
    pad = [0, 0, 0, 0]
    pad[dim] = 1
    return Layout(pad=tuple(pad), offset=ne[0])


def acc_cases():
    cases = [Case.of("ACC", Input((256, 17, 1, 1)), Input((256, 16, 1, 1)),
                     **block_params((256, 17, 1, 1), offset=1024))]
    for b0 in (256, 128):
        a_ne = (256, 17, 2, 3)
        cases.append(Case.of("ACC", Input(a_ne), Input((b0, 16, 2, 3)), **block_params(a_ne, offset=1024)))
        for dim in (1, 2, 3):
            cases.append(Case.of("ACC", Input(a_ne), Input((b0, 16, 2, 3), layout=_padded_b((b0, 16, 2, 3), dim)),
                                 **block_params(a_ne, offset=1024)))
    # The block pattern that exposed llama.cpp #19426: blocks of a [S*n,S*n,ne2,ne3] matrix at
    # offset i*S*4 + j*S*nb1 (block column i, block row j >= i), for ne2,ne3 > 1.
    for size, n_blocks, batches in ((16, 4, ((1, 1), (3, 2), (2, 2))), (8, 8, ((3, 2),)), (32, 4, ((2, 2),))):
        n = size * n_blocks
        for ne2, ne3 in batches:
            a_ne = (n, n, ne2, ne3)
            nb = contiguous_strides(F32, a_ne)
            for i, j in ((0, 0), (1, n_blocks - 1), (n_blocks - 1, n_blocks - 1)):
                off = i * size * 4 + j * size * nb[1]
                for inplace in (False, True):
                    cases.append(Case.of("ACC", Input(a_ne), Input((size, size, ne2, ne3)), nb1=nb[1], nb2=nb[2],
                                         nb3=nb[3], offset=off, inplace=inplace))
    cases += _delta_net_cases("ACC")
    return cases


def _delta_net_cases(op):
    """The chunked delta net's kda_o_set (reference/delta_net.py): chunk c of the output, b [S, chunk, 1, B], written
    into o_all [S, nc*chunk, B] at nb1 = 4S, nb2 = 4S*chunk, nb3 = 4S*chunk*nc, offset c*4S*chunk - a block whose nb3
    is NOT a's own (a has ne3 = 1), so a kernel that takes dst's natural nb3 instead of the op's is caught; then a
    block with gaps between its rows, slabs and 3-D blocks (strides larger than b's and a's)."""
    S, chunk, nc, B = 8, 4, 3, 3
    cases = [Case.of(op, Input((S, nc * chunk, B)), Input((S, chunk, 1, B)), nb1=4 * S, nb2=4 * S * chunk,
                     nb3=4 * S * chunk * nc, offset=c * 4 * S * chunk, inplace=inplace)
             for c in (0, nc - 1) for inplace in (False, True)]
    # b [5, 3, 2, 3] at element strides 7, 29, 71 from element 11 of a [16, 9, 2, 1] (288 elements)
    cases += [Case.of(op, Input((16, 9, 2)), Input((5, 3, 2, 3)), nb1=28, nb2=116, nb3=284, offset=44,
                      inplace=inplace) for inplace in (False, True)]
    return cases


def set_cases():
    cases = []
    b_ne = (6, 5, 4, 3)
    for dtype in (F32, I32):
        for dim in (1, 2, 3):
            a_ne = list(b_ne)
            a_ne[dim] *= 2
            nb = contiguous_strides(dtype, a_ne)
            for inplace in (False, True):
                cases.append(Case.of("SET", Input(tuple(a_ne), dtype), Input(b_ne, dtype), nb1=nb[1], nb2=nb[2],
                                     nb3=nb[3], offset=nb[dim] * b_ne[dim], inplace=inplace))
    return cases + _delta_net_cases("SET")


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def block(draw, op):
    """b written into contiguous a at byte strides and offset drawn inside a: a sub-block of a with a's own strides,
    or (half the draws) a block of its own layout - gaps after each row, slab and 3-D block of b (nb1 > ne0*4,
    nb2 > nb1*ne1, nb3 > nb2*ne2), so no stride of the op equals a's, the way the delta net's SETs place blocks."""
    dtype = F32 if op == "ACC" else draw(st.sampled_from([F32, I32]))
    if draw(st.booleans()):
        a = draw(d.shapes())
        b = tuple(draw(st.integers(1, n)) for n in a)
        nb = contiguous_strides(dtype, a)
        origin = [draw(st.integers(0, an - bn)) for an, bn in zip(a, b)]
        offset = sum(o * s for o, s in zip(origin, nb))
    else:
        b = (draw(st.sampled_from(d.ROW_SIZES[:12])), *(draw(st.integers(1, 4)) for _ in range(3)))
        nb = [1]
        for dim in range(1, 4):
            nb.append(nb[-1] * b[dim - 1] + draw(st.sampled_from([0, 1, 3, 16])))
        start = draw(st.sampled_from([0, 1, 5, 64]))
        extent = start + sum((n - 1) * s for n, s in zip(b, nb)) + 1
        a0 = draw(st.sampled_from([1, 16, 33, 64]))
        a1 = draw(st.integers(1, 4))
        a = (a0, a1, -(-extent // (a0 * a1)) + draw(st.integers(0, 1)), 1)
        nb = [s * dtype.size for s in nb]
        offset = start * dtype.size
    return Case.of(op, Input(a, dtype), Input(b, dtype, draw(d.layouts(b))), seed=draw(d.seeds()),
                   nb1=nb[1], nb2=nb[2], nb3=nb[3], offset=offset, inplace=draw(st.booleans()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
def _ggml_rules(op: str):
    def rules(s, p) -> list[str]:
        f: list[str] = []
        need(contiguous(s[0]), f"ggml_{op}_impl asserts ggml_is_contiguous(a); a is {s[0].describe()}", f)
        need(dense_nb0(s[1]), f"ggml_compute_forward_{op}_f32 asserts nb10 == sizeof(float); b is {s[1].describe()}", f)
        if op == "acc":
            need(s[0].dtype == F32, "ggml_acc_impl asserts a->type == GGML_TYPE_F32", f)
        else:
            need(p["offset"] < (1 << 30), f"ggml_set_impl asserts offset < (1 << 30); offset is {p['offset']}", f)
        need(all(p[k] < 2**31 for k in ("nb1", "nb2", "nb3", "offset")),
             f"ggml_{op}_impl stores nb1, nb2, nb3 and offset as int32 op params", f)
        return f
    return rules


def _ggml(op: str) -> GgmlCall:
    return GgmlCall(f"ggml_{op}", (Src(0), Src(1), Param("nb1"), Param("nb2"), Param("nb3"), Param("offset")),
                    inplace_fn=f"ggml_{op}_inplace", rules=_ggml_rules(op))


# ---- the records ----------------------------------------------------------------------------------------------------
_BLOCK_PARAMS = {"nb1": None, "nb2": None, "nb3": None, "offset": 0, "inplace": False}
_BYTES = Kind("an int (bytes; required)", INT.accept)
_BLOCK_KINDS = {"nb1": _BYTES, "nb2": _BYTES, "nb3": _BYTES}
_PERF_PARAMS = block_params(PERF_NE, offset=PERF_NE[0])  # b: half of each row of a, from a quarter in

_NB3_NATURAL = "the block's nb3 read from dst's natural strides instead of the op's nb3 (the stride of b's 3-D blocks)"
_NB3_BUG = "llama.cpp #19426: Vulkan ACC split the offset with nb2 and nb1 only, ignoring the op's nb3"

register(OpSpec(
    "ACC", 2, _block_ref("acc"), same_shape, dict(_BLOCK_PARAMS), _check_block, _block_words,
    flops=lambda s, d, p: s[1].nelements, inplace_param="inplace", kinds=_BLOCK_KINDS,
    summary="dst = a; dst[offset + i0*4 + i1*nb1 + i2*nb2 + i3*nb3] += b (byte strides)",
    family=FAMILY, pinned=acc_cases, strategy=lambda: block("ACC"), ggml=_ggml("acc"),
    perf=Case.of("ACC", Input(PERF_NE), Input((PERF_NE[0] // 2, PERF_NE[1])), **_PERF_PARAMS),
    mutants=(
        # llama.cpp #19426's class of bug: the block's nb3 ignored (i3 never found), so b's first 3-D slab is written
        # over every slab of the block
        Mutant("acc_nb3_ignored_opencl", "opencl", "int i3 = o / nb3, r3 = o - i3 * nb3;", "int i3 = 0, r3 = o % nb3;",
               "stride", _NB3_BUG),
        Mutant("acc_nb3_ignored_vulkan", "vulkan", "bi.w = o / bnb3; br.y = o - bi.w * bnb3;", "bi.w = 0; br.y = o;",
               "stride", _NB3_BUG),
        Mutant("acc_nb3_ignored_cuda", "cuda", "i[3] = o / nb3;", "i[3] = 0;", "stride", _NB3_BUG),
        # the block's nb3 taken from dst's own layout (a's natural nb3) instead of the op's: right whenever the block
        # has a's strides (every upstream case), wrong for a block of its own layout (the delta net's kda_o_set)
        Mutant("acc_nb3_natural_opencl", "opencl",
               "nb3 = WORD(2), offset = WORD(3);\n    const int neb0",
               "nb3 = NB(T_DST, 3), offset = WORD(3);\n    const int neb0", "stride", _NB3_NATURAL),
        Mutant("acc_nb3_natural_vulkan", "vulkan", "bnb3 = op_int(2);", "bnb3 = nb_d.w;", "stride", _NB3_NATURAL),
    )))
register(OpSpec(
    "SET", 2, _block_ref("set"), same_shape, dict(_BLOCK_PARAMS), _check_block, _block_words,
    domain=uniform(-1000, 1000),  # wide enough that i32 words differ
    src_dtypes=((F32, I32),), flops=lambda s, d, p: 0, inplace_param="inplace", kinds=_BLOCK_KINDS,
    summary="dst = a; dst[offset + i0*4 + i1*nb1 + i2*nb2 + i3*nb3] = b (byte strides)",
    family=FAMILY, pinned=set_cases, strategy=lambda: block("SET"), ggml=_ggml("set"),
    perf=Case.of("SET", Input(PERF_NE), Input((PERF_NE[0] // 2, PERF_NE[1])), **_PERF_PARAMS),
    mutants=(
        # in place (acc_set_block walks b): the carry from i2 into i3 dropped, so b's later 3-D slabs land on slab 0
        Mutant("set_block_lost_carry_opencl", "opencl", "if (++i2 == ne2) i2 = 0, ++i3;", "if (++i2 == ne2) i2 = 0;",
               "carry", "in-place SET/ACC walking b lost the carry from i2 into i3: slabs i3 > 0 overwrite slab 0"),
        # in place (IN_PLACE_BLOCK): nb3 assumed to be nb2 * ne2 (slabs of the block packed), not the op's nb3
        Mutant("set_inplace_nb3_packed_vulkan", "vulkan", "ivec4(1, op_int(0), op_int(1), op_int(2));",
               "ivec4(1, op_int(0), op_int(1), op_int(1) * ne_1.z);", "stride",
               "in-place SET derived the block's nb3 as nb2 * ne2 (packed slabs) instead of reading the op's nb3"),
    )))
