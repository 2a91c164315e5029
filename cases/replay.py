"""Reproducers: a failing case as a standalone replay command and as a test-backend-ops test_case.

    python -m cases.replay --backend vulkan '<case json>' [--max-bytes 1GiB]

exits 0 when the case passes, 1 when it fails, 2 when the case is refused and 3 when the backend does not run it.
A case is checked whole before anything is allocated or any backend starts: JSON, op name, input count, every ne,
dtype, layout and parameter by type, the op's own shape rules on buffer-less descriptors, and the bytes its buffers
would take (inputs with their layouts' offset and padding, and the output, guard bytes included) against
--max-bytes. A refusal is one line on stderr.

`save_reproducer` writes both forms under reports/repro/ when a conformance test fails (the last write of a
Hypothesis test is its shrunk example, replayed last), and the test's failure message prints them.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

from reference.case import Case, Input, Layout
from reference.ops import get_op
from reference.tensor import DType

from .harness import GUARD, output_offset, run_case

REPRO_DIR = Path(__file__).resolve().parent.parent / "reports" / "repro"


def case_to_json(case: Case) -> str:
    return json.dumps({
        "op": case.op, "seed": case.seed, "params": dict(case.params),
        "inputs": [{"ne": list(i.ne), "dtype": i.dtype.label,
                    "layout": {"permute": list(i.layout.permute) if i.layout.permute else None,
                               "pad": list(i.layout.pad), "offset": i.layout.offset}} for i in case.inputs],
    }, separators=(",", ":"))


_DTYPES = {d.label: d for d in DType}
_CASE_KEYS = ("op", "inputs", "params", "seed")
_LAYOUT_KEYS = ("permute", "pad", "offset")


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(value, what: str, lo: int | None = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {_show(value)}")
    if lo is not None and value < lo:
        raise ValueError(f"{what} must be >= {lo}, got {value}")
    return value


def _ints(value, what: str, n_min: int = 1, n_max: int = 4, lo: int | None = 0) -> tuple[int, ...]:
    if not isinstance(value, list) or not n_min <= len(value) <= n_max:
        raise ValueError(f"{what} must be a list of {n_min} to {n_max} integers, got {_show(value)}")
    return tuple(_int(v, f"{what}[{i}]", lo) for i, v in enumerate(value))


def _object(value, what: str, known: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object with {', '.join(known)}, got {_show(value)}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{what} has unknown key(s) {', '.join(unknown)}; "
                         + (f"known: {', '.join(known)}" if known else "it takes none"))
    missing = [k for k in required if k not in value]
    if missing:
        raise ValueError(f"{what} has no {', '.join(missing)}")
    return value


def case_from_json(text: str) -> Case:
    """The case printed by case_to_json, every field checked: raises ValueError with one line naming what is wrong
    (malformed JSON, an unknown op or key, a wrong input count, a bad ne, dtype or layout). Parameters are the op's
    to judge (OpSpec.validate, through case_bytes)."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not a case: malformed JSON ({err})") from None
    d = _object(d, "the case", _CASE_KEYS, required=("op", "inputs"))
    if not isinstance(d["op"], str):
        raise ValueError(f"op must be an op name, got {_show(d['op'])}")
    op = get_op(d["op"])
    raw_inputs = d["inputs"]
    if not isinstance(raw_inputs, list):
        raise ValueError(f"inputs must be a list, got {_show(raw_inputs)}")
    if len(raw_inputs) != op.n_src:
        raise ValueError(f"{op.name} takes {op.n_src} input(s), the case has {len(raw_inputs)}")
    inputs = []
    for i, raw in enumerate(raw_inputs):
        raw = _object(raw, f"input {i}", ("ne", "dtype", "layout"), required=("ne", "dtype"))
        ne = _ints(raw["ne"], f"input {i} ne")
        if raw["dtype"] not in _DTYPES:
            raise ValueError(f"input {i} dtype must be one of {', '.join(_DTYPES)}, got {_show(raw['dtype'])}")
        lay = _object(raw.get("layout") or {}, f"input {i} layout", _LAYOUT_KEYS)
        permute = lay.get("permute")
        if permute is not None:
            permute = _ints(permute, f"input {i} layout permute", 4, 4)
            if sorted(permute) != [0, 1, 2, 3]:
                raise ValueError(f"input {i} layout permute must be a permutation of 0..3, got {list(permute)}")
        pad = _ints(lay.get("pad", [0, 0, 0, 0]), f"input {i} layout pad")
        offset = _int(lay.get("offset", 0), f"input {i} layout offset")
        inputs.append(Input(ne, _DTYPES[raw["dtype"]], Layout(permute, pad + (0,) * (4 - len(pad)), offset)))
    params = d.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"params must be a JSON object, got {_show(params)}")
    # JSON has no tuples; the op's own rules (case_bytes) check each parameter's kind
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    seed = _int(d.get("seed", 0), "seed")
    return Case(op.name, tuple(inputs), tuple(sorted(params.items())), seed)


