"""Runs one case on one backend the way test-backend-ops does, and says exactly what went wrong.

Inputs sit in their own buffers, laid out as the case's Layout says (views at an offset, padded strides, permuted
dims) with NaN in every byte the view does not cover, so a kernel that reads past a stride produces NaN. The output
is poisoned with NaN before the run and framed by guard bytes. After the run: the output is compared with the NumPy
reference by NMSE against the op's bound, NaN and a wrong-signed inf fail, and every byte outside the output (guards,
padding, inputs) must be unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from backends.base import Backend
from backends.numpy_backend import NumpyBackend
from reference.case import Case, Input
from reference.node import Node, make_node
from reference.ops import get_op
from reference.tensor import DType, Tensor, footprint, host_values, host_view, store_values

GUARD = 64  # bytes of sentinel before and after every output
SENTINEL = 0xA5
POISON = 0xFF  # all-ones bytes are NaN in f32 and f16


@dataclass
class Outcome:
    case: Case
    backend: str
    passed: bool
    nmse: float = float("nan")
    bound: float = float("nan")
    problems: list[str] = field(default_factory=list)

    def report(self) -> str:
        status = "OK" if self.passed else "FAIL"
        head = f"{self.backend}: {self.case.label()}: {status} (NMSE {self.nmse:.3g} <= {self.bound:g} required)"
        return "\n".join([head] + ["  - " + p for p in self.problems])


# ---- building buffers ----------------------------------------------------------------------------------------------
@dataclass
class HostTensor:
    raw: np.ndarray  # the whole buffer's bytes
    tensor: Tensor  # descriptor, offset relative to raw


def build_input(inp: Input, values: np.ndarray | None, rng, op, index: int, params: dict,
                shapes: list | None = None) -> HostTensor:
    raw = np.full(inp.backing_bytes() + GUARD, POISON, dtype=np.uint8)
    t = inp.descriptor()
    if values is None:
        values = op.domain(rng, t.shape, index, params, shapes)
    if inp.dtype == DType.I32:
        values = np.round(np.asarray(values))  # integer inputs (indices, SET's i32 words) come from the op's domain
    # a quantized input: the domain's floats encoded by ggml's quantizer (real blocks, finite scales); the reference
    # reads them back dequantized (host_values), so it computes with exactly the weights the kernels read
    store_values(raw, t, values)
    return HostTensor(raw, t)


def output_offset(dtype: DType) -> int:
    """Where an output of `dtype` starts in its buffer: after at least GUARD bytes, on a block boundary."""
    return -(-GUARD // dtype.size) * dtype.size


def build_output(dst: Tensor) -> HostTensor:
    start = output_offset(dst.dtype)
    raw = np.full(start + dst.nbytes() + GUARD, SENTINEL, dtype=np.uint8)
    t = Tensor.new(dst.dtype, dst.ne, offset=start)
    raw[start:start + dst.nbytes()] = POISON
    return HostTensor(raw, t)


@contextmanager
def bound_node(backend: Backend, case: Case):
    """The case's node as the harness builds and binds it on `backend` (values and buffers included), for questions
    asked of the backend about it (supports, kernel_path); its buffers are freed afterwards."""
    srcs, dst, _, params = host_buffers(case)
    bufs = [backend.upload(s.raw) for s in srcs]
    dst_buf = None if dst is None else backend.upload(dst.raw)
    try:
        tensors = [s.tensor.with_buffer(b) for s, b in zip(srcs, bufs)]
        dst_t = tensors[0] if dst is None else dst.tensor.with_buffer(dst_buf)
        yield make_node(case.op, tensors, params, dst=dst_t)
    finally:
        for b in bufs + ([dst_buf] if dst_buf is not None else []):
            backend.free(b)


def host_buffers(case: Case):
    """(host srcs, host dst or None when in place, op, params): everything a run needs before any backend. Bad
    parameters, shapes and ids are refused here, before anything is uploaded."""
    op = get_op(case.op)
    params = op.complete(case.param_dict)  # parameter kinds, before any value is drawn
    if len(case.inputs) != op.n_src:
        raise ValueError(f"{op.name} takes {op.n_src} input(s), the case has {len(case.inputs)}")
    rng = np.random.default_rng(case.seed)
    shapes = [tuple(reversed(inp.ne)) for inp in case.inputs]
    srcs = [build_input(inp, None, rng, op, i, params, shapes) for i, inp in enumerate(case.inputs)]
    node = make_node(op.name, [s.tensor for s in srcs], params)  # validates: ValueError before any kernel runs
    op.check_ids(node.srcs, {i: host_view(srcs[i].raw, srcs[i].tensor) for i in op.ids})  # a domain bug, say
    dst = None if node.inplace else build_output(node.dst)
    return srcs, dst, op, node.params


def execute(backend: Backend, case: Case, srcs, dst, params) -> tuple[list[np.ndarray], np.ndarray, Tensor, str | None]:
    """Upload, run, read back. Returns (src buffers after, dst buffer after, dst descriptor, unsupported reason)."""
    bufs = [backend.upload(s.raw) for s in srcs]
    src_tensors = [s.tensor.with_buffer(b) for s, b in zip(srcs, bufs)]
    if dst is None:
        dst_tensor = src_tensors[0]
        dst_buf = None
    else:
        dst_buf = backend.upload(dst.raw)
        dst_tensor = dst.tensor.with_buffer(dst_buf)
    try:
        node = make_node(case.op, src_tensors, params, dst=dst_tensor)
        reason = backend.supports(node)
        if reason:
            return [], np.empty(0), dst_tensor, reason
        replay = backend.record([node], [], [])  # the compiled-graph path the model and the benchmarks run
        replay.run({})
        replay.close()
        after = [backend.read(b)[:s.raw.nbytes] for s, b in zip(srcs, bufs)]
        out = backend.read(dst_buf)[:dst.raw.nbytes] if dst_buf is not None else after[0]
        return after, out, dst_tensor, None
    finally:
        for b in bufs + ([dst_buf] if dst_buf is not None else []):
            backend.free(b)


_REFERENCE = NumpyBackend()


def run_case(backend: Backend, case: Case) -> Outcome:
    """Run `case` on `backend` and on the reference; compare. Raises NotImplementedError if unsupported."""
    srcs, dst, op, params = host_buffers(case)
    ref_srcs, ref_out, dst_t, _ = execute(_REFERENCE, Case(case.op, case.inputs, case.params, case.seed),
                                          srcs, dst, params)
    got_srcs, got_out, _, reason = execute(backend, case, srcs, dst, params)
    if reason:
        raise NotImplementedError(f"{backend.name} does not support {case.label()}: {reason}")
    outcome = Outcome(case, backend.name, True, bound=op.bound(dst_t))

    # Bytes outside the output must be untouched: guards, input padding, the inputs themselves.
    out_raw = srcs[0].raw if dst is None else dst.raw
    mask = footprint(dst_t, out_raw.nbytes)
    for label, before, after, own_mask in (
            [("output buffer", out_raw, got_out, mask)]
            + [(f"input {i}", s.raw, a, mask if (dst is None and i == 0) else None)
               for i, (s, a) in enumerate(zip(srcs, got_srcs)) if not (dst is None and i == 0)]):
        changed = before != after
        if own_mask is not None:
            changed &= ~own_mask
        if changed.any():
            where = np.flatnonzero(changed)
            outcome.problems.append(f"{label}: {where.size} byte(s) outside the output changed "
                                    f"(first at byte {where[0]}, last at {where[-1]})")

    ref = host_values(ref_out, dst_t)
    got = host_values(got_out, dst_t)
    if op.verify:
        xs = [host_values(s.raw, s.tensor) for s in srcs]
        value_problems = op.verify(got, ref, xs, params)
        outcome.nmse = 0.0 if not value_problems else float("nan")
    else:
        outcome.nmse, value_problems = check_nmse(got, ref, outcome.bound)
        if op.max_rel_error is not None:
            value_problems += check_rel_error(got, ref, op.max_rel_error)
    outcome.problems += value_problems
    outcome.passed = not outcome.problems
    return outcome


F32_TINY = float(np.finfo(np.float32).tiny)


def flush_denormals(x: np.ndarray) -> np.ndarray:
    """Float32 subnormals as zero: OpenCL 1.2, Vulkan and CUDA with -ftz may all flush them, so neither side of a
    comparison may count on them (otherwise SILU(-100) = -4e-42 vs -0 is an NMSE of 1 on a one-element tensor)."""
    return np.where(np.abs(x) < F32_TINY, 0.0, x)


def check_nmse(got: np.ndarray, ref: np.ndarray, bound: float) -> tuple[float, list[str]]:
    """test-backend-ops rules: NaN fails, an inf must match the reference's, then NMSE over the rest (subnormals
    flushed on both sides)."""
    got, ref = flush_denormals(got), flush_denormals(ref)
    problems = []
    if np.isnan(ref).any():
        problems.append(f"the reference produced {np.isnan(ref).sum()} NaN (a reference or domain bug)")
    nan = np.isnan(got) & ~np.isnan(ref)
    if nan.any():
        first = np.argwhere(nan)[0]
        problems.append(f"{nan.sum()} NaN in the output (first at numpy index {tuple(int(i) for i in first)}; "
                        f"an unwritten element is NaN: the output was poisoned)")
    inf_bad = (np.isinf(got) | np.isinf(ref)) & (got != ref) & ~nan
    if inf_bad.any():
        problems.append(f"{inf_bad.sum()} inf where the reference differs")
    finite = np.isfinite(got) & np.isfinite(ref)
    diff = np.sum((got[finite] - ref[finite]) ** 2)
    norm = np.sum(ref[finite] ** 2)
    nmse = float(diff / norm) if norm > 0 else float(diff)
    if not nmse <= bound:
        idx = np.unravel_index(np.argmax(np.where(finite, np.abs(got - ref), -1)), got.shape)
        problems.append(f"NMSE {nmse:.3g} > bound {bound:g}; worst element at numpy index "
                        f"{tuple(int(i) for i in idx)}: got {float(got[idx])!r}, expected {float(ref[idx])!r}")
    return nmse, problems


# Outputs at or below this magnitude are not held to a relative bound: results near float32's subnormal range (a
# driver may flush an intermediate there) and exact zeros (masked softmax entries).
REL_FLOOR = 1e-30


def check_rel_error(got: np.ndarray, ref: np.ndarray, bound: float, floor: float = REL_FLOOR) -> list[str]:
    """Element-wise: |got - ref| / |ref| <= bound wherever both are finite and |ref| > floor. NMSE weighs elements by
    their square, so a kernel that is wrong by 1e-3 on its small outputs (an exp with 11 significant bits, log(1 + u)
    for tiny u, eps misplaced in small rows) passes it; this catches them."""
    got, ref = flush_denormals(got), flush_denormals(ref)
    sel = np.isfinite(got) & np.isfinite(ref) & (np.abs(ref) > floor)
    if not sel.any():
        return []
    rel = np.zeros(ref.shape)
    rel[sel] = np.abs(got[sel] - ref[sel]) / np.abs(ref[sel])  # only finite pairs: inf - inf is no error figure
    idx = np.unravel_index(np.argmax(rel), rel.shape)
    worst = float(rel[idx])
    if worst <= bound:
        return []
    return [f"relative error {worst:.3g} > bound {bound:.3g} at numpy index {tuple(int(i) for i in idx)}: got "
            f"{float(got[idx])!r}, expected {float(ref[idx])!r} ({int((rel > bound).sum())} element(s) over)"]


# ---- graphs, node by node ----------------------------------------------------------------------------------------
class _Tracer(NumpyBackend):
    """The reference backend, keeping each node's buffers before and after it runs."""

    def __init__(self):
        super().__init__()
        self.trace = []

    def prepare(self, node: Node):
        run = super().prepare(node)

        def traced():
            before = {id(t.buffer): t.buffer.handle.copy() for t in node.tensors}
            run()
            self.trace.append((node, before, node.dst.buffer.handle.copy()))
        return traced


