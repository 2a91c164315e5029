"""Graphs of ggml-style ops, built once by model code and run by any backend.

A graph is a list of named nodes in execution order over symbolic tensors. A tensor lives in a Storage (an input,
or the allocation of the node that produced it); views, permutes and reshapes are new descriptors over the same
storage, never nodes. The planner frees each intermediate storage after its last consumer: the peak of live
intermediate bytes is the compute buffer (the figure llama.cpp prints). Node names follow llama.cpp's callback
names where there is one.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from .node import Node, validate_node
from .ops import get_op
from .tensor import Buffer, DType, Tensor, contiguous_strides, host_view, overlap


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

    def plan(self) -> dict:
        """Planned compute buffer: the peak of live intermediate bytes when each is freed after its last use."""
        last = self.last_uses()
        live, peak, at = 0, 0, None
        for i, node in enumerate(self.nodes):
            live += sum(st.nbytes for st in node_storages(node) if st.producer == i)
            if live > peak:
                peak, at = live, node.name
            live -= sum(s.nbytes for s, end in last.items() if end == i and not s.is_input and s.producer is not None)
        return {"compute_bytes": peak, "peak_at": at, "nodes": len(self.nodes),
                "input_bytes": sum(t.storage.nbytes for t in self.inputs.values())}


class _Slots:
    """Names each intermediate's allocation (size, k): the k-th buffer of that size live at once, lowest free k
    first. The names depend on the graph alone, so a backend that pools buffers by name binds the same buffers
    every time the same graph runs (and can keep what it built for them, e.g. Vulkan pipelines)."""

    def __init__(self):
        self.free: dict[int, list[int]] = {}
        self.count: dict[int, int] = {}
        self.held: dict[Storage, tuple[int, int]] = {}

    def take(self, st: Storage) -> tuple[int, int]:
        free = self.free.get(st.nbytes)
        if free:
            k = heapq.heappop(free)
        else:
            k = self.count[st.nbytes] = self.count.get(st.nbytes, 0) + 1
        self.held[st] = (st.nbytes, k)
        return self.held[st]

    def give_back(self, st: Storage) -> None:
        size, k = self.held.pop(st)
        heapq.heappush(self.free.setdefault(size, []), k)


def _bind_nodes(graph: Graph, known: dict[Storage, Buffer]) -> list:
    """Every node bound to placeholder buffers of its storages' sizes (the real ones where known), for support
    checks that look at descriptors and buffer sizes only."""
    placeholders = dict(known)
    bind = lambda t: t.bound(placeholders.setdefault(t.storage, Buffer(t.storage.nbytes)))
    return [Node(get_op(n.op), [bind(s) for s in n.srcs], bind(n.dst), n.params, name=n.name) for n in graph.nodes]


def node_storages(node: GNode) -> list[Storage]:
    """The distinct storages a node touches."""
    seen = []
    for t in node.srcs + [node.dst]:
        if all(t.storage is not s for s in seen):
            seen.append(t.storage)
    return seen


def check_input_ids(graph: Graph, host: dict) -> None:
    """Refuse ids out of range in the graph inputs given as host values (`host`: storage -> its bytes) that feed an
    id source (GET_ROWS' ids: tokens, output rows; MUL_MAT_ID's experts). Ids a node computes (TOP_K) are in range
    by construction, and resident buffers are not read back."""
    for node, i in graph.id_feeds():
        src = node.srcs[i]
        if src.storage in host:
            get_op(node.op).check_ids([s.desc for s in node.srcs], {i: host_view(host[src.storage], src.desc)},
                                      node.name)


def run_graph(backend, graph: Graph, values: dict[str, np.ndarray], keep: str = "outputs",
              resident: dict[str, Buffer] | None = None) -> dict[str, np.ndarray]:
    """Run `graph` on `backend` with input arrays (NumPy shape = reversed ne). Returns the outputs as float64 arrays,
    and with keep='nodes' every node's result too (read back before its storage is freed).

    `resident` binds inputs to buffers already on the backend (weights, recurrent state, KV cache): they are neither
    uploaded nor freed, and in-place ops on them persist across runs."""
    resident = resident or {}
    missing = set(graph.inputs) - set(values) - set(resident)
    if missing:
        raise ValueError(f"graph inputs without values: {sorted(missing)}")
    host: dict[Storage, np.ndarray] = {}
    for name, t in graph.inputs.items():
        if name in resident:
            if resident[name].nbytes < t.storage.nbytes:
                raise ValueError(f"resident buffer for {name!r} holds {resident[name].nbytes} bytes, "
                                 f"the graph needs {t.storage.nbytes}")
            continue
        arr = np.asarray(values[name], dtype=t.dtype.np)
        if np.squeeze(arr).shape != np.squeeze(np.empty(t.desc.shape, dtype=np.uint8)).shape:
            raise ValueError(f"input {name!r} needs numpy shape {t.desc.shape} (size-1 dims optional), got {arr.shape}")
        host[t.storage] = np.ascontiguousarray(arr.reshape(t.desc.shape)).view(np.uint8).reshape(-1)
    check_input_ids(graph, host)
    bound_nodes = _bind_nodes(graph, {t.storage: resident[n] for n, t in graph.inputs.items() if n in resident})
    for node in bound_nodes:  # every node is checked before any kernel runs
        if not getattr(node.params, "checked", False):  # edited since Graph.op validated it
            validate_node(node)
        reason = backend.supports(node)
        if reason:
            raise NotImplementedError(f"{backend.name} does not run {node.name}: {node.label()}: {reason}")
    buffers: dict[Storage, Buffer] = {graph.inputs[n].storage: buf for n, buf in resident.items() if n in graph.inputs}
    frees: dict[int, list[Storage]] = {}  # node index -> intermediates whose last use it is
    for st, end in graph.last_uses().items():
        if not st.is_input and end < len(graph.nodes):
            frees.setdefault(end, []).append(st)
    results: dict[str, np.ndarray] = {}
    slots = _Slots()

    def fetch(t: GTensor) -> np.ndarray:
        raw = backend.read(buffers[t.storage])
        return host_view(raw, t.desc).astype(np.float64)

    try:
        for st, raw in host.items():
            buffers[st] = backend.upload(raw)
        for i, node in enumerate(graph.nodes):
            for st in node_storages(node):
                if st.producer == i:
                    buffers[st] = backend.alloc(st.nbytes, hint=slots.take(st))
            bound = Node(get_op(node.op), [s.bound(buffers[s.storage]) for s in node.srcs],
                         node.dst.bound(buffers[node.dst.storage]), node.params, name=node.name)
            backend.prepare(bound)()  # no wait: runtimes run their queue in order, and reads wait for it
            if keep == "nodes":
                results[node.name] = fetch(node.dst)
            for st in frees.get(i, ()):
                if st in buffers:
                    backend.free(buffers.pop(st))
                    slots.give_back(st)
        backend.synchronize()
        for name, t in graph.outputs.items():
            results[name] = fetch(t)
    finally:
        kept = {id(b) for b in resident.values()}
        for buf in buffers.values():
            if id(buf) not in kept:
                backend.free(buf)
    return results
