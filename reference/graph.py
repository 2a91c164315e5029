"""Graphs of ggml-style ops, built once by model code and run by any backend.

A graph is a list of named nodes in execution order over symbolic tensors. A tensor lives in a Storage (an input,
or the allocation of the node that produced it); views, permutes and reshapes are new descriptors over the same
storage, never nodes. The planner packs the intermediates into a few buffers, each reused after its last consumer:
their total is the compute buffer (the figure llama.cpp prints). reference/plan.py compiles a graph for a backend and
runs it. Node names follow llama.cpp's callback names where there is one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ops import get_op
from .tensor import Buffer, DType, Tensor, aligned_size, contiguous_strides, overlap


@dataclass(eq=False)
class Storage:
    name: str
    nbytes: int
    is_input: bool = False
    producer: int | None = None  # index of the node that allocates it


@dataclass(frozen=True, eq=False)
class GTensor:
    """A symbolic tensor: a descriptor (offset relative to its storage) plus the storage it lives in."""

    desc: Tensor
    storage: Storage

    @property
    def ne(self):
        return self.desc.ne

    @property
    def dtype(self):
        return self.desc.dtype

    def bound(self, buffer: Buffer) -> Tensor:
        return self.desc.with_buffer(buffer)


@dataclass(eq=False)
class GNode:
    name: str
    op: str
    srcs: list[GTensor]
    dst: GTensor
    params: dict


@dataclass
class Graph:
    nodes: list[GNode] = field(default_factory=list)
    inputs: dict[str, GTensor] = field(default_factory=dict)
    outputs: dict[str, GTensor] = field(default_factory=dict)
    _id_feeds: tuple | None = field(default=None, repr=False, compare=False)  # (node count, id_feeds())

    # ---- building -------------------------------------------------------------------------------------------------
    def input(self, name: str, ne, dtype: DType = DType.F32) -> GTensor:
        if name in self.inputs:
            raise ValueError(f"input {name!r} defined twice")
        t = Tensor.new(dtype, ne)
        g = GTensor(t, Storage(name, t.nbytes(), is_input=True))
        self.inputs[name] = g
        return g

    @staticmethod
    def new_tensor(name: str, ne, dtype: DType = DType.F32) -> GTensor:
        """ggml_new_tensor: uninitialised memory for an in-place op (FILL) to write; allocated by the planner like
        any intermediate, from the first node that touches it."""
        t = Tensor.new(dtype, ne)
        return GTensor(t, Storage(name, t.nbytes()))

    def op(self, op_name: str, *srcs: GTensor, name: str = "", **params) -> GTensor:
        spec = get_op(op_name)
        full = spec.validate([s.desc for s in srcs], params)
        name = name or f"{spec.name.lower()}-{len(self.nodes)}"
        for s in srcs:
            if s.storage.producer is None and not s.storage.is_input:  # a new_tensor, first touched here
                s.storage.producer = len(self.nodes)
        if spec.writes_in_place(full):
            for i, s in enumerate(srcs[1:], 1):  # src0 is written while the others are read
                if s.storage is srcs[0].storage and overlap(s.desc, srcs[0].desc):
                    raise ValueError(f"{name}: {spec.name}: src{i} {s.desc.describe()} overlaps src0 "
                                     f"{srcs[0].desc.describe()}, which {spec.name} writes in place")
            dst = GTensor(srcs[0].desc, srcs[0].storage)
        else:
            out = spec.output([s.desc for s in srcs], full)
            dst = GTensor(out, Storage(name, out.nbytes(), producer=len(self.nodes)))
        self.nodes.append(GNode(name, spec.name, list(srcs), dst, full))
        return dst

    def output(self, name: str, t: GTensor) -> GTensor:
        self.outputs[name] = t
        return t

    # ---- views (no nodes) -------------------------------------------------------------------------------------------
    @staticmethod
    def view(t: GTensor, ne, nb=None, offset: int = 0) -> GTensor:
        return GTensor(t.desc.view(ne, nb, offset), t.storage)

    @staticmethod
    def permute(t: GTensor, *axes: int) -> GTensor:
        return GTensor(t.desc.permute(*axes), t.storage)

    @staticmethod
    def transpose(t: GTensor) -> GTensor:
        return GTensor(t.desc.transpose(), t.storage)

    @staticmethod
    def reshape(t: GTensor, ne) -> GTensor:
        if not t.desc.is_contiguous():
            raise ValueError(f"reshape needs a contiguous tensor, got {t.desc.describe()} (insert a CONT)")
        if int(np.prod(ne)) != t.desc.nelements:
            raise ValueError(f"reshape {list(t.ne)} -> {list(ne)} changes the element count")
        return GTensor(Tensor(t.dtype, tuple(ne) + (1,) * (4 - len(ne)), contiguous_strides(t.dtype, ne),
                              t.desc.offset), t.storage)

    def id_feeds(self) -> list[tuple[GNode, int]]:
        """(node, src index) for each id source (OpSpec.ids) that reads a graph input: GET_ROWS' tokens and output
        rows, MUL_MAT_ID's experts when given. Found once per graph (again only after nodes are added)."""
        if self._id_feeds is None or self._id_feeds[0] != len(self.nodes):
            feeds = [(n, i) for n in self.nodes for i in get_op(n.op).ids if n.srcs[i].storage.is_input]
            self._id_feeds = (len(self.nodes), feeds)
        return self._id_feeds[1]

    # ---- planning ---------------------------------------------------------------------------------------------------
    def last_uses(self) -> dict[Storage, int]:
        """Index of the last node reading each intermediate storage (graph outputs live to the end)."""
        last: dict[Storage, int] = {}
        for i, node in enumerate(self.nodes):
            for s in node.srcs + [node.dst]:
                last[s.storage] = i
        for t in self.outputs.values():
            last[t.storage] = len(self.nodes)
        return last

    def assign_buffers(self) -> "BufferAssignment":
        """Intermediates packed into a few buffers, each reused once its last reader has run (ggml-alloc's job): a
        new intermediate takes the smallest free buffer that holds it, else the largest free one grown to hold it,
        else a new buffer. The buffers' total is the compute buffer a compiled graph allocates (reference/plan.py);
        the live peak (intermediates alive at once) is the floor no assignment beats."""
        last = self.last_uses()
        ends: dict[int, list[Storage]] = {}
        for st, end in last.items():
            if not st.is_input and st.producer is not None and end < len(self.nodes):
                ends.setdefault(end, []).append(st)
        sizes: list[int] = []
        free: list[int] = []
        of: dict[Storage, int] = {}
        live = peak = 0
        peak_at = None
        for i, node in enumerate(self.nodes):
            for st in node_storages(node):
                if st.producer != i:
                    continue
                need = aligned_size(st.nbytes)
                fits = [k for k in free if sizes[k] >= need]
                if fits or free:
                    k = min(fits, key=sizes.__getitem__) if fits else max(free, key=sizes.__getitem__)
                    free.remove(k)
                    sizes[k] = max(sizes[k], need)
                else:
                    k = len(sizes)
                    sizes.append(need)
                of[st] = k
                live += need
            if live > peak:
                peak, peak_at = live, node.name
            for st in ends.get(i, ()):
                free.append(of[st])
                live -= aligned_size(st.nbytes)
        return BufferAssignment(sizes, of, peak, peak_at)

    def plan(self) -> dict:
        """Planned compute buffer: the total of assign_buffers(), what a compiled graph allocates for its
        intermediates; with the live peak it cannot go below and the node where that peak is."""
        a = self.assign_buffers()
        return {"compute_bytes": sum(a.sizes), "live_peak_bytes": a.live_peak, "peak_at": a.peak_at,
                "buffers": len(a.sizes), "nodes": len(self.nodes),
                "input_bytes": sum(t.storage.nbytes for t in self.inputs.values())}


@dataclass
class BufferAssignment:
    """Graph.assign_buffers: planned buffer k holds sizes[k] bytes; intermediate storage st lives in buffer of[st]."""

    sizes: list[int]
    of: dict[Storage, int]
    live_peak: int
    peak_at: str | None


def node_storages(node: GNode) -> list[Storage]:
    """The distinct storages a node touches."""
    seen = []
    for t in node.srcs + [node.dst]:
        if all(t.storage is not s for s in seen):
            seen.append(t.storage)
    return seen
