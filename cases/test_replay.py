"""`python -m cases.replay`: a bad or absurd case is refused in one line (exit 2) before any backend starts or any
buffer is allocated; the size cap counts exactly the buffers the harness builds; every reproducer the suite prints
is still accepted."""
import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import backends
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.case import Case, Input, Layout
from reference.ops import REGISTRY, get_op

from . import harness, replay

ROOT = Path(__file__).resolve().parent.parent


def _input(ne, dtype="f32", permute=None, pad=(0, 0, 0, 0), offset=0):
    return {"ne": ne, "dtype": dtype, "layout": {"permute": permute, "pad": list(pad), "offset": offset}}


def _case(op="ADD", inputs=None, **extra):
    d = {"op": op, "seed": 0, "params": {},
         "inputs": [_input([8, 2]), _input([8, 2])] if inputs is None else inputs}
    return json.dumps({**d, **extra})


# Each row: the case, and the start of the one-line message after "python -m cases.replay: error: " (a regex for
# the rows whose wording is the op's own, in reference/ops/: only what names the problem is pinned there).
OP_SAYS = "(?s:.*)"
REFUSED = {
    "malformed-json": ('{"op":"ADD",', "not a case: malformed JSON (Expecting property name"),
    "not-an-object": ("[1, 2]", "the case must be a JSON object with op, inputs, params, seed, got [1, 2]"),
    "unknown-key": (_case(param={}), "the case has unknown key(s) param; known: op, inputs, params, seed"),
    "unknown-op": (_case("FROB"), "unknown op 'FROB'; known ops: ACC, ADD,"),
    "op-not-a-name": (_case(7), "op must be an op name, got 7"),
    "one-input-for-two": (_case(inputs=[_input([8, 2])]), "ADD takes 2 input(s), the case has 1"),
    "three-inputs-for-two": (_case(inputs=[_input([8])] * 3), "ADD takes 2 input(s), the case has 3"),
    "dtype-q9_0": (_case(inputs=[_input([8], "q9_0"), _input([8])]),
                   'input 0 dtype must be one of f32, f16, i32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, q3_K, '
                   'q4_K, q5_K, q6_K, got "q9_0"'),
    "dtype-number": (_case(inputs=[_input([8]), _input([8], 5)]),
                     "input 1 dtype must be one of f32, f16, i32, bf16, q8_0"),
    "dtype-i32-for-add": (_case(inputs=[_input([8], "i32"), _input([8])]), re.compile("ADD src0 .*i32")),
    "ne-negative": (_case(inputs=[_input([-8, 2]), _input([8, 2])]), "input 0 ne[0] must be >= 0, got -8"),
    "ne-fraction": (_case(inputs=[_input([8.5]), _input([8])]), "input 0 ne[0] must be an integer, got 8.5"),
    "ne-five-dims": (_case(inputs=[_input([8, 2, 1, 1, 1]), _input([8])]),
                     "input 0 ne must be a list of 1 to 4 integers, got [8, 2, 1, 1, 1]"),
    "ne-1e12-elements": (_case(inputs=[_input([10**6, 10**6])] * 2),
                         "the case needs 7.28 TiB of buffers (input 0 3.64 TiB, input 1 3.64 TiB), over the "
                         "--max-bytes cap of 1 GiB"),
    "pad-1e9": (_case(inputs=[_input([8, 2], pad=(0, 0, 0, 10**9)), _input([8, 2])]),
                "the case needs 59.6 GiB of buffers (input 0 59.6 GiB, input 1 128 B), over"),
    "offset-1e12": (_case(inputs=[_input([8, 2], offset=10**12), _input([8, 2])]),
                    "the case needs 3.64 TiB of buffers (input 0 3.64 TiB, input 1 128 B), over"),
    "permute-not-a-permutation": (_case(inputs=[_input([8, 2], permute=[0, 0, 0, 0]), _input([8, 2])]),
                                  "input 0 layout permute must be a permutation of 0..3, got [0, 0, 0, 0]"),
    "unknown-param": (_case(params={"zzz": 1}), "ADD has no parameter(s) ['zzz']; it takes []"),
    "param-type": (_case("SCALE", [_input([8])], params={"s": "x"}), "SCALE parameter s must be a number"),
    "param-absurd-output": (_case("REPEAT", [_input([1])], params={"ne": [10**5, 10**5, 100, 1]}),
                            "the case needs 3.64 TiB of buffers (input 0 68 B, output 3.64 TiB), over"),
    "param-absurd-k": (_case("TOP_K", [_input([8])], params={"k": 10**9}), re.compile("TOP_K .*1000000000")),
    "param-absurd-view": (_case("ACC", [_input([8, 8]), _input([4, 4])], params={"nb1": 10**15, "nb2": 10**15,
                                                                                 "nb3": 10**15}),
                          re.compile(OP_SAYS + "1000000000000000")),
    "param-bad-name": (_case("CPY", [_input([8])], params={"dtype": "q4"}), re.compile("CPY" + OP_SAYS + "q4")),
    "seed-string": (_case(seed="x"), 'seed must be an integer, got "x"'),
}


@pytest.fixture
def no_backend_no_run(monkeypatch):
    """Starting a backend or running the case fails the test: refusals must come before both."""
    def started(*args, **kwargs):
        raise AssertionError("a backend was started or the case was run before the case was checked")

    monkeypatch.setattr(backends, "get_backend", started)
    monkeypatch.setattr(replay, "run_case", started)


