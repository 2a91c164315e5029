"""python -m bench: the suite's command line.

Everything that can be refused is refused before any work runs, with exit code 2: unknown names, bad numbers (each
message names its flag), a backend named with --backend that cannot run here (`--backend all` skips those, one line
each on stderr), a throughput run that cannot fit the backend's memory, a history that cannot be appended to. Results
are printed before they are appended to the history; when that append fails anyway the error names the file, the
records are saved elsewhere (the message says where) and the exit code is 1.

  python -m bench [pp512 tg128] [-p 512] [-n 128] [-d 0,8192] [-b 2048 -ub 512] [-r 5] [-o md|csv|json|jsonl|sql]
                  [--backend vulkan,opencl|all] [--model tiny|<preset>|<file.gguf>] [--variant chunk16]
                  [--form absorbed] [--history PATH] [--no-record]
  python -m bench parity [--backend all] [--model tiny] [--variant chunk16] [--form absorbed] [--against llama.cpp]
  python -m bench ops [--op CUMSUM,ADD] [--backend opencl,vulkan|all] [--budget 0.5] [-r 5] [-o md|csv|json|jsonl|sql]
  python -m bench ops --type q4_K [--backend opencl] ...   (MUL_MAT with q4_K weights: mat-vec GB/s, n=512 GFLOPS)
  python -m bench support [--backend all]
  python -m bench delta-net [--backend all] [--variant all] [--S 128 --H 32 --T 512 --n-seqs 1] [--gda] [-r 3]
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

import backends as backend_registry
from backends import BACKENDS, TESTED_BACKENDS, check_name
from bench import llama_bench, reporting
from reference.delta_net import VARIANTS, check_variant
from reference.mla import check_form
from reference.ops import REGISTRY, get_op
from reports import history


# The name the user typed: the `kbo` console script or `python -m bench`, for usage lines and errors.
PROG = "kbo" if os.path.basename(sys.argv[0]) == "kbo" else "python -m bench"

def _list(value: str, known: list[str], what: str, check) -> list[str]:
    if value == "all":
        return list(known)
    names = [v.strip() for v in value.split(",") if v.strip()]
    for n in names:
        check(n)
    if not names:
        raise ValueError(f"no {what} given; known: {', '.join(known)}")
    return names


def _runnable(value: str, known: list[str]) -> list[str]:
    """The backends `value` names (or all of `known`) that can run here (backends.select)."""
    return backend_registry.select(_list(value, known, "backends", check_name), every=value == "all")


def _int_values(flag: str, given: list[str] | None, minimum: int, default: list[int]) -> list[int]:
    """The values of a repeatable flag in llama-bench's syntax (llama_bench.parse_int_range), in order, each once;
    `default` when the flag was not given."""
    if given is None:
        return default
    return list(dict.fromkeys(n for text in given for n in llama_bench.parse_int_range(flag, text, minimum)))


def _seconds(value: str) -> float:
    """argparse type of --budget: a finite number of seconds > 0."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes seconds, got {value!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {value!r}")
    return seconds


def _history_path(args) -> Path:
    """--history, else the default history (history.HISTORY, read at call time: tests point it elsewhere)."""
    given = getattr(args, "history", None)
    return Path(given) if given else history.HISTORY


def _record_args(p) -> None:
    """--no-record and --history, on every command that appends its results to the history."""
    p.add_argument("--no-record", dest="record", action="store_false", help="do not append the results to the history")
    p.add_argument("--history", metavar="PATH",
                   help=f"the history file to append to (default {history.HISTORY}, or $KBO_HISTORY)")


def _check_history(args) -> None:
    """Refuses (before any work) a history that cannot be appended to, unless --no-record."""
    if args.record:
        why = history.writable(_history_path(args))
        if why:
            raise ValueError(f"{why}; fix that, or pass --no-record to run without recording")


