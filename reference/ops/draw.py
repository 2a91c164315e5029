"""Hypothesis building blocks the families' strategies share: shapes (1-4 dims; 1, primes, sizes past a workgroup),
layouts (contiguous, permuted, sliced at an offset, padded strides), seeds, and the one-input element-wise case."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..case import Case, Input, Layout
from ..tensor import QUANTIZED, DType

# Row lengths that catch tile and workgroup edges: 1, primes, powers of two and their neighbours.
ROW_SIZES = [1, 2, 3, 5, 7, 8, 13, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 1023, 1025,
             4097]
OUTER_SIZES = [1, 2, 3, 4, 5, 7]
MAX_ELEMENTS = 1 << 16


@st.composite
def shapes(draw, min_dims=1, max_elements=MAX_ELEMENTS, row_sizes=ROW_SIZES):
    dims = draw(st.integers(min_dims, 4))
    ne = [draw(st.sampled_from(row_sizes))] + [draw(st.sampled_from(OUTER_SIZES)) for _ in range(dims - 1)]
    ne += [1] * (4 - dims)
    while np.prod(ne) > max_elements:  # shrink the largest outer dim, then the row
        i = int(np.argmax(ne[1:])) + 1 if max(ne[1:]) > 1 else 0
        ne[i] = max(1, ne[i] // 2)
    return tuple(ne)


@st.composite
def layouts(draw, ne, allow_permute=True, fixed_dims=(), dtype=DType.F32):
    """A way to lay out a tensor of logical `ne` and type `dtype`; `fixed_dims` stay in place under permutation. A
    quantized tensor keeps its rows (dim 0) in place and is padded and offset by whole blocks."""
    block = dtype.block
    if block > 1:
        fixed_dims = (0, *fixed_dims)
    kinds = ["contiguous", "padded"] + (["permuted", "permuted+padded"] if allow_permute else [])
    kind = draw(st.sampled_from(kinds))
    permute = None
    if "permuted" in kind:
        free = [d for d in range(4) if d not in fixed_dims]
        order = draw(st.permutations(free))
        axes = list(range(4))
        for d, to in zip(free, order):
            axes[d] = to
        permute = tuple(axes) if axes != [0, 1, 2, 3] else None
    pad, offset = (0, 0, 0, 0), 0
    if "padded" in kind:
        pad = tuple(draw(st.sampled_from([0, 0, 1, 3, 16])) for _ in range(4))
        offset = draw(st.sampled_from([0, 1, 5, 64]))
        if block > 1:
            pad, offset = (draw(st.sampled_from([0, block])), *pad[1:]), offset * block
    return Layout(permute, pad, offset)


def weight_types(plain=(DType.F32, DType.F16)):
    """A matrix's type: one of `plain` or a quantized type, each half the time (so the plain types stay drawn as often
    as before the ten quantized ones came)."""
    return st.sampled_from(plain) | st.sampled_from(QUANTIZED)


def row_lengths(dtype: DType, plain_sizes):
    """Row lengths for a tensor of `dtype`: `plain_sizes` for a plain type, 1 to 3 whole blocks for a quantized one."""
    if dtype.quantized:
        return st.sampled_from([dtype.block, 2 * dtype.block, 3 * dtype.block])
    return st.sampled_from(plain_sizes)


def seeds():
    return st.integers(0, 2**32 - 1)


def finite_float(lo, hi):
    return st.floats(lo, hi, allow_nan=False, width=32)


@st.composite
def elementwise(draw, op, dtypes=(DType.F32,), row_sizes=ROW_SIZES, **params):
    """One input of a drawn shape, type and layout, with the given parameters."""
    ne = draw(shapes(row_sizes=row_sizes))
    dtype = draw(st.sampled_from(dtypes))
    return Case.of(op, Input(ne, dtype, draw(layouts(ne))), seed=draw(seeds()), **params)
