"""ggml-style tensors: a dtype, ne[4] (fastest dim first), nb[4] (byte strides) and a byte offset into a buffer.

Views, permutes and transposes are new descriptors over the same buffer. Every descriptor is validated when it is
made, so a view that runs past its buffer, a negative or misaligned stride or a bad shape fails with a ValueError
before any kernel sees it.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from . import quants


class DType(enum.Enum):
    """A tensor type: ggml's name (`label`), the NumPy type a host view of it has (`np`: raw uint8 bytes for the
    quantized types, the raw 16-bit words for bf16, which NumPy lacks), the number kernels see in their parameter
    block (`code`), and ggml's block layout: `block` elements per block, stored in `type_size` bytes (1 and the item
    size for plain types). `size` is ggml_type_size, the bytes of one unit along dim 0 (an element or a block), which
    is also nb[0] of a row-contiguous tensor. The quantized layouts are reference/quants.py's (ggml-common.h's)."""

    # member = (label, np, code); block and type_size come from reference/quants.py (i32: 1 and 4)
    F32 = ("f32", np.float32, 0)
    F16 = ("f16", np.float16, 1)
    I32 = ("i32", np.int32, 2)
    BF16 = ("bf16", np.uint16, 3)
    Q8_0 = ("q8_0", np.uint8, 4)
    Q4_0 = ("q4_0", np.uint8, 5)
    Q4_1 = ("q4_1", np.uint8, 6)
    Q5_0 = ("q5_0", np.uint8, 7)
    Q5_1 = ("q5_1", np.uint8, 8)
    Q2_K = ("q2_K", np.uint8, 9)
    Q3_K = ("q3_K", np.uint8, 10)
    Q4_K = ("q4_K", np.uint8, 11)
    Q5_K = ("q5_K", np.uint8, 12)
    Q6_K = ("q6_K", np.uint8, 13)

    def __init__(self, label: str, np_dtype, code: int):
        self.label = label
        self.np = np.dtype(np_dtype)
        self.code = code  # the number kernels see in their parameter block
        layout = quants.QUANT_TYPES.get(self._name_)  # ggml's layout, kept in one place
        self.block, self.type_size = (layout.block, layout.type_size) if layout else (1, self.np.itemsize)
        self.size = self.type_size

    @property
    def quantized(self) -> bool:
        return self.block > 1

    @property
    def qtype(self) -> quants.QuantType:
        """The type's layout record in reference/quants.py (scale field offsets, dequantizer, quantizer)."""
        return quants.quant_type(self.name)

    def row_bytes(self, ne0: int) -> int:
        """Bytes of a contiguous row of ne0 elements (ne0 / block * type_size)."""
        return ne0 // self.block * self.type_size

    def check_row(self, ne0: int, what: str = "a tensor") -> None:
        """ValueError unless a row of ne0 elements is whole blocks of this type."""
        if ne0 % self.block:
            raise ValueError(f"{what}: rows of {ne0} elements cannot be {self.label}, whose blocks hold {self.block} "
                             f"elements (ne0 must be a multiple of {self.block})")

    def __repr__(self) -> str:
        return self.label


QUANTIZED = tuple(t for t in DType if t.quantized)


ALIGN = 16  # every allocation is rounded up to this many bytes (kp and vec loads want whole words)


