"""Tensor descriptors and op validation refuse bad input with a clear ValueError before any kernel runs."""
import numpy as np
import pytest

from reference.case import Input, Layout
from reference.node import make_node
from reference.quants import QUANT_TYPES, dequantize, quantize
from reference.tensor import QUANTIZED, Buffer, DType, Tensor, footprint, host_values, host_view, store_values

F32 = DType.F32


def test_views_are_descriptors():
    buf = Buffer(4 * 10 * 6)
    t = Tensor.new(F32, (10, 6), buf)
    v = t.view((4, 3), nb=(4, 80), offset=8)
    assert v.buffer is buf and v.offset == 8 and v.nb == (4, 80, 240, 240)
    p = t.permute(1, 0, 2, 3)
    assert p.ne == (6, 10, 1, 1) and p.nb == (40, 4, 240, 240) and not p.is_contiguous()
    assert t.transpose().ne == p.ne


@pytest.mark.parametrize("make,message", [
    (lambda: Tensor.new(F32, (10, 6), Buffer(100)), "runs past its buffer"),
    (lambda: Tensor.new(F32, (10, 6), Buffer(240)).view((10, 6), offset=4), "runs past its buffer"),
    (lambda: Tensor(F32, (4, 2), (4, -16)), "negative stride"),
    (lambda: Tensor(F32, (4, 2), (4, 18)), "multiples of the f32 element size"),
    (lambda: Tensor(F32, (4, 2), (4, 16), offset=2), "multiples of the f32 element size"),
    (lambda: Tensor(F32, (4, -2), (4, 16)), "negative size"),
    (lambda: Tensor.new(F32, (1, 2, 3, 4, 5)), "1 to 4 entries"),
    # int() used to truncate or parse these silently
    (lambda: Tensor.new(F32, (2.5, 3)), r"ne entries must be ints, got 2.5 in \[2.5, 3\]"),
    (lambda: Tensor.new(F32, ("4", 2)), "ne entries must be ints, got '4'"),
    (lambda: Tensor.new(F32, (True, 2)), "ne entries must be ints, got True"),
    (lambda: Tensor(F32, (4, 2), (4, 16.5)), "nb entries must be ints, got 16.5"),
    (lambda: Tensor.new(F32, (10, 6)).view((4, 3), nb=(4, 40.0)), "nb entries must be ints, got 40.0"),
    (lambda: Tensor.new(F32, (10, 6)).view((4, 3), offset=8.0), "the byte offset must be an int, got 8.0"),
])
def test_bad_views_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("op,srcs,params,message", [
    ("ADD", [Tensor.new(F32, (10, 4)), Tensor.new(F32, (3, 4))], {}, "cannot be broadcast"),
    ("TRI", [Tensor.new(F32, (10, 4))], {}, "must be square"),
    ("TRI", [Tensor.new(F32, (4, 4))], {"type": "DIAGONAL"}, "TRI type must be one of"),
    ("SOLVE_TRI", [Tensor.new(F32, (4, 4)), Tensor.new(F32, (2, 5))], {}, "SOLVE_TRI needs"),
    ("CUMSUM", [Tensor.new(DType.I32, (4,))], {}, "src0 must be f32"),
    ("CUMSUM", [Tensor.new(F32, (4,)), Tensor.new(F32, (4,))], {}, "takes 1 source"),
    ("CUMSUM", [Tensor.new(F32, (4,))], {"axis": 1}, "has no parameter"),
    ("ACC", [Tensor.new(F32, (8, 4)), Tensor.new(F32, (4, 2))], {"nb1": 32, "nb2": 128, "nb3": 128, "offset": 100},
     "runs past a"),
    ("ACC", [Tensor.new(F32, (8, 4)), Tensor.new(F32, (4, 2))], {"nb1": 8, "nb2": 128, "nb3": 128}, "overlap"),
    ("ACC", [Tensor.new(F32, (8, 4)).transpose(), Tensor.new(F32, (2, 2))], {"nb1": 32, "nb2": 128, "nb3": 128},
     "must be contiguous"),
    ("CPY", [Tensor.new(F32, (8, 4))], {"ne": [7, 4]}, "as many elements"),
    ("L2_NORM", [Tensor.new(F32, (8, 4))], {"eps": -1.0}, "eps must be >= 0"),
    ("L2_NORM", [Tensor.new(F32, (8, 4))], {"eps": "x"}, "L2_NORM parameter eps must be a number"),
    ("ACC", [Tensor.new(F32, (8, 4)), Tensor.new(F32, (4, 2))], {}, "ACC parameter nb1 must be an int"),
    ("NOPE", [], {}, "unknown op"),
])
def test_bad_nodes_refused(op, srcs, params, message):
    with pytest.raises(ValueError, match=message):
        make_node(op, srcs, params)


def test_unknown_backend_refused():
    from backends import check_name
    with pytest.raises(ValueError, match="known backends: numpy, opencl, vulkan, cuda"):
        check_name("metal")


