"""A conformance case: one op with its inputs (shape, type, layout in the buffer), parameters and seed: the unit
every test, reproducer and perf run is made of. Only descriptions: cases/harness.py builds and runs them."""
from __future__ import annotations

import json
from dataclasses import dataclass

import math

from .tensor import DType, Tensor, contiguous_strides


@dataclass(frozen=True)
class Layout:
    """How an input sits in its buffer: stored with `pad` extra elements per (storage) dim, `offset` elements in,
    then permuted with ggml_permute(axes) so the op sees the case's ne."""

    permute: tuple[int, int, int, int] | None = None
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    offset: int = 0

    def describe(self) -> str:
        parts = []
        if self.permute:
            parts.append("perm=" + "".join(map(str, self.permute)))
        if any(self.pad):
            parts.append("pad=" + ",".join(map(str, self.pad)))
        if self.offset:
            parts.append(f"off={self.offset}")
        return "|".join(parts) or "cont"

    def storage_ne(self, ne):
        """The ne before the permute: ggml_permute sends storage dim i to dim axes[i]."""
        if not self.permute:
            return tuple(ne)
        return tuple(ne[self.permute[i]] for i in range(4))


CONTIGUOUS = Layout()


@dataclass(frozen=True)
class Input:
    ne: tuple[int, int, int, int]
    dtype: DType = DType.F32
    layout: Layout = CONTIGUOUS

    def __post_init__(self):
        object.__setattr__(self, "ne", tuple(list(self.ne) + [1] * (4 - len(self.ne))))
        block = self.dtype.block
        if self.layout.offset % block or self.layout.pad[0] % block:  # views start on block boundaries
            raise ValueError(f"a {self.dtype.label} input's offset and row padding must be whole blocks of {block} "
                             f"elements, got {self.layout.describe()}")

    def descriptor(self) -> Tensor:
        """The tensor the harness builds: offset and padded strides in its own buffer, then permuted (no buffer)."""
        lay = self.layout
        store_ne = lay.storage_ne(self.ne)
        backing_ne = tuple(n + p for n, p in zip(store_ne, lay.pad))
        t = Tensor(self.dtype, store_ne, contiguous_strides(self.dtype, backing_ne), self.dtype.row_bytes(lay.offset))
        return t.permute(*lay.permute) if lay.permute else t

    def backing_bytes(self) -> int:
        """Bytes of the buffer the input sits in: its offset, then its padded storage (offset and pad in elements)."""
        lay = self.layout
        return self.dtype.row_bytes(lay.offset + math.prod(n + p for n, p in zip(lay.storage_ne(self.ne), lay.pad)))


@dataclass(frozen=True)
class Case:
    """One op with its inputs: the unit every test, reproducer and perf run is made of."""

    op: str
    inputs: tuple[Input, ...]
    params: tuple = ()  # (name, value) pairs, kept hashable
    seed: int = 0

    @staticmethod
    def of(op: str, *inputs: Input, seed: int = 0, **params) -> "Case":
        return Case(op.upper(), tuple(inputs), tuple(sorted(params.items())), seed)

    @property
    def param_dict(self) -> dict:
        return dict(self.params)

    def label(self) -> str:
        """test-backend-ops style: OP(type=..,ne_a=[..],...); stable, so it can name a pytest id."""
        names = "abcdefg"
        parts = [f"type={self.inputs[0].dtype.label}"] if self.inputs else []
        for i, inp in enumerate(self.inputs):
            ne = list(inp.ne)
            while len(ne) > 1 and ne[-1] == 1:
                ne.pop()
            parts.append(f"ne_{names[i]}={ne}".replace(" ", ""))
            if inp.layout != CONTIGUOUS:
                parts.append(f"view_{names[i]}={inp.layout.describe()}")
            if inp.dtype != self.inputs[0].dtype:
                parts.append(f"type_{names[i]}={inp.dtype.label}")
        parts += [f"{k}={json.dumps(v) if isinstance(v, (list, tuple)) else v}".replace(" ", "")
                  for k, v in self.params]
        return f"{self.op}({','.join(parts)})"
