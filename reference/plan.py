"""A graph compiled once for one backend and replayed: what tests, parity and benchmarks all run.

Compiling does every per-node job once: each node is validated and support-checked, the planner's buffers
(Graph.assign_buffers) and the non-resident inputs are allocated, every node is bound to them, and the backend's
`record` builds what replays the bound nodes (OpenCL: a kernel object per node with its arguments set; Vulkan: one
recorded command sequence with a barrier between dependent dispatches; the others: each node's prepared launch).
`run` then writes the inputs, replays and reads the outputs, with no per-node Python beyond what the runtime needs.

What changes between runs of one compiled graph: input values (tokens, output rows, masks), and parameters patched
with `set_params` (the KV cache's write offset of a decode step, reference/model.py position_patches), validated
like a new node. `run(keep='nodes')` steps node by node, waiting and reading each result back: the node-by-node path
the replay is checked against; `run(timings=...)` times each node with the runtime's device timer where it has one.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, GTensor, Storage
from .node import Node, validate_node
from .ops import get_op
from .tensor import Buffer, host_view


def host_inputs(graph: Graph, values: dict, resident: dict) -> dict[str, np.ndarray]:
    """The bytes of each input not resident on the backend, from `values` (NumPy shape = reversed ne, size-1 dims
    optional). Refused before anything is allocated: a missing input, a wrong shape, a resident buffer too small, and
    ids out of range in an input that feeds an id source (GET_ROWS' tokens and output rows, MUL_MAT_ID's experts; ids
    a node computes, TOP_K's, are in range by construction, and resident buffers are not read back)."""
    missing = set(graph.inputs) - set(values) - set(resident)
    if missing:
        raise ValueError(f"graph inputs without values: {sorted(missing)}")
    host: dict[str, np.ndarray] = {}
    for name, t in graph.inputs.items():
        if name in resident:
            if resident[name].nbytes < t.storage.nbytes:
                raise ValueError(f"resident buffer for {name!r} holds {resident[name].nbytes} bytes, "
                                 f"the graph needs {t.storage.nbytes}")
            continue
        arr = np.asarray(values[name], dtype=t.dtype.np)
        if np.squeeze(arr).shape != np.squeeze(np.empty(t.desc.shape, dtype=np.uint8)).shape:
            raise ValueError(f"input {name!r} needs numpy shape {t.desc.shape} (size-1 dims optional), got {arr.shape}")
        host[name] = np.ascontiguousarray(arr.reshape(t.desc.shape)).view(np.uint8).reshape(-1)
    by_storage = {graph.inputs[name].storage: raw for name, raw in host.items()}
    for node, i in graph.id_feeds():
        src = node.srcs[i]
        if src.storage in by_storage:
            get_op(node.op).check_ids([s.desc for s in node.srcs], {i: host_view(by_storage[src.storage], src.desc)},
                                      node.name)
    return host


class GraphPlan:
    """`graph` compiled for `backend`; `resident` binds inputs to buffers already there (weights, recurrent state, KV
    cache): neither uploaded nor freed, and in-place ops on them persist across runs. Holds its buffers until close().
    `compute_bytes` is what the backend's allocator counted for the planned buffers (= graph.plan()'s figure)."""

    def __init__(self, backend, graph: Graph, resident: dict[str, Buffer] | None = None):
        self.backend, self.graph = backend, graph
        self.resident = dict(resident or {})
        for name, buf in self.resident.items():
            if name in graph.inputs and buf.nbytes < graph.inputs[name].storage.nbytes:
                raise ValueError(f"resident buffer for {name!r} holds {buf.nbytes} bytes, "
                                 f"the graph needs {graph.inputs[name].storage.nbytes}")
        assignment = graph.assign_buffers()
        known = {graph.inputs[n].storage: b for n, b in self.resident.items() if n in graph.inputs}
        placeholders = [Buffer(size) for size in assignment.sizes]
        self._check(self._bind(lambda st: known.get(st) or (placeholders[assignment.of[st]] if st in assignment.of
                                                             else Buffer(st.nbytes))))
        self._owned: list[Buffer] = []
        self.replay = None
        try:
            self.inputs = {name: self._alloc(t.storage.nbytes, ("input", name))
                           for name, t in graph.inputs.items() if name not in self.resident}
            live = backend.live_bytes
            planned = [self._alloc(size, ("planned", k, size)) for k, size in enumerate(assignment.sizes)]
            self.compute_bytes = backend.live_bytes - live
            self.buffers: dict[Storage, Buffer] = {**known, **{graph.inputs[n].storage: b for n, b in self.inputs.items()},
                                                   **{st: planned[k] for st, k in assignment.of.items()}}
            self.nodes = self._bind(self.buffers.__getitem__)
            self.replay = backend.record(self.nodes, list(self.inputs.values()),
                                         [self.buffers[t.storage] for t in graph.outputs.values()])
        except BaseException:
            self.close()
            raise

    def _alloc(self, nbytes: int, hint) -> Buffer:
        buf = self.backend.alloc(nbytes, hint=hint)
        self._owned.append(buf)
        return buf

    def _bind(self, buffer_of) -> list[Node]:
        bind = lambda t: t.bound(buffer_of(t.storage))  # noqa: E731
        return [Node(get_op(n.op), [bind(s) for s in n.srcs], bind(n.dst), n.params, name=n.name)
                for n in self.graph.nodes]

    def _check(self, nodes: list[Node]) -> None:
        """Every node is checked before anything is allocated or run."""
        for node in nodes:
            if not getattr(node.params, "checked", False):  # edited since Graph.op validated it
                validate_node(node)
            reason = self.backend.supports(node)
            if reason:
                raise NotImplementedError(f"{self.backend.name} does not run {node.name}: {node.label()}: {reason}")

    # ---- running --------------------------------------------------------------------------------------------------
    def run(self, values: dict, keep: str = "outputs", timings: list | None = None) -> dict[str, np.ndarray]:
        """The outputs as float64 arrays (NumPy shape = reversed ne); with keep='nodes' every node's result too, the
        graph stepped node by node. Given a `timings` list, the run is a profiled one (each node timed by the
        backend's timer, Replay.timer) and appends (node name, op, nanoseconds) per node."""
        return self.run_host(host_inputs(self.graph, values, self.resident), keep, timings)

    def run_host(self, host: dict[str, np.ndarray], keep: str = "outputs",
                 timings: list | None = None) -> dict[str, np.ndarray]:
        """run() with the inputs already checked and turned to bytes (host_inputs)."""
        if keep not in ("outputs", "nodes"):
            raise ValueError(f"keep must be 'outputs' or 'nodes', got {keep!r}")
        if keep == "nodes" and timings is not None:
            raise ValueError("a profiled run replays the graph; keep='nodes' steps it: choose one")
        writes = {self.inputs[name]: self._padded(name, raw) for name, raw in host.items()}
        results = {}
        if timings is not None:
            spans = self.replay.profile(writes)
            timings += [(n.name, n.op, ns) for n, ns in zip(self.graph.nodes, spans)]
        elif keep == "nodes":
            for buf, data in writes.items():
                self.backend.write(buf, data)
            for i, node in enumerate(self.graph.nodes):
                self.replay.step(i)
                results[node.name] = self._fetch(node.dst)
        else:
            self.replay.run(writes)
        for name, t in self.graph.outputs.items():
            results[name] = self._fetch(t)
        return results

    def _padded(self, name: str, raw: np.ndarray) -> np.ndarray:
        buf = self.inputs[name]
        if raw.nbytes == buf.nbytes:
            return raw
        padded = np.zeros(buf.nbytes, dtype=np.uint8)
        padded[:raw.nbytes] = raw
        return padded

    def _fetch(self, t: GTensor) -> np.ndarray:
        return host_view(self.replay.read(self.buffers[t.storage]), t.desc).astype(np.float64)

    def set_params(self, index: int, **params) -> None:
        """Change parameters of node `index` between runs (validated as a new node would be); the backend patches
        only that node."""
        gnode = self.graph.nodes[index]
        spec = get_op(gnode.op)
        try:
            full = spec.validate([s.desc for s in gnode.srcs], {**gnode.params, **params})
        except ValueError as err:
            raise ValueError(f"{gnode.name}: {spec.name} {params}: {err}") from err
        if spec.output([s.desc for s in gnode.srcs], full) != gnode.dst.desc and not spec.writes_in_place(full):
            raise ValueError(f"{gnode.name}: {params} changes the node's output; compile a new graph instead")
        gnode.params = full
        old = self.nodes[index]
        node = Node(old.op, old.srcs, old.dst, full, name=old.name)
        reason = self.backend.supports(node)
        if reason:
            raise NotImplementedError(f"{self.backend.name} does not run {node.name}: {node.label()}: {reason}")
        self.nodes[index] = node
        self.replay.patch(index, node)

    def close(self) -> None:
        if self.replay is not None:
            self.replay.close()
            self.replay = None
        for buf in self._owned:
            self.backend.free(buf)
        self._owned = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_graph(backend, graph: Graph, values: dict[str, np.ndarray], keep: str = "outputs",
              resident: dict[str, Buffer] | None = None) -> dict[str, np.ndarray]:
    """Compile, run once, release (GraphPlan). The inputs are checked before anything is compiled or allocated."""
    host = host_inputs(graph, values, resident or {})
    with GraphPlan(backend, graph, resident) as plan:
        return plan.run_host(host, keep)