def aligned_size(nbytes: int) -> int:
    """The bytes a backend allocates for a request of nbytes (and what the graph planner plans for it)."""
    return max(ALIGN, -(-nbytes // ALIGN) * ALIGN)


@dataclass(eq=False)
class Buffer:
    """A block of bytes owned by a backend. `handle` is the backend's own object (numpy array, cl.Buffer, ...)."""

    nbytes: int
    handle: object = None
    backend: object = None
    freed: bool = field(default=False, repr=False)
    hint: object = field(default=None, repr=False)  # who allocated it (Backend.alloc), for buffer reuse


def is_int(v) -> bool:
    """An integer (Python or NumPy), not a bool: what sizes, strides, offsets and ids must be."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _as4(values, fill: int, what: str) -> tuple[int, int, int, int]:
    values = list(values)
    bad = [v for v in values if not is_int(v)]
    if bad:  # int() would truncate 2.5 and accept '64' or True silently
        raise ValueError(f"{what} entries must be ints, got {bad[0]!r} in {values}")
    values = [int(v) for v in values]
    if not 1 <= len(values) <= 4:
        raise ValueError(f"{what} needs 1 to 4 entries, got {len(values)}")
    return tuple(values + [fill] * (4 - len(values)))


def contiguous_strides(dtype: DType, ne) -> tuple[int, int, int, int]:
    """ggml's strides of a contiguous tensor: nb[0] = type size, nb[1] = the row's bytes (ne0 / block blocks)."""
    ne = _as4(ne, 1, "ne")
    nb = [dtype.size, dtype.row_bytes(ne[0])]
    for i in range(2, 4):
        nb.append(nb[-1] * ne[i - 1])
    return tuple(nb)


@dataclass(frozen=True, eq=False)
class Tensor:
    dtype: DType
    ne: tuple[int, int, int, int]
    nb: tuple[int, int, int, int]
    offset: int = 0
    buffer: Buffer | None = None
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "ne", _as4(self.ne, 1, "ne"))
        object.__setattr__(self, "nb", _as4(self.nb, self.nb[-1] if self.nb else 0, "nb"))
        self.validate()

    # ---- construction -------------------------------------------------------------------------------------------
    @staticmethod
    def new(dtype: DType, ne, buffer: Buffer | None = None, offset: int = 0, name: str = "") -> "Tensor":
        return Tensor(dtype, _as4(ne, 1, "ne"), contiguous_strides(dtype, ne), offset, buffer, name)

    def view(self, ne, nb=None, offset: int = 0, dtype: DType | None = None) -> "Tensor":
        """ggml_view_4d: `nb` in bytes (defaults to contiguous), `offset` in bytes relative to this tensor."""
        dtype = dtype or self.dtype
        return Tensor(dtype, _as4(ne, 1, "ne"), _fill_nb(dtype, ne, nb), self.offset + offset, self.buffer, self.name)

    def permute(self, *axes: int) -> "Tensor":
        """ggml_permute: source dim i becomes destination dim axes[i]."""
        if sorted(axes) != [0, 1, 2, 3]:
            raise ValueError(f"permute needs a permutation of 0..3, got {axes}")
        ne, nb = [0] * 4, [0] * 4
        for src, dst in enumerate(axes):
            ne[dst], nb[dst] = self.ne[src], self.nb[src]
        return Tensor(self.dtype, tuple(ne), tuple(nb), self.offset, self.buffer, self.name)

    def transpose(self) -> "Tensor":
        return self.permute(1, 0, 2, 3)

    def same_view(self, other: "Tensor") -> bool:
        """The very same elements: one buffer, type, shape, strides and offset."""
        return (self.buffer is other.buffer and self.dtype == other.dtype and self.ne == other.ne
                and self.nb == other.nb and self.offset == other.offset)

    def with_buffer(self, buffer: Buffer, offset: int | None = None) -> "Tensor":
        return Tensor(self.dtype, self.ne, self.nb, self.offset if offset is None else offset, buffer, self.name)

    # ---- facts --------------------------------------------------------------------------------------------------
    @property
    def nelements(self) -> int:
        return math.prod(self.ne)

    @property
    def shape(self) -> tuple[int, ...]:
        """The NumPy shape: reversed ne."""
        return tuple(reversed(self.ne))

    def is_contiguous(self) -> bool:
        return self.nb == contiguous_strides(self.dtype, self.ne)

    @property
    def units(self) -> tuple[int, int, int, int]:
        """ne with dim 0 counted in storage units: blocks for a quantized type, elements otherwise."""
        return (self.ne[0] // self.dtype.block, *self.ne[1:])

    def extent(self) -> int:
        """Bytes from `offset` to one past the last byte the view touches (0 for an empty tensor)."""
        if self.nelements == 0:
            return 0
        return sum((n - 1) * s for n, s in zip(self.units, self.nb)) + self.dtype.size

    def nbytes(self) -> int:
        return math.prod(self.units) * self.dtype.size

    def unit_offsets(self) -> np.ndarray:
        """Byte offset of every storage unit (element, or block of a quantized type) in the buffer, in NumPy
        (reversed-units) shape."""
        idx = [np.arange(n, dtype=np.int64) * s for n, s in zip(self.units, self.nb)]
        return (self.offset + idx[3][:, None, None, None] + idx[2][None, :, None, None]
                + idx[1][None, None, :, None] + idx[0][None, None, None, :])

    def describe(self) -> str:
        return f"{self.dtype.label} ne={list(self.ne)} nb={list(self.nb)} offset={self.offset}"

    def validate(self) -> None:
        if not is_int(self.offset):
            raise ValueError(f"the byte offset must be an int, got {self.offset!r}")
        if any(n < 0 for n in self.ne):
            raise ValueError(f"negative size in ne={list(self.ne)}")
        if any(s < 0 for s in self.nb):
            raise ValueError(f"negative stride in nb={list(self.nb)}: ggml views need nb >= 0")
        if self.offset < 0:
            raise ValueError(f"negative byte offset {self.offset}")
        if self.dtype.quantized:
            self.dtype.check_row(self.ne[0], f"{self.dtype.label} tensor ne={list(self.ne)}")
            if self.ne[0] and self.nb[0] != self.dtype.size:  # a block's elements are not addressable one by one
                raise ValueError(f"a {self.dtype.label} row is whole blocks side by side: nb[0] must be its block size "
                                 f"{self.dtype.size} bytes, got nb={list(self.nb)}")
        if any(s % self.dtype.size for s in self.nb) or self.offset % self.dtype.size:
            unit = f"block size {self.dtype.size} (views start on block boundaries)" if self.dtype.quantized \
                else f"element size {self.dtype.size}"
            raise ValueError(f"strides nb={list(self.nb)} and offset {self.offset} must be multiples of the "
                             f"{self.dtype.label} {unit}")
        if self.buffer is not None and self.offset + self.extent() > self.buffer.nbytes:
            raise ValueError(f"view {self.describe()} runs past its buffer: needs {self.offset + self.extent()} "
                             f"bytes, buffer has {self.buffer.nbytes}")


def _fill_nb(dtype: DType, ne, nb) -> tuple[int, int, int, int]:
    """Short nb lists (like ggml_view_2d's nb1 only) continue contiguously from the last given stride."""
    ne = _as4(ne, 1, "ne")
    full = list(nb or [])
    if not full:
        return contiguous_strides(dtype, ne)
    units = (ne[0] // dtype.block, *ne[1:])  # a quantized row is ne0 / block blocks
    while len(full) < 4:
        full.append(full[-1] * units[len(full) - 1])
    return tuple(full)  # Tensor checks they are ints


# ---- host views over raw bytes --------------------------------------------------------------------------------
def host_view(raw: np.ndarray, t: Tensor) -> np.ndarray:
    """A NumPy view (reversed-ne shape) of tensor `t` over the byte array `raw` (its buffer's host copy). A quantized
    tensor's view holds its rows' bytes (numpy shape [ne3, ne2, ne1, row bytes]), a bf16 one its 16-bit words:
    host_values and store_values convert."""
    if raw.dtype != np.uint8:
        raise ValueError("host_view needs the raw uint8 bytes of a buffer")
    if t.offset + t.extent() > raw.nbytes:
        raise ValueError(f"view {t.describe()} runs past a host buffer of {raw.nbytes} bytes")
    if t.dtype.quantized:
        shape, strides = t.shape[:3] + (t.dtype.row_bytes(t.ne[0]),), tuple(reversed(t.nb[1:])) + (1,)
    else:
        shape, strides = t.shape, tuple(reversed(t.nb))
    return np.ndarray(shape, dtype=t.dtype.np, buffer=raw, offset=t.offset, strides=strides)


def host_values(raw: np.ndarray, t: Tensor) -> np.ndarray:
    """Tensor `t`'s values in `raw` as float64 (int64 for i32), NumPy shape: quantized rows dequantized as ggml's
    to_float does (reference.quants.dequantize), bf16 widened."""
    view = host_view(raw, t)
    if t.dtype == DType.I32:
        return view.astype(np.int64)
    if t.dtype.quantized or t.dtype == DType.BF16:
        rows = np.ascontiguousarray(view).view(np.uint8)
        return quants.dequantize(rows, t.dtype.qtype).reshape(t.shape).astype(np.float64)
    return view.astype(np.float64)


def store_values(raw: np.ndarray, t: Tensor, values) -> None:
    """Write `values` (NumPy shape of t) into t's bytes in `raw`, rounded to t's type; quantized rows are encoded
    as ggml's quantizer does (reference.quants.quantize), bf16 rounded to nearest even."""
    view = host_view(raw, t)
    values = np.broadcast_to(np.asarray(values), t.shape)
    if t.dtype.quantized or t.dtype == DType.BF16:
        view[...] = quants.quantize(values, t.dtype.qtype).view(t.dtype.np)
    else:
        view[...] = values.astype(t.dtype.np)


def footprint(t: Tensor, nbytes: int, start: int = 0) -> np.ndarray:
    """Boolean mask over the buffer's bytes [start, start + nbytes): True where tensor `t` lives."""
    mask = np.zeros(nbytes, dtype=bool)
    starts = t.unit_offsets().ravel() - start
    for b in range(t.dtype.size):
        at = starts + b
        mask[at[(at >= 0) & (at < nbytes)]] = True
    return mask


def overlap(a: Tensor, b: Tensor) -> bool:
    """Whether two descriptors over one buffer share a byte. The byte ranges decide first (a few comparisons); only
    when they intersect are the exact footprints compared, inside the intersection, so interleaved views (the even
    and the odd elements of a row) do not overlap."""
    if a.nelements == 0 or b.nelements == 0:
        return False
    lo, hi = max(a.offset, b.offset), min(a.offset + a.extent(), b.offset + b.extent())
    return lo < hi and bool((footprint(a, hi - lo, lo) & footprint(b, hi - lo, lo)).any())
