"""What every backend is: buffers with live/peak byte accounting, a support predicate, and `prepare(node)`, which
compiles (once) and binds a kernel and returns a callable that enqueues it.

The kernel ABI is shared by every runtime so kernels read the same parameter block in every language:

    int32 words[PARAM_WORDS]
      words[9*t : 9*t+9]  for tensor t in (dst, src0, ..., src5): offset, ne0..ne3, nb0..nb3
                          offset and nb are in ELEMENTS of that tensor's type (the host checked they divide)
      words[63 : 75]      the op's own words (OpSpec.kernel_params): ints, or floats as their bit patterns

Buffers are bound in the order dst, src0, src1, ...; two of them may be the same buffer (in-place ops).

What reaches a kernel was checked first (check_bindings of reference/node.py, Backend.prepare, Backend.compute):
parameters validated (again, if edited since), every tensor bound to a live buffer of this backend, dst exactly
src0's view for an in-place op and sharing no byte with any other source; compute() also reads back the id sources
(GET_ROWS, MUL_MAT_ID) and refuses ids out of range.
"""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from reference.node import Node, check_bindings, validate_node
from reference.tensor import Buffer, aligned_size, host_view

TENSOR_WORDS = 9
MAX_TENSORS = 7  # dst + up to 6 sources (GATED_DELTA_NET has 6)
OP_WORDS = 12
OP_WORDS_AT = TENSOR_WORDS * MAX_TENSORS
PARAM_WORDS = OP_WORDS_AT + OP_WORDS
# STREAM kernels (McCalpin's copy and triad, and a write-only fill): name -> how many sources they read.
STREAM_SOURCES = {"copy": 1, "triad": 2, "fill": 0}
STREAM_SCALAR = 3.0  # STREAM's s


@functools.lru_cache(maxsize=None)
def host_last_level_cache_bytes() -> int | None:
    """The host CPU's largest cache (Linux sysfs, cpu0's highest level), None when it cannot be read."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes) if sizes else None


def pow2_at_least(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): work-group and block sizes, padded sort widths."""
    return 1 << max(0, int(n) - 1).bit_length()


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


MUTANT_ENV = "KBO_MUTANT"


@functools.lru_cache(maxsize=None)
def active_mutant():
    """(op, Mutant) named by KBO_MUTANT, or None (read once per process: kernels are compiled once)."""
    from reference.ops.spec import mutants

    name = os.environ.get(MUTANT_ENV)
    if not name:
        return None
    if name not in mutants():
        raise ValueError(f"{MUTANT_ENV}={name}: no such mutant (python -m cases.mutants --list)")
    return mutants()[name]


def kernel_text(backend: str, path: Path) -> str:
    """A kernel source file as `backend` compiles it: the file, with the active mutant's edit when it targets it."""
    from reference.ops.spec import mutant_file

    text = path.read_text()
    active = active_mutant()
    if active is None:
        return text
    op, m = active
    if m.backend != backend or mutant_file(op, m, path.suffix) != path.name:
        return text
    if text.count(m.find) != 1:
        raise RuntimeError(f"mutant {m.name}: its text occurs {text.count(m.find)} times in {path.name}, not once")
    return text.replace(m.find, m.replace)


