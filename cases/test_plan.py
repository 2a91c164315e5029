"""Compiled graphs (reference/plan.py): the replay computes what the node-by-node path computes, on every backend;
a patched decode step is the graph built at that position; buffers are planned, allocated and counted alike; the
Vulkan sequence has a barrier wherever a dispatch depends on an earlier one and nowhere else; profiled runs time
every node."""
import numpy as np
import pytest

from backends import TESTED_BACKENDS
from backends.numpy_backend import NumpyBackend
from backends.session import ModelSession
from conftest import device_backend
from reference.config import get_config
from reference.graph import Graph, node_storages
from reference.model import build_ubatch_graph, position_patches
from reference.plan import GraphPlan, run_graph
from reference.weights import random_weights

TINY = get_config("tiny")
WEIGHTS = random_weights(TINY, seed=0)
BACKENDS = ["numpy", *TESTED_BACKENDS]


def toks(T, seed=3):
    return np.random.default_rng(seed).integers(0, TINY.n_vocab, size=(1, T))


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_replay_equals_node_by_node(backend_name):
    """The same graph replayed (one recorded sequence, launches back to back) and stepped node by node with a wait
    after each: bit for bit the same logits, for a prompt and then for decode steps."""
    backend = device_backend(backend_name)
    results = {}
    for keep in ("outputs", "nodes"):
        with ModelSession(backend, TINY, WEIGHTS, n_ctx=64) as s:
            got = [s.ubatch(toks(20), outputs="all", keep=keep)["logits"]]
            got += [s.ubatch(toks(1, seed=t), keep=keep)["logits"] for t in range(3)]
        results[keep] = np.concatenate(got)
    assert np.array_equal(results["outputs"], results["nodes"])


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_patched_decode_equals_a_fresh_compile(backend_name):
    """Decode steps replay one compiled graph with the cache offset patched (position_patches); compiling a new graph
    for every step gives the same logits bit for bit."""
    backend = device_backend(backend_name)
    prompt, steps = toks(8), [toks(1, seed=t) for t in range(4)]

    def decode(fresh: bool) -> np.ndarray:
        with ModelSession(backend, TINY, WEIGHTS, n_ctx=64) as s:
            s.ubatch(prompt)
            out = []
            for t in steps:
                if fresh:
                    s.release_plans()
                out.append(s.ubatch(t)["logits"])
                assert len(s.plans) == (1 if fresh else 2)
            return np.concatenate(out)

    assert np.array_equal(decode(fresh=False), decode(fresh=True))


def test_position_patches_turn_one_position_into_another():
    """Patching a graph built at one position gives the parameters of the graph built at the other (same shape)."""
    at_8 = build_ubatch_graph(TINY, 1, 0, [8], 1, 1, 64)
    at_40 = build_ubatch_graph(TINY, 1, 0, [40], 1, 1, 64)
    patches = position_patches(at_8, [40])
    assert patches, "the tiny model has an MLA layer whose cache store moves with the position"
    for index, params in patches:
        assert {**at_8.nodes[index].params, **params} == at_40.nodes[index].params
    changed = [i for i, (a, b) in enumerate(zip(at_8.nodes, at_40.nodes)) if a.params != b.params]
    assert changed == [i for i, _ in patches]


def test_set_params_refuses_a_bad_offset_before_any_kernel():
    backend = NumpyBackend()
    with ModelSession(backend, TINY, WEIGHTS, n_ctx=64) as s:
        s.ubatch(toks(1))
        plan = s.last_plan
        index, params = position_patches(plan.graph, [0])[0]
        with pytest.raises(ValueError, match="SET"):
            plan.set_params(index, offset=params["offset"] + 64 * plan.graph.nodes[index].params["nb1"])
        assert plan.graph.nodes[index].params["offset"] == params["offset"], "a refused patch changed the graph"


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compiled_buffers_are_the_planned_ones(backend_name):
    """What the allocator counts for a compiled graph's intermediates is the planner's figure, which is at least the
    live peak; close() gives every byte back."""
    backend = device_backend(backend_name)
    with ModelSession(backend, TINY, WEIGHTS, n_ctx=64) as s:
        live = backend.live_bytes
        for T in (16, 1):
            graph = s.graph(T, 0, 1, 1)
            plan = GraphPlan(backend, graph, s.resident)
            planned = graph.plan()
            assert plan.compute_bytes == planned["compute_bytes"] >= planned["live_peak_bytes"] > 0
            plan.close()
            assert backend.live_bytes == live


