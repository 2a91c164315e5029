"""The reference backend: runs each registry record's NumPy reference on host bytes, honouring every view."""
from __future__ import annotations

import numpy as np

from reference.node import Node
from reference.tensor import Buffer, host_values, store_values

from .base import Backend

TRIAD_BLOCK = 1 << 16  # elements of the triad's scratch block: 256 KiB, stays in cache


class HostMemoryBackend(Backend):
    """Buffers in host memory as NumPy uint8 arrays (the reference and ggml backends)."""

    def _alloc(self, nbytes):
        return np.zeros(nbytes, dtype=np.uint8)

    def write(self, buf: Buffer, data: np.ndarray) -> None:
        buf.handle[:] = data.view(np.uint8).reshape(-1)

    def read(self, buf: Buffer) -> np.ndarray:
        return buf.handle.copy()

    stream_source = "NumPy on host memory (np.copyto, a blocked triad, ndarray.fill)"

    def _stream(self, kernel, arrays, n, scalar):
        out, *ins = [b.handle[:4 * n].view(np.float32) for b in arrays]
        if kernel == "copy":
            return lambda: np.copyto(out, ins[0])
        if kernel == "fill":
            return lambda: out.fill(scalar)
        b, c = ins
        scaled = np.empty(min(n, TRIAD_BLOCK), dtype=np.float32)

        def triad():
            # s*c into a cache-sized scratch block, then b + that into a: memory sees b and c read, a written once
            for start in range(0, n, TRIAD_BLOCK):
                end = min(n, start + TRIAD_BLOCK)
                part = scaled[:end - start]
                np.multiply(c[start:end], np.float32(scalar), out=part)
                np.add(b[start:end], part, out=out[start:end])
        return triad


class NumpyBackend(HostMemoryBackend):
    name = "numpy"

    def supports(self, node: Node) -> str | None:
        return None

    def _prepare(self, node: Node):
        def run():
            # quantized sources dequantized (ggml's to_float): the reference is "dequantized weights x floats"
            xs = [host_values(s.buffer.handle, s) for s in node.srcs]
            out = np.asarray(node.op.reference(xs, node.params))
            with np.errstate(over="ignore", invalid="ignore"):
                store_values(node.dst.buffer.handle, node.dst, out.reshape(node.dst.shape))
        return run

    def device_info(self) -> dict:
        return {"device": "host CPU (NumPy)", "driver": f"numpy {np.__version__}"}


def create() -> NumpyBackend:
    return NumpyBackend()
