"""The reporting commands of `python -m bench`:

  python -m bench report    [-o reports/out] [--baseline COMMIT|YYYY-MM-DD|previous] [--history PATH]
  python -m bench compare   --baseline COMMIT|YYYY-MM-DD|previous [--min-effect 0.10] [--alpha 0.05] [--history PATH]
  python -m bench nightly   [--baseline COMMIT|YYYY-MM-DD|previous] [--quick] [--min-effect 0.10] [--history PATH]
  python -m bench calibrate [--backend opencl] [--op ADD] [--runs 6] [--slowdown NAME] [--budget S] [--tests pp64]

compare exits 1 on a significant regression, a config gone missing, a failure or a conformance config where no test
ran; nightly also when one of its steps failed; calibrate when an A/A comparison raised an alarm or a slowed run went
unflagged. Bad input (an unknown baseline, an empty history, an unknown backend, op or slowdown) raises ValueError,
which `python -m bench` turns into exit code 2.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from reports import history
from reports.compare import (MIN_EFFECT, compare_runs, failing, pair_of_runs, parse_baseline, runs_summary,
                             select_runs)

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


def _check_thresholds(min_effect: float, alpha: float) -> None:
    if not 0 <= min_effect < 1 or not 0 < alpha < 1:
        raise ValueError(f"--min-effect must lie in [0, 1) and --alpha in (0, 1), got {min_effect} and {alpha}")


def cmd_report(args) -> int:
    from reports.report import render_report

    records = _records(args.history)
    if args.baseline:
        parse_baseline(records, args.baseline)  # refuse a bad baseline before rendering anything
    path = render_report(records, args.output, "kimi-backend-ops report", baseline=args.baseline,
                         all_commits=args.all_commits)
    print(f"report written to {path}")
    return 0


def cmd_compare(args) -> int:
    from reports.report import comparison_section

    _check_thresholds(args.min_effect, args.alpha)
    pairs = select_runs(_records(args.history), args.baseline)
    table = compare_runs(pairs, args.min_effect, args.alpha)
    print("\n".join(comparison_section(pairs, table, args.baseline)))
    return 1 if len(failing(table)) else 0


# ---- nightly ---------------------------------------------------------------------------------------------------------
# The backends a CPU machine runs (PoCL, lavapipe, ggml): the nightly's conformance step fails, not skips, without them.
NIGHTLY_REQUIRED = ("opencl", "vulkan", "ggml")


@dataclasses.dataclass
class Step:
    name: str
    argv: list[str]
    env: dict = dataclasses.field(default_factory=dict)  # on top of the nightly's environment
    status: str = "not run"
    seconds: float = 0.0
    tail: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status.startswith("failed")


# The nightly's bench and ops steps each run in this many processes, so the comparison's samples are processes, whose
# spread on the 2-core VM exceeds that of the repetitions inside one (reports/compare.py); 5 a side can reach
# p = 2 / C(10, 5) = 0.008.
PROCESSES = 5


def nightly_steps(quick: bool, cuda: bool) -> list[Step]:
    """The fixed nightly set, each a subprocess of this interpreter (this venv); bench and ops in PROCESSES processes
    of 3 repetitions / the default per-op budget each. --quick: the ci Hypothesis profile, depth 0 only, one process
    of 4 repetitions and a short per-op budget, so the whole pipeline can be tried in minutes (4, not fewer: with 3
    samples a side no rank test p-value can fall below 0.1, with 4 the smallest is 2/70 = 0.029). The conformance
    step requires the CPU backends, and CUDA where it is available (`cuda`)."""
    py = sys.executable
    bench = [py, "-m", "bench"]
    required = ",".join(NIGHTLY_REQUIRED + (("cuda",) if cuda else ()))
    return [
        Step("conformance", [py, "-m", "pytest", "-n", "auto", "-q", "-p", "no:cacheprovider",
                             f"--hypothesis-profile={'ci' if quick else 'nightly'}", "--record-history",
                             "cases/test_ops.py"], env={"KBO_REQUIRE": required}),
        *_in_processes("bench", [*bench, "pp512", "tg128", "--depth", "0" if quick else "0,8192", "--backend", "all",
                                 "--model", "tiny", "-r", "4" if quick else "3"], 1 if quick else PROCESSES),
        Step("parity", [*bench, "parity", "--backend", "all", "--model", "tiny"]),
        Step("llama.cpp parity", [*bench, "parity", "--against", "llama.cpp", "--model", "tiny"]),
        *_in_processes("ops", [*bench, "ops", *(["--budget", "0.05"] if quick else [])], 1 if quick else PROCESSES),
    ]


def _in_processes(name: str, argv: list[str], processes: int) -> list[Step]:
    """The step run `processes` times, each a process of its own under the nightly's run id."""
    if processes == 1:
        return [Step(name, argv)]
    return [Step(f"{name} {i}/{processes}", argv) for i in range(1, processes + 1)]


