"""OpenCL's quantized kernels beyond the registry's conformance cases (cases/test_ops.py): quants.cl's dequantizer bit
for bit against reference.quants.dequantize on random blocks (every bit pattern of the quant fields, which blocks from
a quantizer never reach), cpy_quantize byte for byte against ggml's quantizer on ties and edge blocks, the path each
shape takes, and the refusals of supports()."""
import numpy as np
import pytest

from conftest import device_backend
from reference import quants
from reference.node import Node, make_node
from reference.ops import get_op
from reference.tensor import QUANTIZED, DType, Tensor

from .test_quants import N_BLOCKS, random_blocks


@pytest.fixture(scope="module")
def backend():
    return device_backend("opencl")


def upload(backend, t: Tensor, raw: np.ndarray) -> Tensor:
    return t.with_buffer(backend.upload(np.ascontiguousarray(raw).view(np.uint8).reshape(-1)))


def output(backend, t: Tensor) -> Tensor:
    return t.with_buffer(backend.alloc(t.nbytes()))


def download(backend, t: Tensor) -> np.ndarray:
    return backend.read(t.buffer)[t.offset:t.offset + t.nbytes()]


@pytest.mark.parametrize("dtype", QUANTIZED, ids=lambda t: t.label)
def test_get_rows_dequantizes_random_blocks_as_ggml(backend, dtype):
    """Rows of random blocks gathered in a shuffled order come back exactly as ggml's to_float gives them (quants.cl
    keeps ggml's arithmetic order, so not one bit differs)."""
    raw = random_blocks(dtype.name).reshape(4, N_BLOCKS // 4 * dtype.type_size)  # 4 rows of 24 blocks
    table = upload(backend, Tensor.new(dtype, (N_BLOCKS // 4 * dtype.block, 4)), raw)
    order = np.array([2, 0, 3, 1, 2], dtype=np.int32)
    ids = upload(backend, Tensor.new(DType.I32, (len(order),)), order)
    node = make_node("GET_ROWS", [table, ids])
    node.dst = output(backend, node.dst)
    backend.compute(node)
    got = download(backend, node.dst).view(np.float32).reshape(len(order), -1)
    np.testing.assert_array_equal(got, quants.dequantize(raw, dtype.name)[order])


def blocks_to_quantize() -> np.ndarray:
    """Blocks of 32 f32 values that probe the encoders' edges: uniform values; exact ties of x / d (q8_0: amax 127,
    so d = 1 and halves round away from zero; q4_0: extreme -8, so d = 1 and x + 8.5 lands on integers); the extreme
    negative (q4_0 keeps its sign) and repeated in magnitude with both signs; all zeros (d = 0); tiny values (d
    subnormal in half); one value among zeros."""
    rng = np.random.default_rng(13)
    uniform = rng.uniform(-1, 1, (8, 32))
    ties = np.concatenate([[127.0], np.arange(31) - 15.5])
    q4_ties = np.concatenate([[-8.0], np.arange(31) / 2 - 7.5])
    signs = np.concatenate([[-3.0, 3.0], rng.uniform(-3, 3, 30)])
    tiny = rng.uniform(-1, 1, 32) * 1e-7
    spike = np.where(np.arange(32) == 5, -0.75, 0.0)
    return np.vstack([uniform, ties, -ties, q4_ties, signs, -signs, np.zeros(32), tiny, spike]).astype(np.float32)


@pytest.mark.parametrize("dtype", [DType.Q8_0, DType.Q4_0], ids=lambda t: t.label)
def test_cpy_quantizes_as_ggml_byte_for_byte(backend, dtype):
    """cpy_quantize writes the very bytes ggml's quantize_row_*_ref (reference.quants.quantize) writes, ties and
    edge blocks included: from a contiguous source, a transposed view, and into another shape (the FLAT path)."""
    values = blocks_to_quantize().reshape(-1, 64)  # rows of two blocks
    want = quants.quantize(values, dtype.name)
    src = upload(backend, Tensor.new(DType.F32, (64, values.shape[0])), values)
    transposed = upload(backend, Tensor.new(DType.F32, (values.shape[0], 64)), np.ascontiguousarray(values.T))
    for view, ne in ((src, None), (transposed.transpose(), None), (src, [32, values.size // 32])):
        node = make_node("CPY", [view], {"dtype": dtype.label, "ne": ne})
        node.dst = output(backend, node.dst)
        backend.compute(node)
        np.testing.assert_array_equal(download(backend, node.dst), want.reshape(-1))


def bound(backend, op: str, *tensors: Tensor, **params) -> Node:
    node = make_node(op, [t.with_buffer(backend.alloc(t.nbytes())) for t in tensors], params)
    node.dst = output(backend, node.dst)
    return node


def test_each_shape_takes_its_path(backend):
    q4k, q8 = DType.Q4_K, DType.Q8_0
    f32 = DType.F32
    paths = {
        "mat-vec": bound(backend, "MUL_MAT", Tensor.new(q4k, (512, 64)), Tensor.new(f32, (512, 1))),
        "few columns": bound(backend, "MUL_MAT", Tensor.new(q4k, (512, 64)), Tensor.new(f32, (512, 3))),
        "many columns": bound(backend, "MUL_MAT", Tensor.new(q8, (64, 64)), Tensor.new(f32, (64, 32))),
        "b strided along k": bound(backend, "MUL_MAT", Tensor.new(q8, (64, 64)),
                                   Tensor.new(f32, (2, 64)).transpose()),
        "experts": bound(backend, "MUL_MAT_ID", Tensor.new(q8, (64, 16, 4)), Tensor.new(f32, (64, 1, 3)),
                         Tensor.new(DType.I32, (2, 3))),
        "gather": bound(backend, "GET_ROWS", Tensor.new(q4k, (256, 4)), Tensor.new(DType.I32, (2,))),
        "quantize": bound(backend, "CPY", Tensor.new(f32, (64, 2)), dtype="q4_0"),
    }
    # staged b (K floats and K / 32 sums per column) one block past the device's local memory: the packed product
    past_local = (backend.device.local_mem_size // 4 * 32 // 33 // 256 + 1) * 256
    paths["mat-vec past local memory"] = bound(backend, "MUL_MAT", Tensor.new(q8, (past_local, 4)),
                                               Tensor.new(f32, (past_local, 1)))
    got = {what: backend.kernel_path(node) for what, node in paths.items()}
    assert got["mat-vec"].startswith("mul_mat_vec_q A_Q4_K") and "RM=1" in got["mat-vec"]
    assert got["mat-vec past local memory"].startswith("mul_mat_pack A_Q8_0")
    assert got["few columns"].startswith("mul_mat_vec_q A_Q4_K") and "RM=1" not in got["few columns"]
    assert got["many columns"].startswith("mul_mat_pack A_Q8_0") and "BK1" in got["many columns"]
    assert got["b strided along k"].startswith("mul_mat_pack A_Q8_0") and "BK1" not in got["b strided along k"]
    assert got["experts"].startswith("mul_mat_id A_Q8_0")
    assert got["gather"].startswith("get_rows A_Q4_K")
    assert got["quantize"].startswith("cpy_quantize DST_Q4_0")


@pytest.mark.parametrize("dtype", [DType.Q4_K, DType.Q8_0, DType.Q6_K], ids=lambda t: t.label)
@pytest.mark.parametrize("columns", [1, 3])
def test_mat_vec_of_random_blocks_past_a_group(backend, dtype, columns):
    """mul_mat_vec_q on random blocks (every bit pattern of the quant fields) over more rows than one group takes
    (QMV_ROWS) and 3 blocks of k matches the dequantized product in float64 to float32 rounding: the staged order of b
    (q4_K's nibble planes), the run sums and the last group's partial rows."""
    from backends.opencl import QMV_ROWS
    rows, k = QMV_ROWS + 44, 3 * dtype.block
    rng = np.random.default_rng(columns)
    raw = np.concatenate([random_blocks(dtype.name, seed)[0] for seed in range(-(-rows * 3 // N_BLOCKS))])
    raw = raw[:rows * 3 * dtype.type_size].reshape(rows, -1)
    b = rng.standard_normal((columns, k)).astype(np.float32)
    node = make_node("MUL_MAT", [upload(backend, Tensor.new(dtype, (k, rows)), raw),
                                 upload(backend, Tensor.new(DType.F32, (k, columns)), b)])
    node.dst = output(backend, node.dst)
    assert backend.kernel_path(node).startswith(f"mul_mat_vec_q A_{dtype.name}")
    backend.compute(node)
    got = download(backend, node.dst).view(np.float32).reshape(columns, rows)
    want = b.astype(np.float64) @ quants.dequantize(raw, dtype.name).astype(np.float64).T
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def unchecked(backend, op: str, srcs: list[Tensor], dst: Tensor, **params) -> Node:
    """A node the registry would refuse (types no record allows yet), built by hand: what supports() must refuse
    by itself should a record start allowing it."""
    bind = [t.with_buffer(backend.alloc(t.nbytes())) for t in [*srcs, dst]]
    return Node(get_op(op), bind[:-1], bind[-1], params)


def test_supports_refuses_types_without_kernels(backend):
    f32, q8 = DType.F32, DType.Q8_0
    refused = {
        "bf16 weights": unchecked(backend, "MUL_MAT", [Tensor.new(DType.BF16, (64, 4)), Tensor.new(f32, (64, 1))],
                                  Tensor.new(f32, (4, 1))),
        "quantized activations": unchecked(backend, "MUL_MAT", [Tensor.new(f32, (64, 4)), Tensor.new(q8, (64, 1))],
                                           Tensor.new(f32, (4, 1))),
        "dequantizing copy": unchecked(backend, "CPY", [Tensor.new(q8, (64, 2))], Tensor.new(f32, (64, 2)),
                                       dtype="f32", ne=None),
        "f16 into q8_0": unchecked(backend, "CPY", [Tensor.new(DType.F16, (64, 2))], Tensor.new(q8, (64, 2)),
                                   dtype="q8_0", ne=None),
        "q4_K written": unchecked(backend, "CPY", [Tensor.new(f32, (256, 2))], Tensor.new(DType.Q4_K, (256, 2)),
                                  dtype="q4_k", ne=None),
    }
    reasons = {what: backend.supports(node) for what, node in refused.items()}
    assert "bf16" in reasons["bf16 weights"]
    assert "q8_0 src1" in reasons["quantized activations"]
    assert "q8_0 src0" in reasons["dequantizing copy"]
    assert "f16 into q8_0" in reasons["f16 into q8_0"]
    assert "f32 into q4_K" in reasons["q4_K written"]
