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


class DType(enum.Enum):
    F32 = ("f32", np.float32, 0)
    F16 = ("f16", np.float16, 1)
    I32 = ("i32", np.int32, 2)

    def __init__(self, label: str, np_dtype, code: int):
        self.label = label
        self.np = np.dtype(np_dtype)
        self.size = self.np.itemsize
        self.code = code  # the number kernels see in their parameter block

    def __repr__(self) -> str:
        return self.label


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
    ne = _as4(ne, 1, "ne")
    nb = [dtype.size]
    for i in range(1, 4):
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

    def extent(self) -> int:
        """Bytes from `offset` to one past the last byte the view touches (0 for an empty tensor)."""
        if self.nelements == 0:
            return 0
        return sum((n - 1) * s for n, s in zip(self.ne, self.nb)) + self.dtype.size

    def nbytes(self) -> int:
        return self.nelements * self.dtype.size

    def element_offsets(self) -> np.ndarray:
        """Byte offset of every element in the buffer, in NumPy (reversed-ne) shape."""
        idx = [np.arange(n, dtype=np.int64) * s for n, s in zip(self.ne, self.nb)]
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
        if any(s % self.dtype.size for s in self.nb) or self.offset % self.dtype.size:
            raise ValueError(f"strides nb={list(self.nb)} and offset {self.offset} must be multiples of the "
                             f"{self.dtype.label} element size {self.dtype.size}")
        if self.buffer is not None and self.offset + self.extent() > self.buffer.nbytes:
            raise ValueError(f"view {self.describe()} runs past its buffer: needs {self.offset + self.extent()} "
                             f"bytes, buffer has {self.buffer.nbytes}")


def _fill_nb(dtype: DType, ne, nb) -> tuple[int, int, int, int]:
    """Short nb lists (like ggml_view_2d's nb1 only) continue contiguously from the last given stride."""
    ne = _as4(ne, 1, "ne")
    full = list(nb or [])
    if not full:
        return contiguous_strides(dtype, ne)
    while len(full) < 4:
        full.append(full[-1] * ne[len(full) - 1])
    return tuple(full)  # Tensor checks they are ints


# ---- host views over raw bytes --------------------------------------------------------------------------------
def host_view(raw: np.ndarray, t: Tensor) -> np.ndarray:
    """A NumPy view (reversed-ne shape) of tensor `t` over the byte array `raw` (its buffer's host copy)."""
    if raw.dtype != np.uint8:
        raise ValueError("host_view needs the raw uint8 bytes of a buffer")
    if t.offset + t.extent() > raw.nbytes:
        raise ValueError(f"view {t.describe()} runs past a host buffer of {raw.nbytes} bytes")
    return np.ndarray(t.shape, dtype=t.dtype.np, buffer=raw, offset=t.offset, strides=tuple(reversed(t.nb)))


def footprint(t: Tensor, nbytes: int, start: int = 0) -> np.ndarray:
    """Boolean mask over the buffer's bytes [start, start + nbytes): True where tensor `t` lives."""
    mask = np.zeros(nbytes, dtype=bool)
    starts = t.element_offsets().ravel() - start
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
