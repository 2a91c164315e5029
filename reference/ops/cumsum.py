"""CUMSUM: the inclusive prefix sum of each row (along ne0). The chunked delta net sums its gates this way
(kda_gcs).

Kernels: backends/opencl/cumsum.cl, backends/vulkan/cumsum.comp, backends/cuda/cumsum.cu.
"""
from __future__ import annotations

import numpy as np

from ..case import Case, Input
from . import draw as d
from .ggml_call import GgmlCall, Src, dense_nb0, requires
from .spec import PERF_NE, Mutant, OpSpec, register, same_shape

FAMILY = "cumsum"


def _cumsum_ref(xs, p):
    return np.cumsum(xs[0], axis=-1)


# ---- pinned upstream cases ------------------------------------------------------------------------------------------
def cumsum_cases():
    cases = [Case.of("CUMSUM", Input((n, 5, 4, 3)))
             for n in (10, 127, 128, 255, 256, 511, 512, 1023, 1024, 2047, 2048)]
    cases += [Case.of("CUMSUM", Input((128, 128, 4, 4))), Case.of("CUMSUM", Input((201 * 1204,))),
              Case.of("CUMSUM", Input((20481, 4)))]
    return cases


# ---- drawn cases ----------------------------------------------------------------------------------------------------
def _drawn():
    return d.elementwise("CUMSUM", row_sizes=d.ROW_SIZES + [8191, 20481])


# ---- ggml ---------------------------------------------------------------------------------------------------------
_ggml_rules = requires((0, "a", dense_nb0, "ggml_compute_forward_cumsum_f32 asserts src0->nb[0] == sizeof(float)"))


# ---- the records ----------------------------------------------------------------------------------------------------
register(OpSpec(
    "CUMSUM", 1, _cumsum_ref, same_shape,
    summary="inclusive prefix sum along ne0, per row",
    family=FAMILY, pinned=cumsum_cases, strategy=_drawn,
    ggml=GgmlCall("ggml_cumsum", (Src(0),), rules=_ggml_rules),
    perf=Case.of("CUMSUM", Input(PERF_NE)),
    mutants=(
        Mutant("cumsum_carry_reset_opencl", "opencl", "part[l] = run;\n            run += t;",
               "part[l] = run;\n            run = t;", "carry",
               "the exclusive scan of segment sums keeps only the previous segment's sum: from the third segment on "
               "a row misses the sums of all but one segment before it"),
        Mutant("cumsum_carry_lost_vulkan", "vulkan", "carry += subgroupAdd(run);", "carry = subgroupAdd(run);",
               "carry", "the row's running carry is replaced by the last tile's total instead of advanced by it: "
               "from the third tile of subgroup * 8 elements on, earlier tiles are lost"),
    )))
