"""The reporting commands of `python -m bench`:

  python -m bench report  [-o reports/out] [--baseline COMMIT|YYYY-MM-DD|previous] [--history PATH]
  python -m bench compare --baseline COMMIT|YYYY-MM-DD|previous [--threshold 0.05] [--alpha 0.05] [--history PATH]
  python -m bench nightly [--baseline COMMIT|YYYY-MM-DD|previous] [--quick]

compare exits 1 on a significant regression or a new failure; nightly also when one of its steps failed. Bad input
(an unknown baseline, an empty history) raises ValueError, which `python -m bench` turns into exit code 2.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from reports import history
from reports.compare import compare, failing, split

# reports.report (matplotlib) is imported by the handlers that use it: `python -m bench ops` should not pay for it.

ROOT = Path(__file__).resolve().parent.parent
NIGHTLY_DIR = ROOT / "reports" / "nightly"
OUTPUT_TAIL_LINES = 40  # of a failed step's output, kept in the nightly report


SHOW_SKIPPED = 3  # malformed lines named one by one on stderr; the rest are counted


def _records(path) -> list[dict]:
    """The history's usable records. Lines that are not (torn writes, JSON that is no record, records without the
    fields their kind needs) are skipped, and counted on stderr with the first few named."""
    path = Path(path or history.HISTORY)  # read at call time: tests point history.HISTORY elsewhere
    if not path.exists():
        raise ValueError(f"no history at {path}")
    skipped: list[tuple[int, str]] = []
    records = history.load(path, skipped=skipped)
    if skipped:
        named = "; ".join(f"line {n}: {why}" for n, why in skipped[:SHOW_SKIPPED])
        more = f"; and {len(skipped) - SHOW_SKIPPED} more" if len(skipped) > SHOW_SKIPPED else ""
        print(f"python -m bench: skipped {len(skipped)} malformed line{'s' if len(skipped) > 1 else ''} of {path} "
              f"({named}{more})", file=sys.stderr, flush=True)
    if not records:
        raise ValueError(f"the history {path} holds no records")
    return records


def cmd_report(args) -> int:
    from reports.report import render_report

    records = _records(args.history)
    if args.baseline:
        split(records, args.baseline)  # refuse a bad baseline before rendering anything
    path = render_report(records, args.output, "kimi-backend-ops report", baseline=args.baseline)
    print(f"report written to {path}")
    return 0


def _print_comparison(table: pd.DataFrame, baseline: str) -> None:
    from reports.report import markdown_table

    if table.empty:
        print(f"no config was measured both in the baseline ({baseline}) and now")
        return
    print(markdown_table(table))
    bad = failing(table)
    print(f"\n{len(bad)} significant regression(s) or new failure(s) in {len(table)} matched configs")


def cmd_compare(args) -> int:
    table = compare(_records(args.history), args.baseline, args.threshold, args.alpha)
    _print_comparison(table, args.baseline)
    return 1 if len(failing(table)) else 0


# ---- nightly ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Step:
    name: str
    argv: list[str]
    status: str = "not run"
    seconds: float = 0.0
    tail: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status.startswith("failed")


def nightly_steps(quick: bool) -> list[Step]:
    """The fixed nightly set, each a subprocess of this interpreter (this venv). --quick: the ci Hypothesis profile,
    depth 0 only, 4 repetitions and a short per-op budget, so the whole pipeline can be tried in minutes. 4, not
    fewer: with 3 samples a side no permutation p-value can fall below 0.1, with 4 the smallest is 2/70 = 0.029."""
    py = sys.executable
    bench = [py, "-m", "bench"]
    return [
        Step("conformance", [py, "-m", "pytest", "-n", "auto", "-q", "-p", "no:cacheprovider",
                             f"--hypothesis-profile={'ci' if quick else 'nightly'}", "--record-history",
                             "cases/test_ops.py"]),
        Step("bench", [*bench, "pp512", "tg128", "--depth", "0" if quick else "0,8192", "--backend", "all",
                       "--model", "tiny", *(["-r", "4"] if quick else [])]),
        Step("parity", [*bench, "parity", "--backend", "all", "--model", "tiny"]),
        Step("llama.cpp parity", [*bench, "parity", "--against", "llama.cpp", "--model", "tiny"]),
        Step("ops", [*bench, "ops", *(["--budget", "0.05"] if quick else [])]),
    ]


def run_step(step: Step) -> None:
    """Runs the step, echoing its output as it comes, and keeps the last lines for the report."""
    print(f"nightly: {step.name}: {' '.join(step.argv[1:])}", flush=True)
    t0 = time.perf_counter()
    with subprocess.Popen(step.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        lines = []
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line.rstrip("\n"))
    step.seconds = time.perf_counter() - t0
    step.tail = lines[-OUTPUT_TAIL_LINES:]
    step.status = "passed" if proc.returncode == 0 else f"failed (exit code {proc.returncode})"
    print(f"nightly: {step.name} {step.status} in {step.seconds:.0f} s", flush=True)


def _steps_section(steps: list[Step]) -> list[str]:
    from reports.report import markdown_table

    table = pd.DataFrame([{"step": s.name, "command": "python " + " ".join(s.argv[1:]), "status": s.status,
                           "seconds": round(s.seconds)} for s in steps])
    lines = ["## Steps", "", markdown_table(table, max_chars=200), ""]
    for s in steps:
        if s.failed:
            lines += [f"Last lines of `{s.name}`:", "", "```", *s.tail, "```", ""]
    return lines


def cmd_nightly(args) -> int:
    from reports.report import render_report

    current = history.commit()
    if args.baseline != "previous":
        split(_records(None), args.baseline, current)  # refuse a bad baseline before hours of work
    steps = nightly_steps(args.quick)
    for step in steps:
        run_step(step)
    records = _records(None)
    table = compare(records, args.baseline, current_commit=current)
    _print_comparison(table, args.baseline)
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()
    path = render_report(records, NIGHTLY_DIR, f"Nightly {day} ({current}{', quick' if args.quick else ''})",
                         baseline=args.baseline, notes=_steps_section(steps), stem=day, current_commit=current)
    print(f"nightly report written to {path}")
    failed = [s.name for s in steps if s.failed]
    if failed:
        print(f"nightly: failed steps: {', '.join(failed)}")
    return 1 if failed or len(failing(table)) else 0


COMMANDS = ("report", "compare", "nightly")


def add_commands(subparsers) -> None:
    """Registers report, compare and nightly on `python -m bench`'s subparsers."""
    baseline_help = "a commit prefix, a date YYYY-MM-DD (the latest records on or before it) or 'previous'"
    p = subparsers.add_parser("report", help="markdown report with tables and PNG plots of the result history")
    p.add_argument("-o", "--output", default=str(ROOT / "reports" / "out"), help="output folder (default reports/out)")
    p.add_argument("--baseline", help=baseline_help + "; adds a comparison section")
    p.add_argument("--history", help="history file (default reports/history.jsonl)")
    p.set_defaults(func=cmd_report)
    p = subparsers.add_parser("compare", help="compare results with a baseline; exit 1 on a significant regression "
                                              "or a new failure")
    p.add_argument("--baseline", required=True, help=baseline_help)
    p.add_argument("--threshold", type=float, default=0.05, help="relative change that counts (default 0.05)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--history", help="history file (default reports/history.jsonl)")
    p.set_defaults(func=cmd_compare)
    p = subparsers.add_parser("nightly", help="conformance, bench, parity and ops, then reports/nightly/<date>.md; "
                                              "exit 1 on a failed step, a significant regression or a new failure")
    p.add_argument("--baseline", default="previous", help=baseline_help + " (default previous: the latest records "
                                                                          "of commits other than the current one)")
    p.add_argument("--quick", action="store_true",
                   help="a small version: ci profile, depth 0, 4 repetitions, short per-op budget")
    p.set_defaults(func=cmd_nightly)