@pytest.mark.parametrize("row", REFUSED)
def test_refused_in_one_line_before_any_backend(row, capsys, no_backend_no_run):
    text, message = REFUSED[row]
    with pytest.raises(SystemExit) as done:
        replay.main(["--backend", "opencl", text])
    out, err = capsys.readouterr()
    assert done.value.code == 2 and not out, (out, err)
    prefix = "python -m cases.replay: error: "
    assert err.startswith(prefix) and err.count("\n") == 1, err
    if isinstance(message, re.Pattern):
        assert message.match(err[len(prefix):]), err
    else:
        assert err[len(prefix):].startswith(message), err


def test_unsupported_exits_3(capsys, monkeypatch):
    def unsupported(backend, case):  # what run_case raises when backend.supports() refuses the node
        raise NotImplementedError(f"{backend.name} does not support {case.label()}: no kernel for it")

    monkeypatch.setattr(replay, "run_case", unsupported)
    assert replay.main(["--backend", "numpy", _case()]) == 3
    assert capsys.readouterr().out == \
        "unsupported: numpy does not support ADD(type=f32,ne_a=[8,2],ne_b=[8,2]): no kernel for it\n"


def test_absurd_case_on_opencl_in_a_fresh_process():
    """The command as a user runs it: a 1e12-element case exits 2 with one line, without starting OpenCL (an address
    space limit of 8 GiB turns an attempt to allocate into a failure, not a swapping machine)."""
    limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    done = subprocess.run([sys.executable, "-m", "cases.replay", "--backend", "opencl", REFUSED["ne-1e12-elements"][0]],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert done.returncode == 2 and not done.stdout, done.stdout + done.stderr
    assert done.stderr.startswith("python -m cases.replay: error: the case needs 7.28 TiB of buffers"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


# ---- the size cap ----------------------------------------------------------------------------------------------
PADDED = Case.of("ADD", Input((8, 2), layout=Layout(pad=(1, 0, 0, 0), offset=3)),
                 Input((8, 2), layout=Layout(permute=(1, 0, 2, 3))))


def _allocated(case: Case) -> int:
    srcs, dst, _, _ = harness.host_buffers(case)
    return sum(s.raw.nbytes for s in srcs) + (dst.raw.nbytes if dst is not None else 0)


def test_case_bytes_counts_padding_offset_guards_and_output():
    # a: (3 offset + 9*2 backing) f32 + 64 guard; b: 16 f32 + 64; out: 16 f32 + 2*64 guards
    assert replay.case_bytes(PADDED) == (3 + 18) * 4 + 64 + 16 * 4 + 64 + 16 * 4 + 128 == _allocated(PADDED) == 468
    assert replay.case_bytes(PADDED, max_bytes=468) == 468
    with pytest.raises(ValueError, match=r"needs 468 B of buffers \(input 0 148 B, input 1 128 B, output 192 B\), "
                                         r"over the --max-bytes cap of 467 B"):
        replay.case_bytes(PADDED, max_bytes=467)


def test_case_bytes_is_what_the_harness_allocates():
    """For every pinned case (views, padding, offsets, in place ones): the bytes counted on descriptors are the
    bytes host_buffers allocates."""
    n_inplace = 0
    for op in sorted(REGISTRY):
        for case in get_op(op).pinned():
            assert replay.case_bytes(case) == _allocated(case), case.label()
            n_inplace += bool(case.param_dict.get("inplace"))
    assert n_inplace > 0


def test_max_bytes_option(capsys):
    text = replay.case_to_json(PADDED)
    with pytest.raises(SystemExit) as done:
        replay.main(["--backend", "numpy", "--max-bytes", "400", text])
    assert done.value.code == 2
    assert "needs 468 B of buffers (input 0 148 B, input 1 128 B, output 192 B), over the --max-bytes cap of 400 B" \
        in capsys.readouterr().err
    assert replay.main(["--backend", "numpy", "--max-bytes", "1KiB", text]) == 0
    with pytest.raises(SystemExit) as done:
        replay.main(["--backend", "numpy", "--max-bytes", "lots", text])
    assert done.value.code == 2 and "a size is a number of bytes" in capsys.readouterr().err


@pytest.mark.parametrize("text, size", [("1GiB", 2**30), ("512 MiB", 2**29), ("4096", 4096), ("1.5GB", 1.5e9),
                                        ("2kib", 2048)])
def test_parse_size(text, size):
    assert replay.parse_size(text) == size


# ---- every reproducer the suite prints is still accepted ------------------------------------------------------
def _normalized(case: Case) -> Case:  # JSON has no tuples: list parameters come back as tuples
    return Case(case.op, case.inputs, tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in case.params),
                case.seed)


def test_every_pinned_case_round_trips():
    for op in sorted(REGISTRY):
        for case in get_op(op).pinned():
            assert replay.case_from_json(replay.case_to_json(case)) == _normalized(case), case.label()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_drawn_cases_round_trip(data):
    op = data.draw(st.sampled_from(sorted(REGISTRY)))
    case = data.draw(get_op(op).strategy())
    back = replay.case_from_json(replay.case_to_json(case))
    assert back == _normalized(case)
    replay.case_bytes(back, replay.DEFAULT_MAX_BYTES)
