"""Vulkan's quantized kernels (backends/vulkan/quants.glsl) beyond what the registry's cases check by NMSE: the
dequantizer bit for bit against reference.quants.dequantize on random blocks (every bit of every quant field drawn,
not only what a quantizer writes), read through GET_ROWS at both block alignments; CPY's quantizer byte for byte
against ggml's (reference.quants.quantize), ties and all; and the types and layouts the backend refuses."""
import numpy as np
import pytest

from conftest import device_backend
from reference.node import Node, make_node
from reference.quants import dequantize, quantize
from reference.tensor import QUANTIZED, DType, Tensor

from .test_quants import random_blocks

READ = list(QUANTIZED)


def _gather(vk, dtype: DType, raw: np.ndarray, ids: np.ndarray, row_offset: int, dst_offset: int) -> np.ndarray:
    """GET_ROWS of rows `ids` from a table of `raw` blocks (uint8 [rows, row bytes]) placed `row_offset` blocks into its
    buffer, into a dst `dst_offset` floats into its own; the f32 rows the kernel wrote."""
    rows, row_bytes = raw.shape
    ne0 = row_bytes // dtype.type_size * dtype.block
    host = np.zeros(row_offset * dtype.type_size + raw.nbytes, np.uint8)
    host[row_offset * dtype.type_size:] = raw.reshape(-1)
    a = Tensor.new(dtype, (ne0, rows), vk.upload(host), offset=row_offset * dtype.type_size)
    idx = Tensor.new(DType.I32, (len(ids),), vk.upload(ids.astype(np.int32).view(np.uint8)))
    out = Tensor.new(DType.F32, (ne0, len(ids)), vk.alloc(4 * (dst_offset + ne0 * len(ids))), offset=4 * dst_offset)
    node = make_node("GET_ROWS", [a, idx], dst=out)
    assert ("DST_VEC4" in vk.kernel_path(node)) == (dst_offset == 0)  # both get_rows.comp stores
    vk.compute(node)
    return vk.read(out.buffer)[4 * dst_offset:out.offset + out.nbytes()].view(np.float32).reshape(len(ids), ne0)


@pytest.mark.parametrize("dtype", READ, ids=[t.label for t in READ])
def test_dequantizer_is_the_references_bit_for_bit(dtype):
    vk = device_backend("vulkan")
    blocks = random_blocks(dtype.name)  # [1, 96 blocks]: every bit of the quant fields random, finite scales
    per_row = 256 // dtype.block * 2  # two K-quant blocks a row, 16 of the 32-element types
    raw = blocks.reshape(-1, per_row * dtype.type_size)
    ids = np.arange(raw.shape[0])[::-1].copy()
    want = dequantize(raw[ids], dtype.name)
    # blocks at even and odd multiples of type_size (2- and 4-aligned for most types); dst 16-byte stores and not
    for row_offset, dst_offset in ((0, 0), (1, 1)):
        got = _gather(vk, dtype, raw, ids, row_offset, dst_offset)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                      err_msg=f"{dtype.label} at block offset {row_offset}")


def _quantize_on_vulkan(vk, dtype: DType, x: np.ndarray) -> np.ndarray:
    src = Tensor.new(DType.F32, x.shape[::-1], vk.upload(np.ascontiguousarray(x, np.float32).view(np.uint8)))
    node = make_node("CPY", [src], {"dtype": dtype.label})
    node.dst = node.dst.with_buffer(vk.alloc(node.dst.nbytes()))
    vk.compute(node)
    return vk.read(node.dst.buffer)[:node.dst.nbytes()].reshape(x.shape[0], -1)


@pytest.mark.parametrize("dtype", [DType.Q8_0, DType.Q4_0], ids=["q8_0", "q4_0"])
def test_cpy_quantizes_as_ggml_byte_for_byte(dtype):
    vk = device_backend("vulkan")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 96)).astype(np.float32) * np.float32(3.0)
    # rows whose scale is 1: values on and next to the rounding ties (q8_0 rounds halves away from zero; q4_0
    # truncates x / d + 8.5), a largest magnitude met twice with opposite signs (the first one sets q4_0's d), zeros
    ties = np.array([127, -62.5, 62.5, 0.5, -0.5, 1.5, -2.5, np.nextafter(62.5, 0), 3.5, -3.5, 7.5, -7.5], np.float32)
    x[0, :ties.size] = ties
    x[1, :4] = [-8, 8, 4.5, -4.5]
    x[2, :] = 0
    x[3, :32] = np.linspace(-1, 1, 32, dtype=np.float32) * np.float32(1e-3)
    got = _quantize_on_vulkan(vk, dtype, x)
    np.testing.assert_array_equal(got, quantize(x, dtype.name))


def test_refusals_say_why():
    """Types the kernels do not read or write are refused with the reason (Node is built by hand: the registry may
    refuse them itself; supports() must not rely on it)."""
    vk = device_backend("vulkan")
    buf = vk.alloc(1 << 12)
    f32, q4_k = Tensor.new(DType.F32, (256, 4), buf), Tensor.new(DType.Q4_K, (256, 4), buf)
    cpy = make_node("CPY", [f32], {"dtype": "q8_0"})
    assert "quantizes f32 to q4_0, q8_0 only" in vk.supports(Node(cpy.op, [f32], q4_k, cpy.params))
    mm = make_node("MUL_MAT", [f32, f32])
    assert "does not take a q4_K src1" in vk.supports(Node(mm.op, [f32, q4_k], mm.dst, mm.params))
    add = make_node("ADD", [f32, f32])
    assert "ADD has no quantized kernel" in vk.supports(Node(add.op, [q4_k, f32], add.dst, add.params))
