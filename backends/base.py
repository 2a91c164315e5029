"""What every backend is: buffers with live/peak byte accounting, a support predicate, and `prepare(node)`, which
compiles (once) and binds a kernel and returns a callable that enqueues it.

The kernel ABI is shared by every runtime so kernels read the same parameter block in every language:

    int32 words[PARAM_WORDS]
      words[9*t : 9*t+9]  for tensor t in (dst, src0, ..., src5): offset, ne0..ne3, nb0..nb3
                          offset and nb are in ELEMENTS of that tensor's type (the host checked they divide)
      words[63 : 75]      the op's own words (OpSpec.kernel_params): ints, or floats as their bit patterns

Buffers are bound in the order dst, src0, src1, ...; two of them may be the same buffer (in-place ops).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from reference.ops import OpSpec, get_op
from reference.tensor import Buffer, Tensor

TENSOR_WORDS = 9
MAX_TENSORS = 7  # dst + up to 6 sources (GATED_DELTA_NET has 6)
OP_WORDS = 12
OP_WORDS_AT = TENSOR_WORDS * MAX_TENSORS
PARAM_WORDS = OP_WORDS_AT + OP_WORDS
ALIGN = 16  # every allocation is rounded up to this many bytes (kp and vec loads want whole words)


@dataclass
class Node:
    """One op application: sources and destination are tensors bound to buffers of the executing backend."""

    op: OpSpec
    srcs: list[Tensor]
    dst: Tensor
    params: dict
    variant: str = "default"
    name: str = ""

    @property
    def tensors(self) -> list[Tensor]:
        return [self.dst, *self.srcs]

    def label(self) -> str:
        shown = {k: v for k, v in self.params.items() if v is not None}
        args = ",".join([f"ne{i}={list(t.ne)}" for i, t in enumerate(self.srcs)] + [f"{k}={v}" for k, v in shown.items()])
        return f"{self.op.name}({args})"


def make_node(op_name: str, srcs: list[Tensor], params: dict | None = None, dst: Tensor | None = None,
              variant: str = "default", name: str = "") -> Node:
    """Validate and build a node. `dst` defaults to the op's output descriptor (bind a buffer before running)."""
    op = get_op(op_name)
    full = op.validate(srcs, params or {})
    expected = op.output(srcs, full)
    if dst is None:
        dst = expected
    elif dst.dtype != expected.dtype or dst.ne != expected.ne:
        raise ValueError(f"{op.name} writes {expected.dtype.label} ne={list(expected.ne)}, "
                         f"dst is {dst.describe()}")
    return Node(op, list(srcs), dst, full, variant, name)


