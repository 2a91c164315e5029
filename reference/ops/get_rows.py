"""GET_ROWS: rows of a gathered by i32 ids, per plane (r[:, k, i1, i2] = a[:, ids[k, i1, i2], i1, i2]); a f32 or f16,
the result f32. MoE routing and embedding lookups use it.

Kernels: backends/opencl/get_rows.cl, backends/vulkan/get_rows.comp, backends/cuda/get_rows.cu.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import DType
from . import draw as d
from .ggml_call import GgmlCall, Src, dense_nb0, requires
from .spec import PERF_NE, Mutant, OpSpec, index_domain, register

F32, F16, I32 = DType.F32, DType.F16, DType.I32
FAMILY = "get_rows"


def _check_get_rows(srcs, p):
    a, ids = srcs
    if a.ne[2] != ids.ne[1] or a.ne[3] != ids.ne[2] or ids.ne[3] != 1:
        raise ValueError(f"GET_ROWS needs a [E,R,n1,n2] and i32 ids [K,n1,n2], got a {a.describe()}, "
                         f"ids {ids.describe()}")


def _get_rows_ref(xs, p):
    a, ids = xs  # numpy (n2, n1, R, E) and (1, n2, n1, K)
    return np.stack([np.stack([a[i2, i1, ids[0, i2, i1]] for i1 in range(a.shape[1])]) for i2 in range(a.shape[0])])


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def get_rows_cases():
    return [Case.of("GET_ROWS", Input((64, 10)), Input((7,), I32)),
            Case.of("GET_ROWS", Input((64, 10, 3)), Input((5, 3), I32, Layout(pad=(2, 0, 0, 0), offset=1))),
            Case.of("GET_ROWS", Input((64, 10), F16), Input((9,), I32)),
            Case.of("GET_ROWS", Input((16, 300)), Input((70000,), I32)),  # past CUDA's 65,535 grid rows
            # f16 rows shorter than a Vulkan thread's run (PER = 4 elements cross rows: the id is read per row), and
            # ids as a transposed view (ids' nb0 != 1)
            Case.of("GET_ROWS", Input((3, 10, 2), F16), Input((9, 2), I32)),
            Case.of("GET_ROWS", Input((64, 10, 3)), Input((5, 3), I32, Layout(permute=(1, 0, 2, 3)))),
            # f32 rows of 3 (no VEC4 on Vulkan), and a transposed a, f32 and f16 (OpenCL's strided-row path)
            Case.of("GET_ROWS", Input((3, 10)), Input((4,), I32)),
            *(Case.of("GET_ROWS", Input((17, 6, 2), t, Layout(permute=(1, 0, 2, 3))), Input((4, 2), I32))
              for t in (F32, F16))]


# ---- drawn cases ----------------------------------------------------------------------------------------------------
@st.composite
def get_rows(draw):
    a = (draw(st.sampled_from([1, 3, 64, 129])), draw(st.sampled_from([1, 2, 17])), draw(st.sampled_from([1, 2])),
         draw(st.sampled_from([1, 3])))
    ids = (draw(st.sampled_from([1, 2, 9, 33])), a[2], a[3], 1)
    return Case.of("GET_ROWS", Input(a, draw(st.sampled_from([F32, F16])), draw(d.layouts(a))),
                   Input(ids, I32, draw(d.layouts(ids, fixed_dims=(3,)))), seed=draw(d.seeds()))


# ---- ggml ---------------------------------------------------------------------------------------------------------
# only a debug assert (nb00 == type size): release builds read each row as dense
_ggml_rules = requires((0, "a", dense_nb0, "ggml_compute_forward_get_rows_* read rows as dense (nb00 == type size is "
                                           "only a debug assert, so a strided row is misread)"))


_GGML = GgmlCall("ggml_get_rows", (Src(0), Src(1)), rules=_ggml_rules)


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "GET_ROWS", 2, _get_rows_ref, lambda s, p: (F32, (s[0].ne[0], s[1].ne[0], s[1].ne[1], s[1].ne[2])),
    check=_check_get_rows, src_dtypes=((F32, F16), (I32,)), flops=lambda s, d, p: 0,
    domain=index_domain(1, lambda shapes: shapes[0][-2]),
    ids={1: ("a has {n} rows (ne1)", lambda s: s[0].ne[1])},
    summary="r[:, k, i1, i2] = a[:, ids[k, i1, i2], i1, i2] (rows gathered by i32 ids; f32 out)",
    family=FAMILY, pinned=get_rows_cases, strategy=get_rows, ggml=_GGML,
    perf=Case.of("GET_ROWS", Input(PERF_NE), Input((PERF_NE[1],), I32)),
    mutants=(
        Mutant("get_rows_ids_stride_opencl", "opencl", "ids[OFF(T_B) + i1 * NB(T_B, 0) +", "ids[OFF(T_B) + i1 +",
               "stride", "ids read at unit stride along ne0 (ids assumed contiguous), wrong for a strided ids view"),
        Mutant("get_rows_row_reload_vulkan", "vulkan",
               "if (i.x == 0 && k + 1 < end) row = int(S1[at(ivec4(i.y, i.z, i.w, 0), nb_1, off_1)]);",
               "if (i.x == 0 && k + 1 < end) row = row;", "carry",
               "the general (f16) path read the row id once per thread, so a run crossing into the next dst row "
               "copies the previous row's source"),
    )))
