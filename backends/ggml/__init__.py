"""The real ggml CPU implementation of every op (ggml-python 0.0.45 = standalone ggml 0.15.3), run through the same
conformance tests as our kernels: a second opinion on the NumPy references.

Buffers are host NumPy uint8 arrays (as the reference backend). prepare(node) builds, once, a small no_alloc ggml
context whose source tensors are views on our buffers (data = buffer address + offset, ne/nb = the node's), calls
the ggml op with the node's parameters, gives every graph node that owns memory either the destination's own bytes
(when the destination is contiguous) or a NumPy scratch array, and returns a callable that runs ggml_graph_compute
(plan + our own work buffer, so repeated runs never grow the context) and, when the result went to scratch, copies
it into the destination view.

ggml asserts (which abort the whole process) and layouts its kernels silently misread are refused in supports()
with the precondition that fails, quoted from ggml 0.15.3's source (src/ggml.c, src/ggml-cpu/ops.cpp,
unary-ops.cpp, binary-ops.cpp, ggml-cpu.c). One exception: a MUL_MAT operand that ggml_mul_mat cannot take (a
transposed a, or rows that are not dense) is first copied by ggml_cont inside the same ggml graph, as llama.cpp's
graphs do; the copy is exact, so the product is still ggml's. SOFTPLUS and SILU inputs on which ggml's float32
formula is known to lose all accuracy are refused, naming the finding (see _ggml.FORMULA_FINDINGS).
"""
from __future__ import annotations

from reference.node import Node

from ..numpy_backend import HostMemoryBackend
from . import _ggml as G

N_THREADS = 2


class GgmlBackend(HostMemoryBackend):
    name = "ggml"

    def __init__(self):
        super().__init__()
        G.init()

    # ggml has no STREAM kernel of its own (its CPY and ADD are ops we measure, and a triad would be two of them), and
    # its buffers are host memory read by the host's cores: the host's NumPy STREAM kernels are its ceiling.
    stream_source = "NumPy on host memory (ggml's buffers are host memory; ggml has no fused triad)"

    def supports(self, node: Node) -> str | None:
        return G.refusal(node)

    def _prepare(self, node: Node):
        reason = self.supports(node)
        if reason:
            raise NotImplementedError(f"ggml does not run {node.label()}: {reason}")
        return G.Prepared(node, N_THREADS)

    def device_info(self) -> dict:
        return {"device": f"ggml CPU (ggml-python {G.PY_VERSION}, ggml {G.VERSION})",
                "driver": f"ggml {G.VERSION} CPU backend, {N_THREADS} threads"}


def create() -> GgmlBackend:
    return GgmlBackend()