# ---- the size of a case, before anything is allocated -------------------------------------------------------------
# 1 GiB of buffers per case. The suite's own cases are far below it (the largest pinned upstream case takes 4.6 MiB,
# bench ops' large ones 16 MiB per operand), so a larger case is a typo or a corrupted reproducer; and a run holds
# its buffers several times at once (host, reference copy, device copy, read-backs, the float64 comparison of the
# output: about 5x), so a case at the cap still fits the memory of a CI runner or a GPU. --max-bytes raises it.
DEFAULT_MAX_BYTES = 1 << 30
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(text: str) -> int:
    """'1GiB', '512MiB', '4096', '1.5GB' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"a size is a number of bytes with an optional unit (KiB, MiB, GiB, kB, MB, GB), "
                         f"got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _human(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def case_bytes(case: Case, max_bytes: int | None = None) -> int:
    """Bytes of the buffers the harness builds for `case` (each input's backing with its layout's offset and
    padding, and the output, guard bytes included), found from buffer-less descriptors: nothing is allocated.
    Checks the op's own rules on the way (input dtypes, shapes, parameters: ValueError) and refuses, when max_bytes
    is given, a case past it - the inputs before the op's rules run, the total after."""
    op = get_op(case.op)
    srcs, parts, total = [], [], 0
    for i, inp in enumerate(case.inputs):
        n = inp.backing_bytes() + GUARD
        total += n
        parts.append(f"input {i} {_human(n)}")
        srcs.append(inp.descriptor())

    def check(total: int) -> None:
        if max_bytes is not None and total > max_bytes:
            raise ValueError(f"the case needs {_human(total)} of buffers ({', '.join(parts)}), over the "
                             f"--max-bytes cap of {_human(max_bytes)}")

    check(total)
    try:
        params = op.validate(srcs, case.param_dict)
        dst = op.output(srcs, params)
    except (TypeError, OverflowError, KeyError) as err:  # a parameter of the right kind the op cannot use
        raise ValueError(f"{case.label()}: {type(err).__name__} {err}") from None
    if not op.writes_in_place(params):
        n = output_offset(dst.dtype) + dst.nbytes() + GUARD
        total += n
        parts.append(f"output {_human(n)}")
        check(total)
    return total


def replay_command(backend: str, case: Case) -> str:
    return f"python -m cases.replay --backend {backend} {shlex.quote(case_to_json(case))}"


# ---- test-backend-ops --------------------------------------------------------------------------------------------
def _ggml_type(dtype: DType) -> str:
    return f"GGML_TYPE_{dtype.name}"  # our member names are ggml's


def ggml_call_text(case: Case, names: list[str]) -> str:
    """The op's ggml call in C, rendered from its record's GgmlCall (the ggml backend runs the same description)."""
    op = get_op(case.op)
    srcs = [inp.descriptor() for inp in case.inputs]
    params = op.validate(srcs, case.param_dict)
    dst = op.output(srcs, params)
    new_dst = f"ggml_new_tensor_4d(ctx, {_ggml_type(dst.dtype)}, {', '.join(map(str, dst.ne))})"
    return op.ggml.c_call(op.param_kinds, params, op.writes_in_place(params), names, new_dst)