@pytest.mark.parametrize("T,pos", [(1, 40), (16, 0), (70, 0)])
def test_no_two_live_intermediates_share_a_buffer(T, pos):
    graph = build_ubatch_graph(TINY, T, 0, [pos], 1, 1, 128)
    a = graph.assign_buffers()
    last = graph.last_uses()
    for i, node in enumerate(graph.nodes):
        live = [st for st in a.of if st.producer <= i <= last[st]]
        owners = [a.of[st] for st in live]
        assert len(owners) == len(set(owners)), f"node {node.name}: two live intermediates share a buffer"
        assert all(a.sizes[a.of[st]] >= st.nbytes for st in node_storages(node) if st in a.of)


def chain_graph() -> Graph:
    """x -> a = x*2 -> b = a+x -> c = exp(x) (independent of a and b) -> d = b*c; a is an output too, so no buffer
    is reused."""
    g = Graph()
    x = g.input("x", (64, 4))
    a = g.output("a", g.op("SCALE", x, s=2.0, name="a"))
    b = g.op("ADD", a, x, name="b")
    c = g.op("EXP", x, name="c")
    g.output("d", g.op("MUL", b, c, name="d"))
    return g


def test_vulkan_barriers_where_dispatches_depend():
    """A barrier before b (reads a), none before c (reads only the input), one before d (reads b and c); the
    input upload comes first and the output download last; the replay computes the reference's values."""
    backend = device_backend("vulkan")
    g = chain_graph()
    x = np.random.default_rng(0).standard_normal((4, 64))
    with GraphPlan(backend, g) as plan:
        got = plan.run({"x": x})["d"]
        layout = plan.replay.layout
        handle = {n.name: id(n.dst.buffer.handle) for n in plan.nodes}
    kinds = [what[0] for what in layout]
    assert kinds == ["upload", "dispatch", "barrier", "dispatch", "dispatch", "barrier", "dispatch", "download"]
    assert layout[2][1] == {handle["a"]} and layout[5][1] == {handle["b"], handle["c"]}
    np.testing.assert_allclose(got.reshape(x.shape), (2 * x + x) * np.exp(x), rtol=1e-6)


def test_vulkan_barrier_before_overwriting_a_buffer_still_being_read():
    """Write after read: once a buffer's intermediate is dead the planner hands the buffer to a later node; that
    write waits for the earlier readers behind a barrier."""
    backend = device_backend("vulkan")
    g = Graph()
    x = g.input("x", (64,))
    a = g.op("SCALE", x, s=2.0, name="a")
    b = g.op("NEG", a, name="b")  # a's last reader
    c = g.op("EXP", x, name="c")  # takes a's buffer once b has read it
    g.output("d", g.op("ADD", b, c, name="d"))
    with GraphPlan(backend, g) as plan:
        a_buf, c_buf = plan.nodes[0].dst.buffer, plan.nodes[2].dst.buffer
        assert a_buf is c_buf, "the planner reuses a's buffer for c"
        layout = plan.replay.layout
    at_c = layout.index(("dispatch", 2))
    assert layout[at_c - 1][0] == "barrier" and id(c_buf.handle) in layout[at_c - 1][1]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_profiled_run_times_every_node(backend_name):
    backend = device_backend(backend_name)
    g = chain_graph()
    x = np.random.default_rng(0).standard_normal((4, 64))
    timings = []
    with GraphPlan(backend, g) as plan:
        out = plan.run({"x": x}, timings=timings)["d"]
    assert [name for name, _, _ in timings] == ["a", "b", "c", "d"]
    assert all(ns >= 0 for _, _, ns in timings) and sum(ns for _, _, ns in timings) > 0
    np.testing.assert_allclose(out, run_graph(NumpyBackend(), g, {"x": x})["d"], rtol=1e-6)
