"""ggml-python plumbing: tensors that are views on our NumPy buffers, one small context and graph per prepared node,
each op called as its record's GgmlCall describes (reference/ops/<family>.py, with what ggml 0.15.3 asserts or
silently misreads), and the inputs on which ggml's own float32 formula is known to be inexact."""
from __future__ import annotations

import ctypes
import weakref

import numpy as np

from reference.ops.ggml_call import Dst, EnumName, Src, mul_mat_needs_cont
from reference.tensor import DType, Tensor, host_view, overlap

VERSION = "0.15.3"
PY_VERSION = "0.0.45"
_ggml = None


def init():
    """Import the bindings (once) and initialise the CPU backend's tables (f16 conversion)."""
    global _ggml, VERSION, PY_VERSION
    if _ggml is None:
        import ggml as lib
        lib.ggml_cpu_init()
        _ggml = lib
        VERSION = lib.ggml_version().decode()
        PY_VERSION = getattr(lib, "__version__", PY_VERSION)
    return _ggml


def _ggml_type(dtype: DType) -> int:
    """ggml's type of ours: the member names are ggml's (GGML_TYPE_Q4_K), and the block layouts the same (checked at
    import of reference/tensor.py against reference/quants.py, which tests/test_quants.py checks against ggml's)."""
    return getattr(init(), f"GGML_TYPE_{dtype.name}")