class Backend:
    """Base class. Subclasses implement _alloc/_free/write/read, supports, _prepare (prepare() checks the node, then
    calls it), synchronize, device_info."""

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
        size = aligned_size(nbytes)
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
    def supports(self, node: Node) -> str | None:
        """None when the backend runs this node, else the reason it does not (shown as 'unsupported')."""
        raise NotImplementedError

    def kernel_path(self, node: Node) -> str:
        """Which code path of this backend runs the node (kernel entry, compile-time specialisations): what path
        coverage (python -m cases.coverage) counts. A backend with one path per op keeps this default."""
        return node.op.name

    def prepare(self, node: Node) -> Callable[[], None]:
        """Check, then compile/bind once (the runtime's _prepare); the callable enqueues one run (call synchronize()
        to wait). Every path to a kernel passes here: parameters not validated as they are now (a hand-built node, an
        edit since make_node or Graph.op) are validated again, then check_bindings. A validated node costs a few
        attribute tests. Values on the device (ids) are not read here: see compute()."""
        if not getattr(node.params, "checked", False):
            validate_node(node)
        check_bindings(node, self)
        return self._prepare(node)

    def _prepare(self, node: Node) -> Callable[[], None]:
        raise NotImplementedError

    def synchronize(self) -> None:
        pass

    def record(self, nodes: list[Node], inputs: list[Buffer], outputs: list[Buffer]) -> "Replay":
        """What replays `nodes` (checked and bound by reference/plan.py's GraphPlan) in order: `inputs` are written
        before each run, `outputs` read after it. Runtimes with more to gain (one recorded command sequence) override."""
        return Replay(self, nodes)

    def compute(self, node: Node) -> None:
        """Run one node and wait. The synchronous single-node entry point checks everything, whatever built the node:
        full validation, the bindings, and the ids of its id sources (read back: they are small)."""
        validate_node(node)
        check_bindings(node, self)
        reason = self.supports(node)
        if reason:
            raise NotImplementedError(f"{self.name} does not run {node.label()}: {reason}")
        self.check_ids(node)
        self.prepare(node)()
        self.synchronize()

    def check_ids(self, node: Node) -> None:
        """Read the node's id sources back and refuse ids out of range (OpSpec.ids)."""
        ids = node.op.ids
        if ids:
            node.op.check_ids(node.srcs, {i: host_view(self.read(node.srcs[i].buffer), node.srcs[i]) for i in ids},
                              node.name)

    def device_info(self) -> dict:
        return {"device": "?", "driver": "?"}

    def memory_limits(self) -> dict:
        """What this backend's buffers may take, for refusing a run up front: {"device": (bytes, what) of its own
        memory, or None when its buffers live in this machine's RAM with no limit of their own; "max_alloc": (bytes,
        what) of its largest single allocation, or None; "host_memory": whether its buffers take this machine's RAM}.
        Host backends (numpy, ggml) keep this default."""
        return {"device": None, "max_alloc": None, "host_memory": True}

    def library_matmul(self, m: int, n: int, k: int) -> Callable[[], None] | None:
        """The vendor library's f32 [m,k] x [k,n] product (cuBLAS, ...) as the GFLOPS ceiling for MUL_MAT figures;
        None when the host's NumPy/BLAS is the ceiling (CPU drivers)."""
        return None

    # ---- bandwidth ceilings (bench ops) ---------------------------------------------------------------------------
    # What measures this backend's STREAM kernels, named in the records and the report.
    stream_source = "?"
    # The element counts the stream kernels take are multiples of this (a kernel without bounds checks).
    stream_granule = 1

    def stream(self, kernel: str, arrays: list[Buffer], n: int, scalar: float = STREAM_SCALAR) -> Callable[[], None]:
        """A STREAM kernel of this runtime over the first `n` f32 elements of `arrays` = [out, *ins], as a callable
        that enqueues one run (synchronize() waits): "copy" c = a ([c, a]), "triad" a = b + s*c ([a, b, c]), "fill"
        a = s ([a]). Bad arguments are refused before anything is compiled."""
        if kernel not in STREAM_SOURCES:
            raise ValueError(f"unknown stream kernel {kernel!r}; known: {', '.join(STREAM_SOURCES)}")
        if len(arrays) != 1 + STREAM_SOURCES[kernel]:
            raise ValueError(f"stream {kernel} takes {1 + STREAM_SOURCES[kernel]} buffers, got {len(arrays)}")
        if n < 1 or n % self.stream_granule:
            raise ValueError(f"{self.name} stream kernels take a positive multiple of {self.stream_granule} elements, "
                             f"got {n}")
        short = [b.nbytes for b in arrays if b.nbytes < 4 * n]
        if short:
            raise ValueError(f"stream {kernel} over {n} f32 elements needs {4 * n}-byte buffers, got {short[0]} bytes")
        if len({id(b) for b in arrays}) != len(arrays):
            raise ValueError(f"stream {kernel}: its buffers must be distinct")
        return self._stream(kernel, arrays, n, float(scalar))

    def _stream(self, kernel: str, arrays: list[Buffer], n: int, scalar: float) -> Callable[[], None]:
        raise NotImplementedError(f"{self.name} has no stream kernels")

    def last_level_cache_bytes(self) -> int | None:
        """The largest cache between this backend's kernels and its memory: data smaller than this may be read from
        cache, not memory (why an op can beat the STREAM ceiling). This default, for backends whose buffers live in
        host memory and run on its cores, is the host CPU's last-level cache."""
        return host_last_level_cache_bytes()


class Replay:
    """A compiled graph's nodes on a backend (Backend.record). This default keeps each node's prepared launch and
    runs them in order on the runtime's queue, then waits; runtimes override what they do better."""

    timer = "host clock, with a wait after each node"  # what profile() measures with

    def __init__(self, backend: Backend, nodes: list[Node]):
        self.backend, self.nodes = backend, list(nodes)
        self.launches = [backend.prepare(node) for node in self.nodes]

    def run(self, writes: dict[Buffer, np.ndarray]) -> None:
        """Write the inputs (whole-buffer bytes), run every node, wait."""
        for buf, data in writes.items():
            self.backend.write(buf, data)
        for launch in self.launches:
            launch()
        self.backend.synchronize()

    def step(self, index: int) -> None:
        """Run node `index` alone and wait (the node-by-node path)."""
        self.launches[index]()
        self.backend.synchronize()

    def read(self, buf: Buffer) -> np.ndarray:
        return self.backend.read(buf)

    def patch(self, index: int, node: Node) -> None:
        """Node `index` now has other parameters (GraphPlan.set_params)."""
        self.nodes[index] = node
        self.launches[index] = self.backend.prepare(node)

    def profile(self, writes: dict[Buffer, np.ndarray]) -> list[int]:
        """Nanoseconds of each node over one run. This default times each launch and its wait with the host clock."""
        for buf, data in writes.items():
            self.backend.write(buf, data)
        self.backend.synchronize()
        spans = []
        for launch in self.launches:
            start = time.perf_counter_ns()
            launch()
            self.backend.synchronize()
            spans.append(time.perf_counter_ns() - start)
        return spans

    def close(self) -> None:
        pass
