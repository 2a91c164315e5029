"""Bad input is refused with one ValueError before any kernel runs (issue 15): index ids out of range, a parameter
edited after validation, an output that overlaps an input, a freed buffer, a parameter of the wrong kind.

Each test meets the bad input at the entry point where it arrives: make_node and Graph.op (descriptors and
parameters), Backend.prepare (every path to a kernel: a hand-built node, a freed or overlapping binding),
Backend.compute (the synchronous single-node path, which also reads index sources back), run_graph (ids given as
graph inputs) and the harness (ids the op's domain drew). The device tests run on the reference and on every backend
the suite tests (CUDA skips without a GPU). "No kernel ran" is observed, not assumed: the poisoned output is
unchanged, or prepare() was never called.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from backends import TESTED_BACKENDS
from conftest import device_backend
from reference.case import Case, Input
from reference.graph import Graph
from reference.plan import run_graph
from reference.node import Node, make_node
from reference.ops import REGISTRY, get_op
from reference.tensor import DType, Tensor

from .harness import host_buffers, run_case

F32, I32 = DType.F32, DType.I32
BACKENDS = ["numpy"] + TESTED_BACKENDS
POISON = 0xFF


class Buffers:
    """Buffers of one backend for one test, freed at the end (so a refusal cannot leak them)."""

    def __init__(self, backend):
        self.backend, self.held = backend, []

    def array(self, arr, dtype: DType) -> Tensor:
        """A contiguous tensor holding `arr` (NumPy shape) in its own buffer."""
        arr = np.ascontiguousarray(arr, dtype=dtype.np)
        buf = self.backend.upload(arr.view(np.uint8).reshape(-1))
        self.held.append(buf)
        return Tensor.new(dtype, tuple(reversed(arr.shape)) or (1,), buf)

    def poisoned(self, dtype: DType, ne) -> Tensor:
        t = Tensor.new(dtype, ne)
        buf = self.backend.upload(np.full(t.nbytes(), POISON, dtype=np.uint8))
        self.held.append(buf)
        return t.with_buffer(buf)

    def untouched(self, t: Tensor) -> bool:
        return bool((self.backend.read(t.buffer)[:t.nbytes()] == POISON).all())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for buf in self.held:
            self.backend.free(buf)


def spy_prepare(monkeypatch, backend) -> list:
    """Records every node the backend prepares (a compiled graph prepares all its nodes before any runs)."""
    prepared, real = [], backend.prepare

    def prepare(node):
        prepared.append(node.name or node.op.name)
        return real(node)
    monkeypatch.setattr(backend, "prepare", prepare)
    return prepared


# ---- 1, 2: ids out of range ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [10, 13, -1, 100_000_000])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_get_rows_id_out_of_range_refused(backend_name, bad):
    """An id >= the row count (or < 0): refused naming the op, the id and the row count; the output is untouched
    (OpenCL used to segfault on the large one, return garbage on a small overshoot; Vulkan returned zeros)."""
    backend = device_backend(backend_name)
    with Buffers(backend) as bufs:
        a = bufs.array(np.arange(40).reshape(10, 4), F32)  # 10 rows of 4
        ids = bufs.array([1, bad, 2], I32)
        node = make_node("GET_ROWS", [a, ids], dst=bufs.poisoned(F32, (4, 3)))
        with pytest.raises(ValueError, match=rf"GET_ROWS: id {bad} in src1 .*out of range \[0, 10\): a has 10 rows"):
            backend.compute(node)
        assert bufs.untouched(node.dst), "a kernel ran"


@pytest.mark.parametrize("bad", [3, -1, 7])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_mul_mat_id_expert_out_of_range_refused(backend_name, bad):
    backend = device_backend(backend_name)
    with Buffers(backend) as bufs:
        w = bufs.array(np.ones((3, 4, 8)), F32)  # 3 experts [K=8, N=4]
        x = bufs.array(np.ones((2, 1, 8)), F32)  # 2 tokens
        ids = bufs.array([[0, bad], [1, 2]], I32)  # 2 experts per token
        node = make_node("MUL_MAT_ID", [w, x, ids], dst=bufs.poisoned(F32, (4, 2, 2)))
        with pytest.raises(ValueError, match=rf"MUL_MAT_ID: id {bad} in src2 .*out of range \[0, 3\): 3 experts"):
            backend.compute(node)
        assert bufs.untouched(node.dst), "a kernel ran"


@pytest.mark.parametrize("op", ["GET_ROWS", "MUL_MAT_ID"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_graph_input_ids_out_of_range_refused_before_any_kernel(backend_name, op, monkeypatch):
    """Ids given as graph input values are checked before anything is uploaded: no node runs (not even the ones
    before the gather) and nothing is left allocated. The message names the node."""
    backend = device_backend(backend_name)
    g = Graph()
    if op == "GET_ROWS":
        table, ids = g.input("embd", (4, 10)), g.input("tokens", (3,), I32)
        g.output("y", g.op("GET_ROWS", g.op("SCALE", table, s=2.0, name="first"), ids, name="inp_embd"))
        values = {"embd": np.ones((10, 4)), "tokens": np.array([1, 10, 2])}
        message = r"inp_embd: GET_ROWS: id 10 in src1 .*\[0, 10\): a has 10 rows"
    else:
        w, x, ids = g.input("experts", (8, 4, 3)), g.input("x", (8, 1, 2)), g.input("ids", (2, 2), I32)
        g.output("y", g.op("MUL_MAT_ID", w, g.op("SCALE", x, s=2.0, name="first"), ids, name="ffn_moe_up"))
        values = {"experts": np.ones((3, 4, 8)), "x": np.ones((2, 1, 8)), "ids": np.array([[0, 1], [-1, 2]])}
        message = r"ffn_moe_up: MUL_MAT_ID: id -1 in src2 .*\[0, 3\): 3 experts"
    prepared = spy_prepare(monkeypatch, backend)
    live = backend.live_bytes
    with pytest.raises(ValueError, match=message):
        run_graph(backend, g, values)
    assert prepared == [] and backend.live_bytes == live


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_harness_refuses_ids_its_domain_drew_out_of_range(backend_name, monkeypatch):
    """A domain bug that draws an id past the table is refused by the harness before any upload."""
    backend = device_backend(backend_name)
    spec = get_op("GET_ROWS")

    def off_by_one(rng, shape, i, p, shapes=None):
        return np.full(shape, shapes[0][-2]) if i == 1 else rng.uniform(-1, 1, shape)  # == the row count
    monkeypatch.setitem(REGISTRY, "GET_ROWS", dataclasses.replace(spec, domain=off_by_one))
    live = backend.live_bytes
    with pytest.raises(ValueError, match=r"GET_ROWS: id 10 in src1 .*\[0, 10\): a has 10 rows"):
        run_case(backend, Case.of("GET_ROWS", Input((64, 10)), Input((7,), I32)))
    assert backend.live_bytes == live


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_harness_refuses_wrong_kind_before_any_upload(backend_name):
    """A case with a parameter of the wrong kind (a replayed JSON, a hand-written case) fails in host_buffers, before a
    value is drawn or a byte uploaded, with the op and parameter named."""
    backend = device_backend(backend_name)
    live = backend.live_bytes
    for case, message in [
            (Case.of("SCALE", Input((4, 3)), s="2"), r"SCALE parameter s must be a number \(int or float\), got '2'"),
            (Case.of("TOP_K", Input((4, 3)), k=2.5), "TOP_K parameter k must be an int, got 2.5"),
            (Case.of("PAD", Input((4, 3)), pad=(1, 2)), r"PAD parameter pad must be 4 ints, got \(1, 2\)")]:
        with pytest.raises(ValueError, match=message):
            run_case(backend, case)
    assert backend.live_bytes == live


# ---- 2: TOP_K with k > ne0 (a parameter edited after validation, or a hand-built node) -------------------------------
@pytest.mark.parametrize("entry", ["compute", "prepare"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_top_k_edited_past_ne0_refused(backend_name, entry):
    """make_node validated k=2; raising k to 5 on a row of 4 afterwards used to reach the kernels (OpenCL and
    Vulkan returned garbage). The edit is caught at the next prepare/compute with the op's own message."""
    backend = device_backend(backend_name)
    with Buffers(backend) as bufs:
        node = make_node("TOP_K", [bufs.array(np.arange(8).reshape(2, 4), F32)], {"k": 2},
                         dst=bufs.poisoned(I32, (2, 2)))
        node.params["k"] = 5
        with pytest.raises(ValueError, match=r"TOP_K needs 1 <= k <= ne0 \(4\), got k=5"):
            getattr(backend, entry)(node)
        assert bufs.untouched(node.dst), "a kernel ran"


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_top_k_edited_in_a_graph_refused_before_any_kernel(backend_name, monkeypatch):
    backend = device_backend(backend_name)
    g = Graph()
    x = g.op("SCALE", g.input("x", (4, 2)), s=1.0, name="first")
    g.output("y", g.op("TOP_K", x, k=2, name="topk"))
    g.nodes[-1].params["k"] = 6
    prepared = spy_prepare(monkeypatch, backend)
    with pytest.raises(ValueError, match=r"TOP_K needs 1 <= k <= ne0 \(4\), got k=6"):
        run_graph(backend, g, {"x": np.arange(8.0).reshape(2, 4)})
    assert prepared == []