def test_backend_ops_case(case: Case, note: str = "") -> str:
    """A test_case struct for llama.cpp's tests/test-backend-ops.cpp that builds exactly this case: every input is
    a view (offset, padded strides, permutation) into its own tensor, as in the suite."""
    name = "test_repro_" + case.op.lower()
    lines = [f"// kimi-backend-ops reproducer: {case.label()}", *(f"// {ln}" for ln in note.splitlines() if ln),
             f"// values: seed {case.seed} from the op's domain in kimi-backend-ops (reference/ops/); upstream",
             "// fills uniform [-1, 1], so override initialize_tensors() if the failure needs the domain.",
             f"struct {name} : public test_case {{",
             f"    std::string vars() override {{ return {json.dumps(case.label())}; }}",
             "    ggml_tensor * build_graph(ggml_context * ctx) override {"]
    args = []
    for i, inp in enumerate(case.inputs):
        v = "abcdefg"[i]
        lay = inp.layout
        store = lay.storage_ne(inp.ne)
        backing = [n + pad for n, pad in zip(store, lay.pad)]
        lines.append(f"        ggml_tensor * {v} = ggml_new_tensor_4d(ctx, {_ggml_type(inp.dtype)}, "
                     f"{', '.join(map(str, backing))});")
        if any(lay.pad) or lay.offset:
            lines.append(f"        {v} = ggml_view_4d(ctx, {v}, {', '.join(map(str, store))}, {v}->nb[1], {v}->nb[2], "
                         f"{v}->nb[3], {inp.dtype.row_bytes(lay.offset)});")
        if lay.permute:
            lines.append(f"        {v} = ggml_permute(ctx, {v}, {', '.join(map(str, lay.permute))});")
        lines.append(f'        ggml_set_name({v}, "{v}");')
        args.append(v)
    lines += [f"        ggml_tensor * out = {ggml_call_text(case, args)};", '        ggml_set_name(out, "out");',
              "        return out;", "    }", "};",
              f"// in make_test_cases_eval(): test_cases.emplace_back(new {name}());"]
    return "\n".join(lines)


def save_reproducer(backend: str, case: Case, report: str, kind: str) -> str:
    """Write both reproducers under reports/repro/ and return the text shown with the failure."""
    try:
        cpp = test_backend_ops_case(case, report)
    except ValueError as err:
        cpp = f"// {err}"
    text = (f"{report}\n\nReplay this case:\n  {replay_command(backend, case)}\n\n"
            f"As a test-backend-ops case:\n{cpp}\n")
    REPRO_DIR.mkdir(parents=True, exist_ok=True)
    path = REPRO_DIR / f"{backend}-{case.op}-{kind}.md"
    tmp = path.with_suffix(f".{id(text)}.tmp")
    tmp.write_text(text)
    tmp.replace(path)  # whole file or nothing, also under pytest-xdist
    return text + f"\n(saved to {path})"


def main(argv=None) -> int:
    from backends import check_name, get_backend

    parser = argparse.ArgumentParser(prog="python -m cases.replay", description="Replay one conformance case: "
                                     "exit 0 passed, 1 failed, 2 refused, 3 unsupported by the backend.")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--max-bytes", help="refuse a case whose buffers (inputs with their layouts' offset and "
                        f"padding, and the output) need more than this, e.g. 4GiB "
                        f"(default {_human(DEFAULT_MAX_BYTES)})")
    parser.add_argument("case", help="the case as JSON (printed by a failing test)")
    args = parser.parse_args(argv)

    def refuse(err) -> None:
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(err).split())}\n")  # one line, whatever the message

    try:  # everything about the case before any backend starts or anything is allocated
        check_name(args.backend)
        case = case_from_json(args.case)
        case_bytes(case, DEFAULT_MAX_BYTES if args.max_bytes is None else parse_size(args.max_bytes))
        backend = get_backend(args.backend)
    except (ValueError, RuntimeError) as err:
        refuse(err)
    try:
        outcome = run_case(backend, case)
    except NotImplementedError as err:  # the backend does not claim this (op, type, layout)
        print(f"unsupported: {err}")
        return 3
    print(outcome.report())
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