def _record(records: list[dict], args) -> int:
    """Appends the records (after they were printed). 0, or 1 when the append failed: the error names the history
    file and where the records were saved instead (or prints them), so no result is lost."""
    if not args.record or not records:
        return 0
    path = _history_path(args)
    try:
        history.append(records, path)
        return 0
    except OSError as err:
        problem = f"could not append {len(records)} record(s) to the history {path}: {err}"
    try:
        fd, spare = tempfile.mkstemp(prefix="kbo-unrecorded-", suffix=".jsonl")
        os.close(fd)
        history.append(records, spare)
        kept = f"they are saved in {spare} (append it with: cat {spare} >> {path})"
    except OSError:
        import json

        print("\n".join(json.dumps(history.stamp(r), sort_keys=True, default=str) for r in records), file=sys.stderr)
        kept = "they are printed above as JSON lines"
    print(f"{PROG}: error: {problem}; {kept}", file=sys.stderr, flush=True)
    return 1


def _print_table(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        print(df.to_csv(index=False))
    elif fmt == "json":
        print(df.to_json(orient="records", indent=1))
    else:
        print(df.to_markdown(index=False, floatfmt=".3g"))


def cmd_ops(args) -> int:
    from bench import ops as ops_bench

    if args.repetitions < 1:
        raise ValueError(f"-r/--repetitions must be >= 1, got {args.repetitions}")
    dtype = None if args.type is None else ops_bench.weight_type(args.type)
    all_ops = ["MUL_MAT"] if dtype else sorted(REGISTRY)  # --type: MUL_MAT's quantized cases
    op_names = [get_op(o).name for o in _list(args.op, all_ops, "ops", get_op)]
    ops_bench.perf_cases(op_names, dtype)  # refuses --type with another op before any backend starts
    backends = _runnable(args.backend, TESTED_BACKENDS)
    _check_history(args)
    records = ops_bench.run(op_names, backends, args.budget, args.repetitions, dtype)
    if args.output in ("json", "jsonl"):  # whole records: every round's sample, the ceilings' too
        import json
        print(json.dumps(records, indent=1) if args.output == "json" else "\n".join(json.dumps(r) for r in records))
    elif args.output == "sql":
        import datetime as dt

        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        print(ops_bench.to_sql(records, history.commit(), now))
    else:
        table = ops_table(records, percent=args.output == "md", quantized=dtype is not None)
        if not table.empty:
            _print_table(table if args.output == "csv" else table.astype(object).where(table.notna(), None),
                         args.output)  # None: a blank cell, where NaN prints nan
    return _record(records, args)


def ops_table(records: list[dict], percent: bool, quantized: bool = False) -> pd.DataFrame:
    """The supported ops' figures, each beside the ceiling it is held against (and why it exceeds it, where it does);
    fractions as percentages with `percent` (the markdown table), else as plain numbers (csv). `quantized` (--type):
    each row names its case and the GB/s of weights read, with their fraction of the ceiling."""
    rows = [r for r in records if r["kind"] == "ops" and r.get("supported")]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    cols = ["backend", "op", "us_per_run", "gb_s", "gflops", "bw_ceiling", "bw_ceiling_gb_s", "frac_bw_ceiling"]
    if quantized:
        cols[2:2] = ["case"]
        cols += ["weights_gb_s", "frac_weights_bw_ceiling"]
    if "frac_ceiling" in df:
        cols += ["ceiling", "ceiling_gflops", "frac_ceiling"]
    cols.append("over_ceiling_why")
    df = df[cols]
    if not percent:
        return df
    fractions = [c for c in ("frac_bw_ceiling", "frac_weights_bw_ceiling", "frac_ceiling") if c in df]
    return df.assign(**{c: (100 * df[c]).round(1) for c in fractions}).rename(
        columns={"bw_ceiling": "ceiling", "bw_ceiling_gb_s": "ceiling GB/s", "frac_bw_ceiling": "% of ceiling",
                 "weights_gb_s": "weights GB/s", "frac_weights_bw_ceiling": "weights % of ceiling",
                 "ceiling": "library", "ceiling_gflops": "library GFLOPS", "frac_ceiling": "% of library",
                 "over_ceiling_why": "above its ceiling because"})


def cmd_support(args) -> int:
    from bench import ops as ops_bench

    backends = _list(args.backend, list(BACKENDS), "backends", check_name)
    matrix = ops_bench.support_matrix(backends)
    df = pd.DataFrame.from_dict(matrix, orient="index")
    df.index.name = "op"
    _print_table(df.reset_index(), args.output)
    return 0


def cmd_delta_net(args) -> int:
    from bench import delta_net

    _list(args.backend, list(BACKENDS), "backends", check_name)
    variants = _list(args.variant, list(VARIANTS), "variants", check_variant)
    for name, value in (("--S", args.S), ("--H", args.H), ("--T", args.T), ("--n-seqs", args.n_seqs), ("-r", args.reps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    backends = _runnable(args.backend, list(BACKENDS))
    _check_history(args)
    records = delta_net.run(backends, variants, args.S, args.H, args.T, args.n_seqs, not args.gda, args.reps)
    df = pd.DataFrame(records)
    if df.empty:
        return _record(records, args)
    df["planned MiB"] = df["planned_compute_bytes"] / 2**20
    if "measured_compute_bytes" in df:
        df["measured MiB"] = df["measured_compute_bytes"] / 2**20
    chunk64 = df[df.variant == "chunk64"].set_index("backend")["planned MiB"]
    df["x chunk64"] = [row["planned MiB"] / chunk64[row.backend] if row.backend in chunk64 else float("nan")
                       for _, row in df.iterrows()]
    cols = [c for c in ["backend", "variant", "ms", "ms_std", "tokens_per_s", "planned MiB", "measured MiB",
                        "x chunk64", "reason"] if c in df]
    _print_table(df[cols], args.output)
    return _record(records, args)


def model_config(spec: str, n_layer: int | None, n_expert: int | None):
    """(config, None) of a preset, without drawing its weights; (config, weights) of a GGUF file."""
    from reference.config import PRESETS, get_config

    if spec.endswith(".gguf"):
        from reference.gguf_io import read_gguf

        if n_layer is not None or n_expert is not None:
            raise ValueError("--n-layer/--n-expert apply to presets; a GGUF file has its own shape")
        return read_gguf(spec)
    if spec not in PRESETS:
        raise ValueError(f"unknown model {spec!r}: give a preset ({', '.join(PRESETS)}) or a .gguf file")
    return get_config(spec, n_layer, n_expert), None


def _model_args(p, several_variants: bool) -> None:
    p.add_argument("--model", "-m", default="tiny", help="a preset (tiny, small, kimi-linear-48b-a3b) or a .gguf file")
    p.add_argument("--n-layer", type=int, default=None, help="override the preset's layer count")
    p.add_argument("--n-expert", type=int, default=None, help="override the preset's expert count")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--variant", default="chunk16", help="delta-net form of multi-token ubatches: recurrent, chunk64, "
                   "chunk16, block16" + (" (comma-separated, or all)" if several_variants else ""))
    p.add_argument("--form", default="absorbed", help="MLA form: absorbed (llama.cpp's cache) or decompressed")
    _record_args(p)


def _fitting(backends: list[str], run: str, need: dict, every: bool) -> list[str]:
    """The backends the run (described by `run`) fits (bench.throughput.check_memory). One named explicitly that it
    does not fit is an error; with `every` (`--backend all`) such backends are skipped, one line each on stderr, and
    it is an error when none is left."""
    from bench import throughput

    fitting, refusals = [], {}
    for name in backends:
        why = throughput.check_memory(name, need, backend_registry.get_backend(name).memory_limits())
        if why is None:
            fitting.append(name)
        else:
            refusals[name] = why
    if refusals and (not every or not fitting):
        raise ValueError(f"{run} does not fit: {'; '.join(refusals.values())}. Lower -d, the test sizes or -ub, or "
                         f"pick a smaller --model")
    for name, why in refusals.items():
        print(f"{name}: skipped ({why})", file=sys.stderr, flush=True)
    return fitting


def _bench_backends(value: str) -> tuple[str, bool]:
    """--backend of a pp/tg run as (our backends, in --backend's syntax, or "" for none; whether llama.cpp runs
    beside them). llama.cpp is an anchor, not one of ours: `all` leaves it out (`all,llama.cpp` adds it). Unknown
    names are refused."""
    from bench.throughput import LLAMA_CPP

    def check(name: str) -> str:
        try:
            return check_name(name)
        except ValueError as err:
            raise ValueError(f"{err}; and {LLAMA_CPP} (run beside them)") from None

    names = [v.strip() for v in value.split(",") if v.strip()]
    ours = ",".join(n for n in names if n != LLAMA_CPP)
    if ours or LLAMA_CPP not in names:
        _list(ours, TESTED_BACKENDS, "backends", check)
    return ours, LLAMA_CPP in names


def vs_llama_cpp(df: pd.DataFrame) -> list[str]:
    """Each row's avg_ts over llama.cpp's for the same test (depth included), as "0.17x"; "" where llama.cpp has no
    figure for that test."""
    from bench.throughput import LLAMA_CPP

    keys = ["test", "n_batch", "n_ubatch"]
    anchor = df[df.backend == LLAMA_CPP].set_index(keys)["avg_ts"].to_dict()
    return [f"{ts / anchor[key]:.2f}x" if key in anchor else "" for key, ts in
            zip(df[keys].itertuples(index=False, name=None), df.avg_ts)]


RANGES = "N, first-last, first-last+step or first-last*mult; comma-separated or repeated"


def throughput_parser() -> argparse.ArgumentParser:
    """The pp/tg command, llama-bench's flags and value syntax."""
    p = argparse.ArgumentParser(prog=PROG, description="llama-bench tests: ppN (prompt of N tokens), "
                                "tgN (N generated tokens), each after -d tokens of context. Every -p, -n, -d, -b "
                                f"and -ub takes {RANGES}.")
    p.add_argument("tests", nargs="*", metavar="TEST", help="ppN and tgN tests, e.g. pp512 tg128 (run with -p/-n's)")
    p.add_argument("-p", "--n-prompt", action="append", metavar="N",
                   help="prompt lengths, a ppN test each; 0: none (default 512 when no TEST is named)")
    p.add_argument("-n", "--n-gen", action="append", metavar="N",
                   help="generation lengths, a tgN test each; 0: none (default 128 when no TEST is named)")
    p.add_argument("-d", "--n-depth", "--depth", dest="depth", action="append", metavar="N",
                   help="tokens of context before each test (default 0)")
    p.add_argument("-b", "--batch-size", action="append", metavar="N", help="logical batch sizes (default 2048)")
    p.add_argument("-ub", "--ubatch-size", action="append", metavar="N",
                   help="physical batch sizes, clamped to the batch as llama.cpp does (default 512)")
    p.add_argument("-r", "--repetitions", type=int, default=5, metavar="N",
                   help="timed repetitions of each test, after one warm-up (default 5)")
    p.add_argument("-o", "--output", choices=llama_bench.FORMATS, default="md",
                   help="md: our table; csv, json, jsonl, sql: llama-bench's fields (scripts/compare-llama-bench.py "
                        "reads them) with ours after them (default md)")
    p.add_argument("--backend", default="all", help="comma-separated backends, or all; llama.cpp adds its figures")
    p.add_argument("--profile", type=int, nargs="?", const=15, default=0, metavar="N",
                   help="print kernel time per op and the N nodes with the most (default 15) for each test (stderr)")
    _model_args(p, several_variants=True)
    return p


def bench_tests(args) -> list:
    """The TESTs named, then a ppN per -p value and a tgN per -n value (0: none), each once; llama-bench's -p 512
    and -n 128 stand for a flag not given when no TEST is named."""
    from bench.throughput import BenchTest

    named = [BenchTest.parse(t) for t in args.tests]
    prompts = _int_values("-p", args.n_prompt, 0, [] if named else [512])
    gens = _int_values("-n", args.n_gen, 0, [] if named else [128])
    tests = list(dict.fromkeys(named + [BenchTest("pp", n) for n in prompts if n] +
                               [BenchTest("tg", n) for n in gens if n]))
    if not tests:
        raise ValueError("no test to run: name ppN/tgN tests or give -p/-n values other than 0")
    return tests


def print_results(records: list[dict], fmt: str) -> None:
    """md: our table, then a line per unsupported result; csv, json, jsonl, sql: llama-bench's printers over the
    results (bench.llama_bench), the unsupported lines on stderr so that stdout stays machine-readable."""
    rows = [r for r in records if r.get("supported")]
    if fmt != "md":
        print(llama_bench.PRINTERS[fmt](rows), end="")
    elif rows:
        memory = {"weights_bytes": "weights MiB", "state_bytes": "state MiB",
                  "compute_planned_bytes": "compute planned MiB", "compute_measured_bytes": "compute measured MiB"}
        df = pd.DataFrame(rows)
        df = df.reindex(columns=df.columns.union(["harness_overhead", *memory], sort=False))  # llama.cpp has none
        df["model"] = df["model_config"]  # the preset with its overrides, or the GGUF's name
        df["t/s"] = [f"{a:.2f} ± {s:.2f}" for a, s in zip(df.avg_ts, df.stddev_ts)]
        df["vs llama.cpp"] = vs_llama_cpp(df)
        df["harness %"] = (100 * df.harness_overhead).round(1)
        for col, label in memory.items():
            df[label] = df[col] / 2**20
        cols = ["model", "backend", "variant", "n_batch", "n_ubatch", "test", "t/s", "vs llama.cpp", "harness %",
                *memory.values()]
        table = df[cols].astype(object)
        _print_table(table.where(table.notna(), None), fmt)  # None: a blank cell, where NaN prints nan
    for r in records:
        if not r.get("supported"):
            print(f"{r['backend']}: {r['test']} unsupported: {r['reason']}", file=sys.stdout if fmt == "md" else
                  sys.stderr)


def cmd_throughput(argv: list[str]) -> int:
    from bench import throughput

    p = throughput_parser()
    args = p.parse_intermixed_args(argv)
    try:
        if args.profile < 0:
            raise ValueError(f"--profile must be >= 0, got {args.profile}")
        if args.repetitions < 1:
            raise ValueError(f"-r must be >= 1, got {args.repetitions}")
        tests = bench_tests(args)
        depths = _int_values("-d", args.depth, 0, [0])
        batches = [(b, ub) for b, ub in itertools.product(_int_values("-b", args.batch_size, 1, [2048]),
                                                          _int_values("-ub", args.ubatch_size, 1, [512]))]
        variants = _list(args.variant, list(VARIANTS), "variants", check_variant)
        check_form(args.form)
        ours, with_llama_cpp = _bench_backends(args.backend)
        c, weights = model_config(args.model, args.n_layer, args.n_expert)
        backends = _runnable(ours, TESTED_BACKENDS) if ours else []
        _check_history(args)
        runs = []  # (n_batch, n_ubatch, backends) per batch setting, every one checked before the first runs
        for n_batch, ubatch in batches:
            n_ubatch = min(n_batch, ubatch)  # llama.cpp's clamp
            if n_ubatch < ubatch:
                print(f"n_ubatch {ubatch} > n_batch {n_batch}: running ubatches of {n_ubatch} (llama.cpp's clamp)",
                      file=sys.stderr)
            run = (f"{' '.join(t.label(0) for t in tests)} at depth {','.join(map(str, depths))} with -b {n_batch} "
                   f"-ub {n_ubatch}")
            need = throughput.memory_need(c, tests, depths, variants, args.form, n_batch, n_ubatch,
                                          getattr(weights, "stored", None))
            runs.append((n_batch, n_ubatch, _fitting(backends, run, need, ours == "all") +
                         ([throughput.LLAMA_CPP] if with_llama_cpp else [])))
        if weights is None:
            from reference.weights import random_weights

            weights = random_weights(c, args.seed)
        records = []
        for n_batch, n_ubatch, names in runs:
            records += throughput.run(tests, depths, names, c, weights, args.model, variants, args.form, n_batch,
                                      n_ubatch, args.repetitions, args.profile)
    except ValueError as err:
        p.exit(2, f"{PROG}: error: {err}\n")
    print_results(records, args.output)
    return _record(records, args)


def cmd_parity(args) -> int:
    from bench import parity

    _list(args.backend, TESTED_BACKENDS, "backends", check_name)
    check_variant(args.variant)
    check_form(args.form)
    if args.prompt < 2 or args.decode < 0:
        raise ValueError("--prompt must be >= 2 and --decode >= 0")
    if args.nodes != "all" and not args.nodes.isdigit():
        raise ValueError(f"--nodes takes a count or all, got {args.nodes!r}")
    c, weights = model_config(args.model, args.n_layer, args.n_expert)
    # --against llama.cpp runs the reference alone: --backend plays no part
    backends = _runnable(args.backend, TESTED_BACKENDS) if args.against == "reference" else []
    _check_history(args)
    if weights is None:
        from reference.weights import random_weights

        weights = random_weights(c, args.seed)
    scenario = parity.Scenario(prompt=args.prompt, decode=args.decode)
    show = 10**9 if args.nodes == "all" else int(args.nodes)
    records, ok = parity.run_cli(backends, c, weights, args.model, args.variant, args.form, scenario, args.against,
                                 show)
    return max(0 if ok else 1, _record(records, args))


COMMANDS = ("ops", "support", "delta-net", "parity", *reporting.COMMANDS)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        return cmd_throughput(argv)  # llama-bench style: tests (pp512) or its flags (-p 512), or nothing
    # --help ends with the pp/tg command's own help: its flags have no subcommand to be found under
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     epilog="pp/tg, the command when no other is named:\n\n"
                                            + throughput_parser().format_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ops", help="per-op us/run, GB/s, GFLOPS (test-backend-ops perf mode) vs the backend's own "
                       "STREAM bandwidth and the library's GFLOPS")
    p.add_argument("--op", default="all", help="comma-separated op names, or all")
    p.add_argument("--type", metavar="TYPE",
                   help="quantized weights (q8_0, q4_0, q4_1, q5_0, q5_1, q2_K ... q6_K): time MUL_MAT's cases for "
                        "that type instead of the perf cases: the mat-vec at Kimi's 2304 x 9216 (GB/s of weights "
                        "read) and 512 columns (GFLOPS)")
    p.add_argument("--backend", default="all", help="comma-separated backends, or all")
    p.add_argument("--budget", type=_seconds, default=0.5,
                   help="seconds of timed runs per op, shared by its rounds (default 0.5)")
    p.add_argument("-r", "--repetitions", type=int, default=5,
                   help="rounds, interleaved over every op; us/run is their median (default 5)")
    _record_args(p)
    p.add_argument("-o", "--output", choices=["md", "csv", "json", "jsonl", "sql"], default="md",
                   help="md or csv: the table; json or jsonl: the whole records; sql: test-backend-ops' "
                        "test_backend_ops table")
    p.set_defaults(func=cmd_ops)
    p = sub.add_parser("support", help="the op x backend support matrix (test-backend-ops support mode)")
    p.add_argument("--backend", default="all")
    p.add_argument("-o", "--output", choices=["md", "csv", "json"], default="md")
    p.set_defaults(func=cmd_support)
    p = sub.add_parser("delta-net", help="delta-net variants: time and compute buffer per variant per backend")
    p.add_argument("--backend", default="all")
    p.add_argument("--variant", default="all", help="comma-separated: recurrent, chunk64, chunk16, block16, or all")
    p.add_argument("--S", type=int, default=128, help="head size (default 128, Kimi)")
    p.add_argument("--H", type=int, default=32, help="heads (default 32, Kimi)")
    p.add_argument("--T", type=int, default=512, help="tokens per sequence (default 512)")
    p.add_argument("--n-seqs", type=int, default=1)
    p.add_argument("--gda", action="store_true", help="one gate per head (Qwen3-Next GDA) instead of KDA's per channel")
    p.add_argument("-r", "--reps", type=int, default=3)
    _record_args(p)
    p.add_argument("-o", "--output", choices=["md", "csv", "json"], default="md")
    p.set_defaults(func=cmd_delta_net)
    p = sub.add_parser("parity", help="the model graph on backends vs the reference (or the reference vs llama.cpp)")
    p.add_argument("--backend", default="all")
    p.add_argument("--against", choices=["reference", "llama.cpp"], default="reference",
                   help="reference: each backend vs the NumPy reference; llama.cpp: the reference vs llama.cpp "
                        "on the same GGUF")
    p.add_argument("--prompt", type=int, default=70, help="prompt tokens per sequence (default 70: crosses chunks)")
    p.add_argument("--decode", type=int, default=3, help="decode steps after the prompt (default 3)")
    p.add_argument("--nodes", default="12", help="how many nodes to print, closest to their bound first, or all")
    _model_args(p, several_variants=False)
    p.set_defaults(func=cmd_parity)
    reporting.add_commands(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        parser.exit(2, f"{PROG}: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