def run_step(step: Step, env: dict | None = None) -> None:
    """Runs the step with `env` and its own variables on top of this process's environment, echoing its output as it
    comes (above any progress bar), and keeps the last lines for the report."""
    tqdm.write(f"nightly: {step.name}: {' '.join(step.argv[1:])}", file=sys.stdout)
    t0 = time.perf_counter()
    with subprocess.Popen(step.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **(env or {}), **step.env}) as proc:
        lines = []
        for line in proc.stdout:
            tqdm.write(line.rstrip("\n"), file=sys.stdout)
            lines.append(line.rstrip("\n"))
    step.seconds = time.perf_counter() - t0
    step.tail = lines[-OUTPUT_TAIL_LINES:]
    step.status = "passed" if proc.returncode == 0 else f"failed (exit code {proc.returncode})"
    tqdm.write(f"nightly: {step.name} {step.status} in {step.seconds:.0f} s", file=sys.stdout)


def _steps_section(steps: list[Step]) -> list[str]:
    from reports.report import markdown_table

    table = pd.DataFrame([{"step": s.name, "command": "python " + " ".join(s.argv[1:]),
                           "environment": " ".join(f"{k}={v}" for k, v in s.env.items()), "status": s.status,
                           "seconds": round(s.seconds)} for s in steps])
    lines = ["## Steps", "", markdown_table(table, max_chars=200), ""]
    for s in steps:
        if s.failed:
            lines += [f"Last lines of `{s.name}`:", "", "```", *s.tail, "```", ""]
    return lines


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def cmd_nightly(args) -> int:
    from backends import availability
    from reports.report import comparison_section, render_report

    _check_thresholds(args.min_effect, 0.05)
    path = Path(args.history or history.HISTORY).resolve()  # the steps run in the repository root
    current, run = history.commit(), history.run_id()
    if args.baseline != "previous":
        parse_baseline(_records(path), args.baseline)  # refuse a bad baseline before hours of work
    why = history.writable(path)
    if why:
        raise ValueError(why)
    steps = nightly_steps(args.quick, cuda=availability("cuda") is None)
    # Every step appends to the same history under the same run id: the comparison takes this run as a whole.
    env = {history.HISTORY_ENV: str(path), history.RUN_ID_ENV: run}
    print(f"nightly: run {run} at {current}, history {path}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    # The bar only on a terminal (disable=None); a CI log gets the "step i/n" lines alone.
    with tqdm(total=len(steps), desc="nightly", unit="step", file=sys.stderr, disable=None) as bar:
        for i, step in enumerate(steps, 1):
            tqdm.write(f"nightly: step {i}/{len(steps)} ({_minutes(time.perf_counter() - start)} elapsed)",
                       file=sys.stderr)
            run_step(step, env)
            bar.update()
    tqdm.write(f"nightly: {len(steps)} steps in {_minutes(time.perf_counter() - start)}", file=sys.stderr)
    records = _records(path)
    pairs = select_runs(records, args.baseline, current, run)
    table = compare_runs(pairs, args.min_effect)
    print("\n".join(comparison_section(pairs, table, args.baseline)))
    day = dt.datetime.now(dt.timezone.utc).date().isoformat()
    report = render_report(records, NIGHTLY_DIR, f"Nightly {day} ({current}{', quick' if args.quick else ''})",
                           baseline=args.baseline, notes=_steps_section(steps), stem=day, current_commit=current,
                           current_run=run, min_effect=args.min_effect)
    print(f"nightly report written to {report}")
    failed = [s.name for s in steps if s.failed]
    if failed:
        print(f"nightly: failed steps: {', '.join(failed)}")
    return 1 if failed or len(failing(table)) else 0


# ---- calibrate -------------------------------------------------------------------------------------------------------
def _slowdown_names() -> list[str]:
    from reference.ops.spec import SLOWDOWN, mutants

    return sorted(n for n, (_, m) in mutants().items() if m.kind == SLOWDOWN)


def slowdown_for(op: str | None, backend: str | None, name: str | None) -> tuple[str, str, str]:
    """(op, backend, slowdown mutant name): the named slowdown, whose op and backend must match any given, or the one
    registered for the op on the backend (default ADD on opencl)."""
    from reference.ops import get_op
    from reference.ops.spec import SLOWDOWN, mutants

    slowdowns = {n: (o.name, m.backend) for n, (o, m) in mutants().items() if m.kind == SLOWDOWN}
    if name is not None:
        if name not in slowdowns:
            raise ValueError(f"no slowdown {name!r}; slowdowns: {', '.join(sorted(slowdowns))}")
        found_op, found_backend = slowdowns[name]
        if (op and get_op(op).name != found_op) or (backend and backend != found_backend):
            raise ValueError(f"slowdown {name} slows {found_op} on {found_backend}, not {op or found_op} on "
                             f"{backend or found_backend}")
        return found_op, found_backend, name
    op, backend = get_op(op or "ADD").name, backend or "opencl"
    matching = sorted(n for n, ob in slowdowns.items() if ob == (op, backend))
    if not matching:
        raise ValueError(f"no slowdown registered for {op} on {backend}; slowdowns: "
                         + ", ".join(f"{n} ({o} on {b})" for n, (o, b) in sorted(slowdowns.items())))
    return op, backend, matching[0]


def calibration_argv(op: str, backend: str, budget: float | None, tests: list[str]) -> list[str]:
    """One measuring run: `bench ops` of the op, or the throughput tests when given (kind "bench")."""
    bench = [sys.executable, "-m", "bench"]
    if tests:
        return [*bench, *tests, "--backend", backend, "--model", "tiny"]
    return [*bench, "ops", "--op", op, "--backend", backend, *(["--budget", str(budget)] if budget else [])]


def calibration_table(records: list[dict], kind: str, runs: int, min_effect: float, alpha: float) -> pd.DataFrame:
    """A/A comparisons of consecutive unchanged runs and each slowed run against the unchanged run before it."""
    comparisons = [("A/A", f"unchanged-{i}", f"unchanged-{i + 1}") for i in range(1, runs)]
    comparisons += [("slowed", f"unchanged-{i}", f"slowed-{i}") for i in range(1, runs + 1)]
    tables = []
    for what, base, new in comparisons:
        table = compare_runs([pair_of_runs(records, kind, base, new)], min_effect, alpha)
        tables.append(table.assign(comparison=what, runs=f"{new} vs {base}"))
    return pd.concat(tables, ignore_index=True)


def cmd_calibrate(args) -> int:
    from backends import availability, check_name
    from backends.base import MUTANT_ENV
    from bench.throughput import BenchTest
    from reports.report import markdown_table

    _check_thresholds(args.min_effect, args.alpha)
    op, backend, slowdown = slowdown_for(args.op, args.backend and check_name(args.backend), args.slowdown)
    tests = [t for word in args.tests or [] for t in word.split(",") if t]
    for test in tests:
        BenchTest.parse(test)
    if args.runs < 2:
        raise ValueError(f"--runs must be >= 2 (A/A comparisons need two unchanged runs), got {args.runs}")
    if args.processes < 1:
        raise ValueError(f"--processes must be >= 1, got {args.processes}")
    if args.budget is not None and not args.budget > 0:
        raise ValueError(f"--budget must be > 0 seconds, got {args.budget}")
    reason = availability(backend)
    if reason:
        raise ValueError(f"{backend} cannot run here: {reason}")
    argv = calibration_argv(op, backend, args.budget, tests)
    kind = "bench" if tests else "ops"
    # Unchanged and slowed runs interleaved, so a drift of the machine's speed touches both alike; each run is
    # --processes processes under one run id (the comparison's samples are then processes, see reports/compare.py).
    order = [(f"{label}-{i}", label == "slowed") for i in range(1, args.runs + 1) for label in ("unchanged", "slowed")
             for _ in range(args.processes)]
    with tempfile.TemporaryDirectory(prefix="kbo-calibrate-") as folder:
        path = Path(folder) / "history.jsonl"
        base_env = {k: v for k, v in os.environ.items() if k != MUTANT_ENV}
        for run, slowed in tqdm(order, desc=f"calibrate {slowdown}", unit="process", file=sys.stderr):
            env = {**base_env, history.HISTORY_ENV: str(path), history.RUN_ID_ENV: run,
                   **({MUTANT_ENV: slowdown} if slowed else {})}
            done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"python -m bench calibrate: run {run} ({' '.join(argv[1:])}) exited {done.returncode}:\n"
                      f"{(done.stdout + done.stderr)[-3000:]}", file=sys.stderr)
                return 1
        records = history.load(path)
    table = calibration_table(records, kind, args.runs, args.min_effect, args.alpha)
    cols = ["comparison", "runs", "test", "config", "ratio", "ci_low", "ci_high", "p_value", "verdict", "note"]
    print(f"{' '.join(argv[1:])}: {args.runs} unchanged runs and {args.runs} with KBO_MUTANT={slowdown}, "
          f"{args.processes} process(es) each, min effect {args.min_effect}, alpha {args.alpha}\n")
    print(markdown_table(table[cols]))
    aa, slowed = table[table.comparison == "A/A"], table[table.comparison == "slowed"]
    alarms = int(aa.verdict.isin(["regression", "improvement", "missing"]).sum())
    detected = int((slowed.verdict == "regression").sum())
    print(f"\nfalse alarms: {alarms} of {len(aa)} A/A comparisons")
    print(f"detected: {detected} of {len(slowed)} slowed runs flagged as regressions")
    return 0 if alarms == 0 and detected == len(slowed) else 1


