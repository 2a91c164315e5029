"""python -m bench: the suite's command line.

  python -m bench ops [--op CUMSUM,ADD] [--backend opencl,vulkan|all] [--budget 0.5] [-o md|csv|json]
  python -m bench support [--backend all]
  python -m bench delta-net [--backend all] [--variant all] [--S 128 --H 32 --T 512 --n-seqs 1] [--gda] [-r 3]
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from backends import BACKENDS, TESTED_BACKENDS, check_name
from reference.ops import REGISTRY, get_op
from reports import history


def _list(value: str, known: list[str], what: str, check) -> list[str]:
    if value == "all":
        return list(known)
    names = [v.strip() for v in value.split(",") if v.strip()]
    for n in names:
        check(n)
    if not names:
        raise ValueError(f"no {what} given; known: {', '.join(known)}")
    return names


def _print_table(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        print(df.to_csv(index=False))
    elif fmt == "json":
        print(df.to_json(orient="records", indent=1))
    else:
        print(df.to_markdown(index=False, floatfmt=".3g"))


def cmd_ops(args) -> int:
    from bench import ops as ops_bench

    op_names = [get_op(o).name for o in _list(args.op, sorted(REGISTRY), "ops", get_op)]
    backends = _list(args.backend, TESTED_BACKENDS, "backends", check_name)
    records = ops_bench.run(op_names, backends, args.budget)
    if args.record:
        history.append(records, history.HISTORY)
    rows = [r for r in records if r["kind"] == "ops" and r.get("supported")]
    if rows:
        df = pd.DataFrame(rows)
        cols = ["backend", "op", "us_per_run", "gb_s", "gflops", "copy_gb_s", "frac_copy"]
        df["frac_copy"] = (100 * df["frac_copy"]).round(1)
        if "frac_ceiling" in df:
            df["frac_ceiling"] = (100 * df["frac_ceiling"]).round(1)
            cols += ["ceiling_gflops", "frac_ceiling"]
        _print_table(df[cols].rename(columns={"frac_copy": "% of copy", "frac_ceiling": "% of BLAS"}), args.output)
    return 0


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
    from reference.delta_net import VARIANTS, check_variant

    backends = _list(args.backend, list(BACKENDS), "backends", check_name)
    variants = _list(args.variant, list(VARIANTS), "variants", check_variant)
    for name, value in (("--S", args.S), ("--H", args.H), ("--T", args.T), ("--n-seqs", args.n_seqs), ("-r", args.reps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    records = delta_net.run(backends, variants, args.S, args.H, args.T, args.n_seqs, not args.gda, args.reps)
    if args.record:
        history.append(records, history.HISTORY)
    df = pd.DataFrame(records)
    if df.empty:
        return 0
    df["planned MiB"] = df["planned_compute_bytes"] / 2**20
    if "measured_compute_bytes" in df:
        df["measured MiB"] = df["measured_compute_bytes"] / 2**20
    chunk64 = df[df.variant == "chunk64"].set_index("backend")["planned MiB"]
    df["x chunk64"] = [row["planned MiB"] / chunk64[row.backend] if row.backend in chunk64 else float("nan")
                       for _, row in df.iterrows()]
    cols = [c for c in ["backend", "variant", "ms", "ms_std", "tokens_per_s", "planned MiB", "measured MiB",
                        "x chunk64", "reason"] if c in df]
    _print_table(df[cols], args.output)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ops", help="per-op us/run, GB/s, GFLOPS vs the backend's copy bandwidth")
    p.add_argument("--op", default="all", help="comma-separated op names, or all")
    p.add_argument("--backend", default="all", help="comma-separated backends, or all")
    p.add_argument("--budget", type=float, default=0.5, help="seconds of timed runs per op (default 0.5)")
    p.add_argument("--no-record", dest="record", action="store_false", help="do not append to reports/history.jsonl")
    p.add_argument("-o", "--output", choices=["md", "csv", "json"], default="md")
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
    p.add_argument("--no-record", dest="record", action="store_false")
    p.add_argument("-o", "--output", choices=["md", "csv", "json"], default="md")
    p.set_defaults(func=cmd_delta_net)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        parser.exit(2, f"python -m bench: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