def param_block(node: Node) -> np.ndarray:
    words = np.zeros(PARAM_WORDS, dtype=np.int32)
    if len(node.tensors) > MAX_TENSORS:
        raise ValueError(f"{node.op.name} has {len(node.srcs)} sources; the kernel ABI carries {MAX_TENSORS - 1}")
    for t_index, t in enumerate(node.tensors):
        e = t.dtype.size
        words[t_index * TENSOR_WORDS:(t_index + 1) * TENSOR_WORDS] = [t.offset // e, *t.ne, *(s // e for s in t.nb)]
    op_words = node.op.kernel_params(node.srcs, node.params)
    if len(op_words) > OP_WORDS:
        raise ValueError(f"{node.op.name} has {len(op_words)} op words; the kernel ABI carries {OP_WORDS}")
    words[OP_WORDS_AT:OP_WORDS_AT + len(op_words)] = op_words
    return words


def is_broken(variant: str) -> bool:
    """Deliberately wrong kernel variants exist to prove the suite catches bugs; conformance runs skip them."""
    return variant.startswith("broken")


class Backend:
    """Base class. Subclasses implement _alloc/_free/write/read, supports, prepare, synchronize, device_info."""

    name = "?"
    # Keep freed buffers for reuse by an allocation of the same size (a runtime whose buffers, or the pipelines
    # bound to them, are costly to create). Live/peak bytes count what is allocated, not what the pool holds.
    pool_buffers = False
    POOL_LIMIT_BYTES = 1 << 30

    def __init__(self):
        self.live_bytes = 0
        self.peak_bytes = 0
        self._pool: dict[int, list[tuple]] = {}  # size -> [(handle, hint of its last user)]
        self._pooled_bytes = 0

    # ---- buffers ------------------------------------------------------------------------------------------------
    def alloc(self, nbytes: int, hint=None) -> Buffer:
        """A buffer of at least nbytes. `hint` names the allocation (run_graph: its size and slot): a pooled buffer
        last used under the same name is preferred, so running a graph again binds the same buffers."""
        if nbytes < 0:
            raise ValueError(f"cannot allocate {nbytes} bytes")
        size = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        pooled = self._pool.get(size)
        if pooled:
            pick = next((i for i in range(len(pooled) - 1, -1, -1) if pooled[i][1] == hint), len(pooled) - 1)
            handle = pooled.pop(pick)[0]
            self._pooled_bytes -= size
        else:
            handle = self._alloc(size)
        buf = Buffer(size, handle, self, hint=hint)
        self.live_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return buf

    def free(self, buf: Buffer) -> None:
        if buf.freed:
            return
        if self.pool_buffers:
            self._pool.setdefault(buf.nbytes, []).append((buf.handle, buf.hint))
            self._pooled_bytes += buf.nbytes
            if self._pooled_bytes > self.POOL_LIMIT_BYTES:
                self.trim_pool()
        else:
            self._free(buf)
        buf.freed = True
        self.live_bytes -= buf.nbytes

    def trim_pool(self) -> None:
        """Release every pooled buffer to the runtime."""
        for size, pooled in self._pool.items():
            for handle, _ in pooled:
                self._free(Buffer(size, handle, self))
        self._pool.clear()
        self._pooled_bytes = 0

    def upload(self, host: np.ndarray) -> Buffer:
        """A new buffer holding the bytes of `host` (uint8)."""
        buf = self.alloc(host.nbytes)
        padded = np.zeros(buf.nbytes, dtype=np.uint8)
        padded[:host.nbytes] = host.view(np.uint8).reshape(-1)
        self.write(buf, padded)
        return buf

    def _alloc(self, nbytes: int):
        raise NotImplementedError

    def _free(self, buf: Buffer) -> None:
        pass

    def write(self, buf: Buffer, data: np.ndarray) -> None:
        """Copy the whole buffer from host bytes (uint8, len == buf.nbytes)."""
        raise NotImplementedError

    def read(self, buf: Buffer) -> np.ndarray:
        """The whole buffer as host bytes (uint8)."""
        raise NotImplementedError

    # ---- ops ----------------------------------------------------------------------------------------------------
    def variants(self, op_name: str) -> list[str]:
        """Kernel variants this backend carries for an op; the first is the default."""
        return ["default"]

    def supports(self, node: Node) -> str | None:
        """None when the backend runs this node, else the reason it does not (shown as 'unsupported')."""
        raise NotImplementedError

    def prepare(self, node: Node) -> Callable[[], None]:
        """Compile/bind once; the callable enqueues one run (call synchronize() to wait)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        pass

    def compute(self, node: Node) -> None:
        reason = self.supports(node)
        if reason:
            raise NotImplementedError(f"{self.name} does not run {node.label()}: {reason}")
        self.prepare(node)()
        self.synchronize()

    def device_info(self) -> dict:
        return {"device": "?", "driver": "?"}

    def library_matmul(self, m: int, n: int, k: int) -> Callable[[], None] | None:
        """The vendor library's f32 [m,k] x [k,n] product (cuBLAS, ...) as the GFLOPS ceiling for MUL_MAT figures;
        None when the host's NumPy/BLAS is the ceiling (CPU drivers)."""
        return None

    def copy_launch(self, src: Buffer, dst: Buffer) -> Callable[[], None]:
        """The runtime's own buffer-to-buffer copy: the bandwidth ceiling per-op figures are compared with."""
        raise NotImplementedError