# ---- where ggml runs but is known to be less accurate than the reference -----------------------------------------
# ggml's float32 formulas for two unary ops lose all accuracy on a range of inputs, while the float64 references are
# exact there. A tensor whose values all sit in that range fails the NMSE bound on ggml (the drawn cases find one:
# a single element near -71 for SOFTPLUS). These cases are refused, naming the finding, from the input values: we
# evaluate ggml's own float32 formula in NumPy float32 and refuse when its NMSE against the exact value (subnormals
# flushed, as the harness compares) would exceed a tenth of the op's bound.
def _f32_formula(op: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    one = np.float32(1)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        if op == "SOFTPLUS":  # unary-ops.cpp op_softplus: (x > 20.0f) ? x : logf(1.0f + expf(x))
            return np.where(x > 20, x, np.log(one + np.exp(x))).astype(np.float64)
        return (x / (one + np.exp(-x))).astype(np.float64)  # vec.h ggml_silu_f32: x/(1.0f + expf(-x))


FORMULA_FINDINGS = {
    "SOFTPLUS": "ggml 0.15.3 evaluates softplus as logf(1.0f + expf(x)) in float32 (unary-ops.cpp op_softplus): "
                "1 + e^x rounds to 1 for x < -16.6, so it returns 0 where the answer is e^x, and below about -8 its "
                "absolute error is ~6e-8; the reference (float64 log1p) is right",
    "SILU": "ggml 0.15.3 evaluates silu as x/(1.0f + expf(-x)) in float32: expf(-x) overflows to inf for "
            "x < -88.72, so it returns -0 where the answer x*e^x is still a normal float down to about -91.8; "
            "the reference (float64) is right",
}


def _formula_refusal(node) -> str | None:
    op = node.op.name
    if op not in FORMULA_FINDINGS:
        return None
    src = node.srcs[0]
    if src.buffer is None or not isinstance(src.buffer.handle, np.ndarray):
        return None
    x = host_view(src.buffer.handle, src).astype(np.float64)
    if not np.isfinite(x).all():
        return None
    exact = np.asarray(node.op.reference([x], node.params), dtype=np.float32).astype(np.float64)
    approx = _f32_formula(op, x)
    tiny = float(np.finfo(np.float32).tiny)
    exact, approx = (np.where(np.abs(v) < tiny, 0.0, v) for v in (exact, approx))
    finite = np.isfinite(exact) & np.isfinite(approx)
    norm = np.sum(exact[finite] ** 2)
    err = np.sum((approx[finite] - exact[finite]) ** 2)
    nmse = err / norm if norm > 0 else err
    if nmse > node.op.nmse / 10:
        return (f"{FORMULA_FINDINGS[op]}; on these inputs ggml's formula gives NMSE {nmse:.3g} against the exact "
                f"values (bound {node.op.nmse:g})")
    return None


def refusal(node) -> str | None:
    try:
        init()
    except Exception as e:  # pragma: no cover - the probe already imported it
        return f"ggml-python not importable: {e}"
    fails = node.op.ggml.rules(node.srcs, node.params)  # what ggml asserts or misreads (the op's family module)
    if fails:
        return "; ".join(fails)
    return _formula_refusal(node)


# ---- building ----------------------------------------------------------------------------------------------------
def _addr(t: Tensor) -> int:
    return t.buffer.handle.ctypes.data + t.offset


class Ctx:
    """One no_alloc ggml context: tensors are views on NumPy memory we hold."""

    def __init__(self, n_tensors: int = 24, n_nodes: int = 16):
        lib = init()
        self.n_nodes = n_nodes
        mem = n_tensors * lib.ggml_tensor_overhead() + lib.ggml_graph_overhead_custom(n_nodes, False) + 4096
        params = lib.ggml_init_params(mem_size=mem, mem_buffer=None, no_alloc=True)
        self.ctx = lib.ggml_init(params)
        if not self.ctx:
            raise MemoryError("ggml_init failed")
        self.keep = []  # NumPy arrays whose memory ggml tensors point at
        self._fin = weakref.finalize(self, lib.ggml_free, self.ctx)

    def view(self, t: Tensor):
        """A ggml tensor over our buffer: data = buffer + offset, ne and nb (bytes) as the descriptor."""
        lib = init()
        g = lib.ggml_new_tensor_4d(self.ctx, _ggml_type(t.dtype), *t.ne)
        c = g.contents
        for i in range(4):
            c.nb[i] = t.nb[i]
        c.data = _addr(t)
        self.keep.append(t.buffer.handle)
        return g

    def scratch(self, g, nbytes: int | None = None):
        lib = init()
        n = lib.ggml_nbytes(g) if nbytes is None else nbytes
        arr = np.empty(n + 128, dtype=np.uint8)
        addr = arr.ctypes.data
        g.contents.data = addr + (-addr) % 64
        self.keep.append(arr)
        return arr

    def free(self):
        self._fin()


def _call(lib, ctx, node, srcs: list, target):
    """The node's ggml call, from its record's GgmlCall: ggml tensors for the sources, `target` for a Dst argument."""
    call = node.op.ggml
    args = []
    for a in call.arguments(node.op.param_kinds, node.params):
        if isinstance(a, Src):
            args.append(srcs[a.i])
        elif isinstance(a, Dst):
            args.append(target)
        elif isinstance(a, EnumName):
            args.append(getattr(lib, a.name))
        else:
            args.append(a.value)
    return getattr(lib, call.function(node.inplace))(ctx, *args)


class Prepared:
    """The callable prepare() returns: one graph, planned once, run on every call."""

    def __init__(self, node, n_threads: int):
        lib = init()
        self.node = node
        dst = node.dst
        op = node.op
        call = op.ggml
        self.c = Ctx()
        ctx = self.c.ctx
        self.copy_out = None
        # MUL_MAT's operands that ggml_mul_mat cannot take as they are go through ggml_cont first (GgmlCall.staged)
        srcs = [lib.ggml_cont(ctx, self.c.view(t)) if i in call.staged and mul_mat_needs_cont(t, i == 0)
                else self.c.view(t) for i, t in enumerate(node.srcs)]
        # The result may go straight to dst when dst is contiguous and shares no bytes with a source.
        apart = not any(s.buffer is dst.buffer and overlap(dst, s) for s in node.srcs)
        direct = dst.is_contiguous() and apart
        placed = node.inplace  # whether the result's memory is already where it belongs
        target = None
        if any(isinstance(a, Dst) for a in call.args):  # the op writes the tensor it is given (ggml_cpy): any layout
            if apart:
                target = self.c.view(dst)
            else:
                target = lib.ggml_new_tensor_4d(ctx, _ggml_type(dst.dtype), *dst.ne)
                self.copy_out = (target, self.c.scratch(target))
            placed = True
        if call.writes_src0:  # the op always writes src0 (ggml_clamp): it gets a copy, placed at dst where it can be
            copy = lib.ggml_cont(ctx, srcs[0])
            if direct:
                copy.contents.data = _addr(dst)
                self.c.keep.append(dst.buffer.handle)
            else:
                self.copy_out = (copy, self.c.scratch(copy))
            srcs[0] = copy
            placed = True
        result = _call(lib, ctx, node, srcs, target)
        if not result:
            raise RuntimeError(f"ggml returned no tensor for {node.label()}")
        r = result.contents
        got_ne = tuple(r.ne[i] for i in range(4))
        if got_ne != tuple(dst.ne):
            raise RuntimeError(f"ggml's {op.name} result has ne={list(got_ne)}, the node's dst {list(dst.ne)}")
        if node.inplace and r.data != _addr(dst):
            raise RuntimeError(f"ggml's in-place {op.name} result does not alias src0")
        if not placed:
            if direct:
                r.data = _addr(dst)
                self.c.keep.append(dst.buffer.handle)
            else:
                self.copy_out = (result, self.c.scratch(result))
        self.graph = lib.ggml_new_graph_custom(ctx, self.c.n_nodes, False)
        lib.ggml_build_forward_expand(self.graph, result)
        for i in range(lib.ggml_graph_n_nodes(self.graph)):  # intermediates (a MUL_MAT operand's ggml_cont)
            n = lib.ggml_graph_node(self.graph, i)
            if not n.contents.data:
                self.c.scratch(n)
        self.plan = lib.ggml_graph_plan(self.graph, n_threads, None)
        self.work = np.empty(max(self.plan.work_size, 1) + 64, dtype=np.uint8)
        self.plan.work_data = ctypes.cast(self.work.ctypes.data, ctypes.POINTER(ctypes.c_uint8))

    def __call__(self):
        lib = init()
        status = lib.ggml_graph_compute(self.graph, ctypes.byref(self.plan))
        if status != 0:
            raise RuntimeError(f"ggml_graph_compute returned status {status} for {self.node.label()}")
        if self.copy_out is not None:
            g, arr = self.copy_out
            dst = self.node.dst
            result = Tensor.new(dst.dtype, dst.ne, offset=g.contents.data - arr.ctypes.data)  # contiguous, in scratch
            host_view(dst.buffer.handle, dst)[...] = host_view(arr, result)
