"""Reproducers: a failing case as a standalone replay command and as a test-backend-ops test_case.

    python -m cases.replay --backend vulkan '<case json>'     # replays one case; exit 1 when it fails

`save_reproducer` writes both forms under reports/repro/ when a conformance test fails (the last write of a
Hypothesis test is its shrunk example, replayed last), and the test's failure message prints them.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from reference.ops import get_op
from reference.tensor import DType

from .harness import Case, Input, Layout, run_case

REPRO_DIR = Path(__file__).resolve().parent.parent / "reports" / "repro"


def case_to_json(case: Case) -> str:
    return json.dumps({
        "op": case.op, "seed": case.seed, "variant": case.variant, "params": dict(case.params),
        "inputs": [{"ne": list(i.ne), "dtype": i.dtype.label,
                    "layout": {"permute": list(i.layout.permute) if i.layout.permute else None,
                               "pad": list(i.layout.pad), "offset": i.layout.offset}} for i in case.inputs],
    }, separators=(",", ":"))


def case_from_json(text: str) -> Case:
    try:
        d = json.loads(text)
        inputs = tuple(Input(tuple(i["ne"]), DType[i["dtype"].upper()],
                             Layout(tuple(i["layout"]["permute"]) if i["layout"]["permute"] else None,
                                    tuple(i["layout"]["pad"]), i["layout"]["offset"])) for i in d["inputs"])
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in d["params"].items()}
        return Case(d["op"], inputs, tuple(sorted(params.items())), d["seed"], d["variant"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a case: {err}") from None


def replay_command(backend: str, case: Case) -> str:
    return f"python -m cases.replay --backend {backend} {shlex.quote(case_to_json(case))}"


# ---- test-backend-ops --------------------------------------------------------------------------------------------
_GGML_TYPE = {DType.F32: "GGML_TYPE_F32", DType.F16: "GGML_TYPE_F16", DType.I32: "GGML_TYPE_I32"}
_UNARY = {"SOFTPLUS": "ggml_softplus", "SIGMOID": "ggml_sigmoid", "SILU": "ggml_silu", "EXP": "ggml_exp",
          "NEG": "ggml_neg", "CUMSUM": "ggml_cumsum", "DIAG": "ggml_diag", "CONT": "ggml_cont",
          "SUM_ROWS": "ggml_sum_rows"}
_BINARY = {"ADD": "ggml_add", "SUB": "ggml_sub", "MUL": "ggml_mul", "DIV": "ggml_div", "MUL_MAT": "ggml_mul_mat",
           "SSM_CONV": "ggml_ssm_conv", "GET_ROWS": "ggml_get_rows"}


def _op_call(case: Case, args: list[str]) -> str:
    p = get_op(case.op).defaults(case.param_dict)
    op, a = case.op, args
    inplace = "_inplace" if p.get("inplace") else ""
    if op in _UNARY:
        return f"{_UNARY[op]}(ctx, {a[0]})"
    if op in _BINARY:
        return f"{_BINARY[op]}(ctx, {a[0]}, {a[1]})"
    if op in ("ACC", "SET"):
        return f"ggml_{op.lower()}{inplace}(ctx, {a[0]}, {a[1]}, {p['nb1']}, {p['nb2']}, {p['nb3']}, {p['offset']})"
    if op == "TRI":
        return f"ggml_tri(ctx, {a[0]}, GGML_TRI_TYPE_{p['type']})"
    if op == "FILL":
        return f"ggml_fill{inplace}(ctx, {a[0]}, {p['c']!r}f)"
    if op == "SOLVE_TRI":
        return f"ggml_solve_tri(ctx, {a[0]}, {a[1]}, /*left*/ true, /*lower*/ true, /*uni*/ false)"
    if op in ("L2_NORM", "RMS_NORM"):
        return f"ggml_{op.lower()}(ctx, {a[0]}, {p['eps']!r}f)"
    if op == "SCALE":
        return f"ggml_scale_bias(ctx, {a[0]}, {p['s']!r}f, {p['b']!r}f)"
    if op == "CPY":
        ne = list(p["ne"] or case.inputs[0].ne) + [1] * (4 - len(p["ne"] or case.inputs[0].ne))
        dst = f"ggml_new_tensor_4d(ctx, {_GGML_TYPE[DType[p['dtype'].upper()]]}, {', '.join(map(str, ne))})"
        return f"ggml_cpy(ctx, {a[0]}, {dst})"
    if op == "REPEAT":
        return f"ggml_repeat_4d(ctx, {a[0]}, {', '.join(map(str, p['ne']))})"
    if op == "PAD":
        return f"ggml_pad(ctx, {a[0]}, {', '.join(map(str, p['pad']))})"
    if op == "MUL_MAT_ID":
        return f"ggml_mul_mat_id(ctx, {a[0]}, {a[1]}, {a[2]})"
    if op == "ARGSORT":
        return f"ggml_argsort(ctx, {a[0]}, GGML_SORT_ORDER_{p['order']})"
    if op == "TOP_K":
        return f"ggml_top_k(ctx, {a[0]}, {p['k']})"
    if op == "SOFT_MAX_EXT":
        return f"ggml_soft_max_ext(ctx, {a[0]}, {a[1]}, {p['scale']!r}f, /*max_bias*/ 0.0f)"
    if op == "CONCAT":
        return f"ggml_concat(ctx, {a[0]}, {a[1]}, {p['dim']})"
    if op == "CLAMP":
        return f"ggml_clamp(ctx, {a[0]}, {p['min']!r}f, {p['max']!r}f)"
    if op == "GATED_DELTA_NET":  # K = 1: one state snapshot, the final state after the outputs (as here)
        return f"ggml_gated_delta_net(ctx, {', '.join(a)}, /*K*/ 1)"
    raise ValueError(f"no test-backend-ops form for {op}")


def test_backend_ops_case(case: Case, note: str = "") -> str:
    """A test_case struct for llama.cpp's tests/test-backend-ops.cpp that builds exactly this case: every input is
    a view (offset, padded strides, permutation) into its own tensor, as in the suite."""
    name = "test_repro_" + case.op.lower()
    lines = [f"// kimi-backend-ops reproducer: {case.label()}", *(f"// {ln}" for ln in note.splitlines() if ln),
             f"// values: seed {case.seed} from the op's domain in kimi-backend-ops (reference/ops.py); upstream",
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
        lines.append(f"        ggml_tensor * {v} = ggml_new_tensor_4d(ctx, {_GGML_TYPE[inp.dtype]}, "
                     f"{', '.join(map(str, backing))});")
        if any(lay.pad) or lay.offset:
            lines.append(f"        {v} = ggml_view_4d(ctx, {v}, {', '.join(map(str, store))}, {v}->nb[1], {v}->nb[2], "
                         f"{v}->nb[3], {lay.offset * inp.dtype.size});")
        if lay.permute:
            lines.append(f"        {v} = ggml_permute(ctx, {v}, {', '.join(map(str, lay.permute))});")
        lines.append(f'        ggml_set_name({v}, "{v}");')
        args.append(v)
    lines += [f"        ggml_tensor * out = {_op_call(case, args)};", '        ggml_set_name(out, "out");',
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

    parser = argparse.ArgumentParser(prog="python -m cases.replay", description="Replay one conformance case.")
    parser.add_argument("--backend", required=True)
    parser.add_argument("case", help="the case as JSON (printed by a failing test)")
    args = parser.parse_args(argv)
    try:
        case = case_from_json(args.case)
        backend = get_backend(check_name(args.backend))
    except (ValueError, RuntimeError) as err:
        parser.exit(2, f"python -m cases.replay: error: {err}\n")
    outcome = run_case(backend, case)
    print(outcome.report())
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
