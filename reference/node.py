"""A node: one op applied to tensors bound to buffers (or to none yet), validated before any backend sees it.

make_node builds one from an op name, sources and parameters (dst defaults to the op's output descriptor);
validate_node checks a node built by hand or edited since; check_bindings refuses bindings no kernel may be given.
Graphs (reference/graph.py) bind their nodes to buffers and hand them to a backend (backends/base.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from .ops import OpSpec, get_op
from .tensor import Tensor, overlap


@dataclass
class Node:
    """One op application: sources and destination are tensors bound to buffers of the executing backend."""

    op: OpSpec
    srcs: list[Tensor]
    dst: Tensor
    params: dict
    name: str = ""

    @property
    def tensors(self) -> list[Tensor]:
        return [self.dst, *self.srcs]

    @property
    def inplace(self) -> bool:
        """Whether the node writes src0 itself (its op's inplace parameter is set): dst is then src0's view."""
        return self.op.writes_in_place(self.params)

    def label(self) -> str:
        shown = {k: v for k, v in self.params.items() if v is not None}
        args = ",".join([f"ne{i}={list(t.ne)}" for i, t in enumerate(self.srcs)] + [f"{k}={v}" for k, v in shown.items()])
        return f"{self.op.name}({args})"


def make_node(op_name: str, srcs: list[Tensor], params: dict | None = None, dst: Tensor | None = None,
              name: str = "") -> Node:
    """Validate and build a node. `dst` defaults to the op's output descriptor (bind a buffer before running)."""
    op = get_op(op_name)
    full = op.validate(srcs, params or {})
    expected = op.output(srcs, full)
    if dst is None:
        dst = expected
    else:
        _check_dst(op, expected, dst)
    node = Node(op, list(srcs), dst, full, name)
    check_bindings(node)
    return node


def _check_dst(op: OpSpec, expected: Tensor, dst: Tensor) -> None:
    if dst.dtype != expected.dtype or dst.ne != expected.ne:
        raise ValueError(f"{op.name} writes {expected.dtype.label} ne={list(expected.ne)}, "
                         f"dst is {dst.describe()}")


def validate_node(node: Node) -> None:
    """What make_node checks, for a node built by hand or edited since: its parameters and sources, and that dst has
    the op's type and shape. node.params becomes the validated (canonical, checked) parameters."""
    try:
        full = node.op.validate(node.srcs, dict(node.params))
        _check_dst(node.op, node.op.output(node.srcs, full), node.dst)
    except ValueError as err:
        if not node.name:
            raise
        raise ValueError(f"{node.name}: {err}") from None
    node.params = full


def check_bindings(node: Node, backend=None) -> None:
    """Refuse bindings no kernel may be given: a freed buffer; an in-place op whose dst is not exactly src0's view;
    a dst sharing a byte with a source it does not replace. With `backend` (the runtime about to run the node), also
    a tensor bound to no buffer or to another backend's. A few attribute tests per tensor; footprints are compared
    only for tensors of one buffer whose byte ranges intersect."""
    op, dst = node.op, node.dst
    where = f"{node.name}: " if node.name else ""
    for i, t in enumerate(node.tensors):
        buf, role = t.buffer, "dst" if i == 0 else f"src{i - 1}"
        if buf is None:
            if backend is not None:
                raise ValueError(f"{where}{op.name}: {role} is not bound to a buffer")
            continue
        if buf.freed:
            raise ValueError(f"{where}{op.name}: {role} is bound to a freed buffer ({buf.nbytes} bytes)")
        if backend is not None and buf.backend is not backend:
            owner = getattr(buf.backend, "name", "no")
            raise ValueError(f"{where}{op.name}: {role} is a buffer of another backend instance ({owner}), not of "
                             f"this {backend.name} one")
    inplace = node.inplace
    for i, s in enumerate(node.srcs):
        if i == 0 and inplace:
            if not dst.same_view(s):
                raise ValueError(f"{where}{op.name} in place ({op.inplace_param}=True) writes src0 itself: dst must be "
                                 f"exactly src0's view {s.describe()} in its buffer, got {dst.describe()}"
                                 + ("" if s.buffer is dst.buffer else " in another buffer"))
        elif s.buffer is dst.buffer and s.buffer is not None and overlap(s, dst):
            rule = "only src0 is written in place" if inplace else (
                f"{op.name} runs in place only with {op.inplace_param}=True" if op.inplace_param
                else f"{op.name} has no in-place form")
            raise ValueError(f"{where}{op.name}: dst {dst.describe()} overlaps src{i} {s.describe()} in one buffer "
                             f"({rule})")