# ---- quantized types -------------------------------------------------------------------------------------------------
def test_quantized_dtypes_are_ggmls_layouts():
    assert [t.label for t in QUANTIZED] == ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_K", "q3_K", "q4_K", "q5_K",
                                            "q6_K"]
    codes = [t.code for t in DType]
    assert len(set(codes)) == len(codes) and (DType.F32.code, DType.F16.code, DType.I32.code) == (0, 1, 2)
    for t in QUANTIZED:
        qt = QUANT_TYPES[t.name]
        assert (t.block, t.type_size, t.size, t.np) == (qt.block, qt.type_size, qt.type_size, np.uint8)
        assert DType[t.label.upper()] is t  # CPY's dtype parameter names a type by its label
    assert (DType.F32.block, DType.F32.type_size, DType.BF16.block, DType.BF16.size) == (1, 4, 1, 2)


def test_quantized_tensor_rows_are_whole_blocks():
    t = Tensor.new(DType.Q4_K, (512, 3, 2))
    assert t.nb == (144, 288, 864, 1728) and t.nbytes() == 1728 == t.extent() and t.is_contiguous()
    q = Tensor.new(DType.Q8_0, (64, 5))
    assert q.nb == (34, 68, 340, 340) and q.nbytes() == 340
    # a view of rows 1..2 of a padded table: nb1 kept, offset one row in
    v = Tensor.new(DType.Q8_0, (96, 4), Buffer(4 * 102)).view((64, 2), nb=(34, 102), offset=102)
    assert v.nb == (34, 102, 204, 204) and v.extent() == 102 + 68 and not v.is_contiguous()
    # dims 1-3 may be permuted; the footprint is each row's blocks
    p = Tensor.new(DType.Q4_0, (32, 2, 3)).permute(0, 2, 1, 3)
    assert p.ne == (32, 3, 2, 1) and p.nb == (18, 36, 18, 108)
    mask = footprint(Tensor.new(DType.Q8_0, (32, 2), offset=34).view((32, 1), offset=34), 34 * 4)
    assert mask.tolist() == [False] * 68 + [True] * 34 + [False] * 34


@pytest.mark.parametrize("make,message", [
    (lambda: Tensor.new(DType.Q4_K, (128, 2)), r"rows of 128 elements cannot be q4_K, whose blocks hold 256 "
                                               r"elements \(ne0 must be a multiple of 256\)"),
    (lambda: Tensor.new(DType.Q8_0, (48,)), "ne0 must be a multiple of 32"),
    (lambda: Tensor.new(DType.Q8_0, (64, 2)).view((64, 1), offset=17), r"multiples of the q8_0 block size 34 "
                                                                       r"\(views start on block boundaries\)"),
    (lambda: Tensor.new(DType.Q8_0, (64, 2)).view((64, 2), nb=(34, 50)), "multiples of the q8_0 block size 34"),
    (lambda: Tensor.new(DType.Q4_0, (64, 64)).transpose(), "nb.0. must be its block size 18 bytes"),
    (lambda: Tensor.new(DType.Q8_0, (64, 4), Buffer(200)), "runs past its buffer"),
    (lambda: Input((64, 2), DType.Q8_0, Layout(offset=5)), "offset and row padding must be whole blocks of 32"),
    (lambda: Input((64, 2), DType.Q8_0, Layout(pad=(3, 0, 0, 0))), "whole blocks of 32"),
])
def test_bad_quantized_views_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_quantized_input_layout_in_bytes():
    inp = Input((64, 3), DType.Q4_0, Layout(pad=(32, 1, 0, 0), offset=32))
    t = inp.descriptor()
    assert t.offset == 18 and t.nb == (18, 54, 216, 216) and inp.backing_bytes() == 18 + 4 * 54


@pytest.mark.parametrize("dtype", [*QUANTIZED, DType.BF16])
def test_host_values_are_the_quantizers_blocks_dequantized(dtype):
    """store_values encodes floats as ggml's quantizer does; host_values reads them back as ggml's to_float: what
    the harness gives every backend and the reference, over a strided view whose gaps stay untouched."""
    x = np.random.default_rng(0).uniform(-1, 1, (1, 2, 3, 512))
    inp = Input((512, 3, 2), dtype, Layout(pad=(256, 1, 0, 0), offset=256))
    t = inp.descriptor()
    raw = np.full(inp.backing_bytes(), 0xEE, dtype=np.uint8)
    store_values(raw, t, x)
    blocks = quantize(x, dtype.name)
    np.testing.assert_array_equal(host_view(raw, t).view(np.uint8).reshape(blocks.shape), blocks)
    got = host_values(raw, t)
    assert got.dtype == np.float64 and got.shape == x.shape
    np.testing.assert_array_equal(got, dequantize(blocks, dtype.name))
    assert np.all(raw[~footprint(t, raw.nbytes)] == 0xEE)
    assert 0 < np.sum((got - x) ** 2) / np.sum(x ** 2) < 0.2  # the values survive, within the type's precision