def check_graph_nodes(backend: Backend, graph, values: dict) -> list[str]:
    """Run every node of `graph` on `backend` from the reference's own inputs to that node (as test-backend-ops
    compares graphs), and return one line per failing node: name, op, shapes and what went wrong."""
    from reference.plan import run_graph

    tracer = _Tracer()
    run_graph(tracer, graph, values)
    failures = []
    for node, before, ref_after in tracer.trace:
        uploads = dict(before)
        dst_key = id(node.dst.buffer)
        if all(id(s.buffer) != dst_key for s in node.srcs):  # a fresh output: poison it so unwritten elements show
            uploads[dst_key] = np.where(footprint(node.dst, before[dst_key].nbytes), np.uint8(POISON), before[dst_key])
        device = {key: backend.upload(raw) for key, raw in uploads.items()}
        try:
            bind = lambda t: t.with_buffer(device[id(t.buffer)])
            dev_node = Node(node.op, [bind(s) for s in node.srcs], bind(node.dst), node.params, name=node.name)
            reason = backend.supports(dev_node)
            if reason:
                failures.append(f"{node.name} ({dev_node.label()}): unsupported: {reason}")
                continue
            backend.compute(dev_node)
            got_raw = backend.read(device[dst_key])[:ref_after.nbytes]
        finally:
            for buf in device.values():
                backend.free(buf)
        problems = []
        outside = ~footprint(node.dst, ref_after.nbytes)
        if (got_raw[outside] != before[dst_key][outside]).any():
            problems.append("bytes outside the output changed")
        got = host_values(got_raw, node.dst)
        ref = host_values(ref_after, node.dst)
        if node.op.verify:
            xs = [host_values(before[id(s.buffer)], s) for s in node.srcs]
            value_problems = node.op.verify(got, ref, xs, node.params)
        else:
            _, value_problems = check_nmse(got, ref, node.op.bound(node.dst))
        problems += value_problems
        if problems:
            failures.append(f"{node.name} ({dev_node.label()}): " + "; ".join(problems))
    return failures