COMMANDS = ("report", "compare", "nightly", "calibrate")


def _thresholds(p, alpha: bool = True) -> None:
    p.add_argument("--min-effect", "--threshold", dest="min_effect", type=float, default=MIN_EFFECT,
                   help=f"smallest relative speed change that counts, both ways (default {MIN_EFFECT}; --threshold "
                        f"is its old name)")
    if alpha:
        p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")


def add_commands(subparsers) -> None:
    """Registers report, compare, nightly and calibrate on `python -m bench`'s subparsers."""
    baseline_help = ("one earlier run per kind of record, on this machine: a commit prefix (its newest run), a date "
                     "YYYY-MM-DD (the newest run on or before it) or 'previous' (the newest run of another commit)")
    history_help = f"history file (default $KBO_HISTORY, else {history.default_path()})"
    p = subparsers.add_parser("report", help="markdown report with tables and PNG plots of the result history")
    p.add_argument("-o", "--output", default=str(ROOT / "reports" / "out"), help="output folder (default reports/out)")
    p.add_argument("--baseline", help=baseline_help + "; adds a comparison section")
    p.add_argument("--history", help=history_help)
    p.add_argument("--all-commits", action="store_true",
                   help="plot every commit (one line each, older ones faded), not only each device's newest")
    p.set_defaults(func=cmd_report)
    p = subparsers.add_parser("compare", help="compare the newest run with a baseline run; exit 1 on a significant "
                                              "regression, a missing config, a failure or a config where no test ran")
    p.add_argument("--baseline", required=True, help=baseline_help)
    _thresholds(p)
    p.add_argument("--history", help=history_help)
    p.set_defaults(func=cmd_compare)
    p = subparsers.add_parser("nightly", help="conformance, bench, parity and ops as one run, then "
                                              "reports/nightly/<date>.md; exit 1 on a failed step or what fails "
                                              "compare")
    p.add_argument("--baseline", default="previous", help=baseline_help + " (default previous)")
    p.add_argument("--quick", action="store_true",
                   help="a small version: ci profile, depth 0, 4 repetitions, short per-op budget")
    _thresholds(p, alpha=False)
    p.add_argument("--history", help=history_help + "; the steps append to it (KBO_HISTORY)")
    p.set_defaults(func=cmd_nightly)
    p = subparsers.add_parser("calibrate", help="false alarms (A/A runs of unchanged code) and detection power "
                                                "(runs with a slowed kernel) of the comparison")
    p.add_argument("--backend", help="the backend measured (default: the slowdown's, else opencl)")
    p.add_argument("--op", help="the op measured (default: the slowdown's, else ADD)")
    p.add_argument("--runs", type=int, default=6, help="unchanged runs, and as many slowed ones (default 6: 5 A/A "
                                                       "comparisons)")
    p.add_argument("--slowdown", help=f"the slowed kernel ({', '.join(_slowdown_names())}); default the one "
                                      f"registered for the op on the backend")
    p.add_argument("--processes", type=int, default=PROCESSES,
                   help=f"processes per run, under one run id (default {PROCESSES}, as the nightly)")
    p.add_argument("--budget", type=float, help="bench ops --budget of each process (seconds)")
    p.add_argument("--tests", action="append", help="throughput tests instead of bench ops, e.g. pp64 (comma-"
                                                    "separated or repeated)")
    _thresholds(p)
    p.set_defaults(func=cmd_calibrate)
