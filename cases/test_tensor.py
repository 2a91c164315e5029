"""Tensor descriptors and op validation refuse bad input with a clear ValueError before any kernel runs."""
import pytest

from reference.node import make_node
from reference.tensor import Buffer, DType, Tensor

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