@pytest.mark.parametrize("k,message", [(6, r"TOP_K needs 1 <= k <= ne0 \(4\), got k=6"),
                                       (2.5, "TOP_K parameter k must be an int, got 2.5")], ids=["k=6", "k=2.5"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_hand_built_node_validated_at_prepare(backend_name, k, message):
    """A Node built directly (not through make_node) with a plain dict is validated by prepare()."""
    backend = device_backend(backend_name)
    with Buffers(backend) as bufs:
        node = Node(get_op("TOP_K"), [bufs.array(np.arange(8).reshape(2, 4), F32)], bufs.poisoned(I32, (2, 2)),
                    {"k": k})
        with pytest.raises(ValueError, match=message):
            backend.prepare(node)
        assert bufs.untouched(node.dst)


# ---- 3: an output overlapping an input -----------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["make_node", "prepare", "compute"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_output_overlapping_an_input_refused(backend_name, entry):
    backend = device_backend(backend_name)
    with Buffers(backend) as bufs:
        whole = bufs.array(np.arange(16), F32)
        src, dst = whole.view((8,)), whole.view((8,), offset=16)  # dst starts 4 elements into src
        message = rf"NEG: dst {re.escape(dst.describe())} overlaps src0 {re.escape(src.describe())}"
        if entry == "make_node":
            with pytest.raises(ValueError, match=message):
                make_node("NEG", [src], dst=dst)
            return
        node = Node(get_op("NEG"), [src], dst, {})  # as a caller that skips make_node would build it
        with pytest.raises(ValueError, match=message):
            getattr(backend, entry)(node)
        assert np.array_equal(np.frombuffer(backend.read(whole.buffer)[:64].tobytes(), np.float32), np.arange(16))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_interleaved_views_of_one_buffer_accepted(backend_name):
    """Byte ranges that intersect but footprints that do not (dst = odd elements, src = even ones) are fine: the
    overlap test is exact, not a range test."""
    backend = device_backend(backend_name)
    with Buffers(backend) as bufs:
        whole = bufs.array(np.arange(16), F32)
        src, dst = whole.view((8,), nb=(8,)), whole.view((8,), nb=(8,), offset=4)
        node = make_node("NEG", [src], dst=dst)
        reason = backend.supports(node)
        if reason:
            pytest.skip(f"unsupported: {reason}")
        backend.compute(node)
        got = np.frombuffer(backend.read(whole.buffer)[:64].tobytes(), np.float32)
        assert np.array_equal(got, np.stack([np.arange(0, 16, 2), -np.arange(0, 16, 2)], axis=1).reshape(-1))


@pytest.mark.parametrize("how", ["other view", "other buffer", "b overlaps a"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_in_place_needs_dst_exactly_src0(backend_name, how):
    """ACC in place writes a itself: dst must be exactly a's view (not another view of its buffer, not another
    buffer), and b must not overlap it."""
    backend = device_backend(backend_name)
    params = dict(nb1=32, nb2=128, nb3=128, offset=0, inplace=True)
    with Buffers(backend) as bufs:
        big = bufs.array(np.zeros(48), F32)
        a, b = big.view((8, 4)), bufs.array(np.ones((2, 4)), F32)
        make_node("ACC", [a, b], params, dst=a)  # exactly a: accepted
        if how == "b overlaps a":
            with pytest.raises(ValueError, match=r"ACC: dst .* overlaps src1"):
                backend.compute(make_node("ACC", [a, a.view((4, 2), nb=(4, 32), offset=32)], params, dst=a))
            return
        dst = big.view((8, 4), offset=32) if how == "other view" else bufs.poisoned(F32, (8, 4))
        with pytest.raises(ValueError, match=r"ACC in place \(inplace=True\) writes src0 itself: dst must be exactly"):
            make_node("ACC", [a, b], params, dst=dst)
        node = Node(get_op("ACC"), [a, b], dst, params)
        with pytest.raises(ValueError, match=r"ACC in place \(inplace=True\) writes src0 itself: dst must be exactly"):
            backend.compute(node)


def test_graph_in_place_source_overlap_refused():
    g = Graph()
    cache = g.input("cache", (8, 4))
    row = Graph.view(cache, (8, 1), offset=32)  # row 1 of the cache itself
    with pytest.raises(ValueError, match=r"cache_save: SET: src1 .* overlaps src0 .*, which SET writes in place"):
        g.op("SET", cache, row, nb1=32, nb2=128, nb3=128, offset=0, inplace=True, name="cache_save")


# ---- 4: freed buffers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["src", "dst"])
@pytest.mark.parametrize("entry", ["make_node", "prepare", "compute"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_freed_buffer_refused(backend_name, entry, which):
    backend = device_backend(backend_name)
    with Buffers(backend) as bufs:
        src, dst = bufs.array(np.arange(8), F32), bufs.poisoned(F32, (8,))
        gone = src if which == "src" else dst
        role = "src0" if which == "src" else "dst"
        if entry == "make_node":
            backend.free(gone.buffer)
            with pytest.raises(ValueError, match=rf"NEG: {role} is bound to a freed buffer"):
                make_node("NEG", [src], dst=dst)
            return
        node = make_node("NEG", [src], dst=dst)
        backend.free(gone.buffer)
        with pytest.raises(ValueError, match=rf"NEG: {role} is bound to a freed buffer"):
            getattr(backend, entry)(node)


def test_buffer_of_another_backend_refused():
    from backends.numpy_backend import NumpyBackend

    one, other = NumpyBackend(), NumpyBackend()
    with Buffers(one) as bufs:
        node = make_node("NEG", [bufs.array(np.arange(8), F32)], dst=bufs.poisoned(F32, (8,)))
        with pytest.raises(ValueError, match=r"NEG: dst is a buffer of another backend instance \(numpy\)"):
            other.prepare(node)


# ---- 5: parameters of the wrong kind -----------------------------------------------------------------------------
A, B, SQUARE = (8, 4), (4, 2), (4, 4)
SOURCES = {"SCALE": [A], "CLAMP": [A], "RMS_NORM": [A], "L2_NORM": [A], "FILL": [A], "TOP_K": [A], "ARGSORT": [A],
           "CPY": [A], "PAD": [A], "REPEAT": [B], "CONCAT": [A, A], "SOFT_MAX_EXT": [A, A], "TRI": [SQUARE],
           "ACC": [A, B], "SET": [A, B]}
BLOCK = dict(nb1=32, nb2=128, nb3=128)
BAD_PARAMS = [
    ("SCALE", {"s": None}, "SCALE parameter s must be a number"),
    ("SCALE", {"s": True}, "SCALE parameter s must be a number"),
    ("SCALE", {"b": "0.5"}, "SCALE parameter b must be a number"),
    ("CLAMP", {"min": "a"}, "CLAMP parameter min must be a number"),
    ("RMS_NORM", {"eps": "x"}, "RMS_NORM parameter eps must be a number"),
    ("L2_NORM", {"eps": None}, "L2_NORM parameter eps must be a number"),
    ("SOFT_MAX_EXT", {"scale": [1.0]}, "SOFT_MAX_EXT parameter scale must be a number"),
    ("FILL", {"c": "1"}, "FILL parameter c must be a number"),
    ("FILL", {"inplace": 1}, "FILL parameter inplace must be a bool"),
    ("ACC", {**BLOCK, "nb1": "64"}, "ACC parameter nb1 must be an int"),
    ("ACC", {**BLOCK, "nb1": 32.0}, "ACC parameter nb1 must be an int"),
    ("ACC", {**BLOCK, "nb2": None}, "ACC parameter nb2 must be an int"),
    ("ACC", {"nb1": 32}, "ACC parameter nb2 must be an int"),
    ("ACC", {**BLOCK, "inplace": "yes"}, "ACC parameter inplace must be a bool"),
    ("SET", {**BLOCK, "offset": 4.0}, "SET parameter offset must be an int"),
    ("CPY", {"ne": [2.5, 12.8]}, "CPY parameter ne must be 1 to 4 ints"),
    ("CPY", {"ne": [2, 2, 2, 2, 2]}, "CPY parameter ne must be 1 to 4 ints"),
    ("CPY", {"dtype": 5}, "CPY parameter dtype must be a string"),
    ("CPY", {"dtype": "x"}, "CPY writes f32, f16, q8_0, q4_0, not 'x'"),
    ("REPEAT", {"ne": [2.5, 2, 1, 1]}, "REPEAT parameter ne must be 4 ints"),
    ("REPEAT", {"ne": (8, 4)}, "REPEAT parameter ne must be 4 ints"),
    ("REPEAT", {"ne": "8421"}, "REPEAT parameter ne must be 4 ints"),
    ("REPEAT", {}, "REPEAT parameter ne must be 4 ints, got None"),
    ("TOP_K", {"k": 2.5}, "TOP_K parameter k must be an int"),
    ("TOP_K", {"k": True}, "TOP_K parameter k must be an int"),
    ("TOP_K", {"k": "2"}, "TOP_K parameter k must be an int"),
    ("TOP_K", {"k": None}, "TOP_K parameter k must be an int"),
    ("PAD", {"pad": (1, 2)}, "PAD parameter pad must be 4 ints"),
    ("PAD", {"pad": (1, 2, 0, 0.5)}, "PAD parameter pad must be 4 ints"),
    ("PAD", {"pad": 5}, "PAD parameter pad must be 4 ints"),
    ("CONCAT", {"dim": 1.0}, "CONCAT parameter dim must be an int"),
    ("CONCAT", {"dim": True}, "CONCAT parameter dim must be an int"),
    ("TRI", {"type": 3}, "TRI parameter type must be a string"),
    ("ARGSORT", {"order": None}, "ARGSORT parameter order must be a string"),
]
BAD_IDS = [f"{op}-{'-'.join(f'{k}={v!r}' for k, v in p.items() if k not in BLOCK or p[k] != BLOCK[k]) or 'none'}"
           for op, p, _ in BAD_PARAMS]


@pytest.mark.parametrize("op,params,message", BAD_PARAMS, ids=BAD_IDS)
def test_wrong_kind_of_parameter_refused(op, params, message):
    """make_node and Graph.op both refuse with one ValueError naming the op, the parameter and what it takes."""
    srcs = [Tensor.new(F32, ne) for ne in SOURCES[op]]
    with pytest.raises(ValueError, match=message):
        make_node(op, srcs, params)
    g = Graph()
    inputs = [g.input(f"x{i}", ne) for i, ne in enumerate(SOURCES[op])]
    with pytest.raises(ValueError, match=message):
        g.op(op, *inputs, **params)


@pytest.mark.parametrize("op,params,message", [row for row in BAD_PARAMS if row[0] in ("SCALE", "TOP_K", "ACC")],
                         ids=[i for i, row in zip(BAD_IDS, BAD_PARAMS) if row[0] in ("SCALE", "TOP_K", "ACC")])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_wrong_kind_of_parameter_refused_at_prepare(backend_name, op, params, message):
    """A hand-built node with such parameters never reaches a kernel either (it used to: SCALE s=None, ACC nb1='64',
    TOP_K k=2.5 ran; others died in TypeError deep in a backend)."""
    backend = device_backend(backend_name)
    with Buffers(backend) as bufs:
        srcs = [bufs.array(np.zeros(tuple(reversed(ne))), F32) for ne in SOURCES[op]]
        out = I32 if op == "TOP_K" else F32
        node = Node(get_op(op), srcs, bufs.poisoned(out, (1,) * 4 if op == "TOP_K" else SOURCES[op][0]), params)
        with pytest.raises(ValueError, match=message):
            backend.prepare(node)
        assert bufs.untouched(node.dst)


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_every_parameter_is_checked(op):
    """Data-driven from the registry: every parameter of every op has a kind, its default passes it (unless the
    parameter is required), and a value of no kind at all, a bool where a number belongs and a numeric string are
    refused naming the op and the parameter."""
    spec = get_op(op)
    assert set(spec.param_kinds) == set(spec.params)
    srcs, _, _, params = host_buffers(get_op(op).pinned()[0])
    tensors = [s.tensor for s in srcs]
    make_node(op, tensors, params)
    for name, default in spec.params.items():
        wrong = [object()]
        if isinstance(default, (int, float)) and not isinstance(default, bool) or name in ("nb1", "nb2", "nb3", "k"):
            wrong += [True, "1"]
        for value in wrong:
            with pytest.raises(ValueError, match=rf"^{op} parameter {name} must be "):
                make_node(op, tensors, {**params, name: value})


def test_validated_parameters_are_canonical():
    """Accepted values come out in one form: numbers as float, ints as int, int lists as tuples."""
    node = make_node("SCALE", [Tensor.new(F32, A)], {"s": 2, "b": np.float32(0.5)})
    assert node.params == {"s": 2.0, "b": 0.5} and all(type(v) is float for v in node.params.values())
    node = make_node("PAD", [Tensor.new(F32, A)], {"pad": [np.int64(1), 0, 0, 0]})
    assert node.params["pad"] == (1, 0, 0, 0) and type(node.params["pad"][0]) is int
    node = make_node("TOP_K", [Tensor.new(F32, A)], {"k": np.int32(3)})
    assert type(node.params["k"]) is int and node.dst.ne == (3, 4, 1, 1)
