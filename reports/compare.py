"""Baseline comparison of history records, like llama.cpp's scripts/compare-llama-bench.py plus what asv and
pytest-benchmark add for a nightly job: one whole earlier run as the baseline, results matched by config and machine,
a rank test over independent repetitions, a bootstrap interval of the speed ratio and a minimum effect size.

Runs. Every record carries the run_id of the process (or nightly) that wrote it; records written before run ids
existed form one run per commit and machine. Per kind of record, the current run is the newest run of the current
commit (or `current_run` itself, or the newest run when no commit is given), and the baseline is ONE earlier run of
the same machine (CPU model and cores): "previous" = the newest run whose commit differs from the current one, a
commit prefix = that commit's newest run, a date = the newest run on or before that UTC day. Configs are never mixed
from several runs.

Machines. A config is matched on its settings and its fingerprint: the CPU model and cores of the machine, and the
device and driver of the record. Different budgets or repetition counts are different configs.

Speed (higher is better): t/s for "bench" records (samples_ts, one per repetition), runs/s for "ops" records (1e6 /
samples_us, one per interleaved round). The ratio is median(new) / median(base). Processes: on the 2-core VM whole
processes differ (buffer placement, the machine's memory bandwidth over seconds) by more than repetitions inside one
do - unchanged pp64 runs came out 0.69x-1.34x of each other, each at p = 0.008 over its repetitions - so when both
runs measured a config in several processes (several records of one run id: the nightly and `calibrate` run each
command in --processes processes; by hand, the same KBO_RUN_ID for every invocation), the samples tested are one per
process (the median of its repetitions), which takes that spread into account. With one process a side the
repetitions are tested, and the note says the spread between processes was not sampled. Significance: a two-sided
Mann-Whitney U test (scipy.stats.mannwhitneyu, exact for small samples): no normality assumed, and robust to the
occasional disturbed repetition. With n and m samples the smallest possible two-sided p is 2 / C(n + m, n): 0.1 for
3 vs 3, 0.029 for 4 vs 4, 0.008 for 5 vs 5. When it cannot fall below alpha the verdict is "inconclusive", never
"same". The interval is a percentile bootstrap of the ratio of medians (scipy.stats.bootstrap, fixed seed).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re

import numpy as np
import pandas as pd
from scipy import stats

# What identifies "the same measurement" across runs, per record kind; fingerprint = the machine and device.
CONFIG_KEYS = {
    "bench": ["test", "backend", "model", "variant", "form", "n_batch", "n_ubatch", "reps", "fingerprint"],
    "ops": ["op", "backend", "case", "reps", "budget_s", "fingerprint"],
    "delta_net": ["variant", "backend", "S", "H", "T", "n_seqs", "gate", "fingerprint"],
    "conformance": ["backend", "op", "fingerprint"],
    "parity": ["backend", "against", "model", "variant", "form", "fingerprint"],
}
SPEED_KINDS = ("bench", "ops")
PASS_FAIL_KINDS = ("conformance", "parity")
UNITS = {"bench": "t/s", "ops": "runs/s", "conformance": "passed", "parity": "passed"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
COMMIT = re.compile(r"^[0-9a-f]{4,40}$")
MIN_EFFECT = 0.10  # default: A/A comparisons on the 2-core development VM stay quiet (python -m bench calibrate)
EXACT_MAX_SAMPLES = 40  # both sides together; beyond, the normal approximation of U is close and much cheaper
BOOTSTRAP_RESAMPLES = 2000
# Verdicts that fail `compare` and the nightly.
FAILING = ("regression", "missing", "new failure", "still failing", "no tests ran")


def _machine(record: dict) -> dict:
    return record.get("machine") or {}


def _host(record: dict):
    return _machine(record).get("host")


def machine_key(record: dict) -> str:
    """The machine a record ran on: CPU model and cores (its host name says nothing about the hardware)."""
    return json.dumps([_machine(record).get("cpu"), _machine(record).get("cores")])


def fingerprint(record: dict) -> str:
    """The machine and device a figure belongs to: CPU model and cores, and the record's device and driver."""
    m = _machine(record)
    parts = [f"{m.get('cpu')} x{m.get('cores')}", record.get("device"), record.get("driver")]
    return " / ".join(str(p) for p in parts if p not in (None, ""))  # no "|": it goes into markdown tables


def _bare(commit) -> str:
    return str(commit).removesuffix("-dirty")


def run_label(record: dict) -> str:
    """The run a record belongs to: its run_id, or "commit <c>" for records written before run ids existed."""
    return record.get("run_id") or f"commit {_bare(record.get('commit'))}"


def config_id(record: dict) -> str:
    """The record's config as one string, built from the raw values so a missing key or an int read back as float
    by pandas cannot split one config in two."""
    return json.dumps([fingerprint(record) if k == "fingerprint" else record.get(k)
                       for k in CONFIG_KEYS[record["kind"]]])


def frame(records: list[dict], kind: str) -> pd.DataFrame:
    """The records of one kind as a DataFrame sorted by time, with `host`, `fingerprint`, `machine_key` and `run`
    flattened out, `time` as UTC datetimes, `config_id`, and every config key present (missing ones as NA)."""
    rows = [{**r, "host": _host(r), "fingerprint": fingerprint(r), "machine_key": machine_key(r), "run": run_label(r),
             "config_id": config_id(r)} for r in records if r.get("kind") == kind]
    df = pd.DataFrame(rows, columns=None if rows else ["time", "commit", "config_id", "run", "machine_key",
                                                         *CONFIG_KEYS[kind]])
    for key in CONFIG_KEYS[kind]:
        if key not in df:
            df[key] = pd.NA
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")  # records may differ in precision or zone
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The most recent record per config (of a `frame`)."""
    return df.groupby("config_id", sort=False).tail(1).reset_index(drop=True)


# ---- which runs are compared -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Baseline:
    """A checked --baseline: rule "previous", "commit" (value = the full commit) or "date" (value = the day)."""
    rule: str
    value: object = None
    text: str = "previous"


def parse_baseline(records: list[dict], baseline: str) -> Baseline:
    """The baseline named by a commit prefix, a date YYYY-MM-DD or "previous", checked against the history:
    ValueError when it matches nothing, so a bad baseline is refused before any work runs."""
    if not records:
        raise ValueError("the history holds no records")
    if baseline == "previous":
        return Baseline("previous")
    if DATE.match(baseline):
        try:
            day = dt.date.fromisoformat(baseline)
        except ValueError:
            raise ValueError(f"baseline {baseline!r} is not a valid date") from None
        first = min(r["time"] for r in records)[:10]
        if first > baseline:
            raise ValueError(f"no records on or before {baseline}; the history starts on {first}")
        return Baseline("date", day, baseline)
    if COMMIT.match(baseline.lower()):
        commits = {_bare(r.get("commit")) for r in records}
        matched = sorted(c for c in commits if c.startswith(baseline.lower()))
        if not matched:
            raise ValueError(f"no records from commit {baseline!r}; commits in the history: "
                             f"{', '.join(sorted(commits))}")
        if len(matched) > 1:
            raise ValueError(f"commit prefix {baseline!r} is ambiguous: {', '.join(matched)}")
        return Baseline("commit", matched[0], baseline)
    raise ValueError(f"baseline {baseline!r} is neither a commit prefix (4-40 hex digits), a date (YYYY-MM-DD) "
                     "nor 'previous'")


@dataclasses.dataclass
class RunPair:
    """The two runs compared for one kind of record: their ids, commits and last record times, and their records
    (frames); `base` is None, with `why`, when no baseline run qualifies."""
    kind: str
    new_run: str
    new_commit: str
    new_time: object
    new: pd.DataFrame
    base_run: str | None = None
    base_commit: str | None = None
    base_time: object = None
    base: pd.DataFrame | None = None
    why: str = ""


def _runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, machine) of a frame: its commit and the time of its last record, oldest first."""
    return (df.assign(bare=df["commit"].map(_bare)).groupby(["run", "machine_key"], sort=False)
            .agg(commit=("bare", "last"), time=("time", "max")).reset_index().sort_values("time", kind="stable"))


def _pick_baseline(candidates: pd.DataFrame, rule: Baseline, new_commit: str) -> tuple[pd.Series | None, str]:
    """The newest candidate run the rule allows, or (None, why not)."""
    if rule.rule == "previous":
        chosen, why = candidates[candidates["commit"] != new_commit], f"no run of a commit other than {new_commit}"
    elif rule.rule == "commit":
        chosen, why = candidates[candidates["commit"] == rule.value], f"no run of commit {rule.value}"
    else:
        chosen = candidates[candidates["time"].dt.date <= rule.value]
        why = f"no run on or before {rule.value}"
    return (None, why + " on this machine") if chosen.empty else (chosen.iloc[-1], "")


def select_runs(records: list[dict], baseline: str, current_commit: str | None = None,
                current_run: str | None = None) -> list[RunPair]:
    """For each compared kind with a current run: that run and the baseline run (see the module's doc)."""
    rule = parse_baseline(records, baseline)
    if current_run is not None:  # its machine, even for kinds it recorded nothing of (those are all missing)
        from reports import history

        own = [r for r in records if r.get("run_id") == current_run]
        here = machine_key(own[0] if own else {"machine": history.machine()})
    pairs = []
    for kind in (*SPEED_KINDS, *PASS_FAIL_KINDS):
        df = frame(records, kind)
        runs = _runs(df)
        if current_run is not None:
            mine = runs[runs["run"] == current_run]
            new_commit = mine["commit"].iloc[-1] if len(mine) else _bare(current_commit)
            new = (current_run, new_commit, mine["time"].max() if len(mine) else None)
        else:
            mine = runs[runs["commit"] == _bare(current_commit)] if current_commit else runs
            if mine.empty:
                continue
            newest = mine.iloc[-1]
            here, new = newest["machine_key"], (newest["run"], newest["commit"], newest["time"])
        candidates = runs[(runs["machine_key"] == here) & (runs["run"] != new[0])]
        chosen, why = _pick_baseline(candidates, rule, new[1])
        new_records = df[(df["run"] == new[0]) & (df["machine_key"] == here)]
        if chosen is None and new_records.empty:
            continue
        pair = RunPair(kind, *new, new_records, why=why)
        if chosen is not None:
            pair.base_run, pair.base_commit, pair.base_time = chosen["run"], chosen["commit"], chosen["time"]
            pair.base = df[(df["run"] == chosen["run"]) & (df["machine_key"] == here)]
        pairs.append(pair)
    return pairs


def pair_of_runs(records: list[dict], kind: str, base_run: str, new_run: str) -> RunPair:
    """Two named runs of one kind of record (e.g. `python -m bench calibrate`'s): ValueError when one has none."""
    df = frame(records, kind)
    sides = []
    for run in (base_run, new_run):
        rows = df[df["run"] == run]
        if rows.empty:
            raise ValueError(f"run {run} has no {kind} records")
        sides.append((run, _bare(rows["commit"].iloc[-1]), rows["time"].max(), rows))
    (base, new) = sides
    return RunPair(kind, *new, *base)


def runs_summary(pairs: list[RunPair]) -> pd.DataFrame:
    """Which runs were compared, per kind: ids, commits and the time of their last record."""
    def when(t):
        return "" if t is None or pd.isna(t) else t.strftime("%Y-%m-%d %H:%M")

    return pd.DataFrame([{"kind": p.kind, "baseline run": p.base_run or f"none ({p.why})",
                          "baseline commit": p.base_commit or "", "baseline time": when(p.base_time),
                          "current run": p.new_run, "current commit": p.new_commit, "current time": when(p.new_time)}
                         for p in pairs])


# ---- statistics ------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SpeedTest:
    base: float  # median speeds
    new: float
    ratio: float  # new / base: above 1 is faster
    ci_low: float  # (1 - alpha) bootstrap interval of the ratio; NaN with fewer than 2 samples a side
    ci_high: float
    p_value: float
    verdict: str  # regression, improvement, same or inconclusive
    note: str = ""


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p-value a rank test can give with n and m samples: both extreme orderings of 2 among
    C(n + m, n)."""
    return min(1.0, 2 / math.comb(n + m, n)) if n and m else 1.0


def _median_ratio(new, base, axis=-1):
    return np.median(new, axis=axis) / np.median(base, axis=axis)


def speed_test(base, new, min_effect: float = MIN_EFFECT, alpha: float = 0.05) -> SpeedTest:
    """Compares two sets of independent speed samples (higher is faster), see the module's doc."""
    base, new = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    ratio = float(_median_ratio(new, base))
    low = high = p = float("nan")
    if len(base) >= 2 and len(new) >= 2:
        method = "exact" if len(base) + len(new) <= EXACT_MAX_SAMPLES else "asymptotic"
        p = float(stats.mannwhitneyu(new, base, alternative="two-sided", method=method).pvalue)
        if np.ptp(base) == 0 and np.ptp(new) == 0:  # identical repetitions: every resample gives the same ratio
            low = high = ratio
        else:
            ci = stats.bootstrap((new, base), _median_ratio, vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES,
                                 confidence_level=1 - alpha, method="percentile", rng=np.random.default_rng(0))
            low, high = float(ci.confidence_interval.low), float(ci.confidence_interval.high)
    floor = smallest_p(len(base), len(new))
    if floor >= alpha:
        return SpeedTest(float(np.median(base)), float(np.median(new)), ratio, low, high, p, "inconclusive",
                         f"{len(base)} vs {len(new)} samples: the smallest possible p is {floor:.2g} >= alpha {alpha}")
    verdict = ("regression" if p < alpha and ratio < 1 - min_effect else
               "improvement" if p < alpha and ratio > 1 + min_effect else "same")
    return SpeedTest(float(np.median(base)), float(np.median(new)), ratio, low, high, p, verdict)


def _samples(kind: str, row) -> list[float]:
    """The speed samples of a record, higher is better; its one figure when it has no samples."""
    key = "samples_ts" if kind == "bench" else "samples_us"
    values = row.get(key)
    if not isinstance(values, list) or not values:  # older records; NaN in a frame where others have samples
        values = [row["avg_ts"] if kind == "bench" else row["us_per_run"]]
    return list(values) if kind == "bench" else [1e6 / us for us in values]


# ---- the comparison table --------------------------------------------------------------------------------------------
COLUMNS = ["kind", "backend", "test", "config", "fingerprint", "base", "new", "unit", "ratio", "ci_low", "ci_high",
           "p_value", "verdict", "note", "base_run", "new_run", "base_commit", "new_commit"]


def _label(kind: str, row) -> tuple[str, str]:
    """(test name, the rest of its config) for the table."""
    keys = [k for k in CONFIG_KEYS[kind] if k not in ("backend", "fingerprint")]
    name_key = keys.pop(0)
    rest = " ".join(f"{k}={row[k]}" for k in keys if not pd.isna(row[k]))
    return str(row[name_key]), rest


def _row(kind: str, pair: RunPair, row, verdict: str, base=float("nan"), new=float("nan"), note: str = "",
         test: SpeedTest | None = None) -> dict:
    name, config = _label(kind, row)
    figures = dataclasses.asdict(test) if test else {"base": base, "new": new, "verdict": verdict, "note": note}
    return {"kind": kind, "backend": row["backend"], "test": name, "config": config, "fingerprint": row["fingerprint"],
            "unit": UNITS[kind], "ratio": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
            "p_value": float("nan"), **figures, "base_run": pair.base_run, "new_run": pair.new_run,
            "base_commit": pair.base_commit, "new_commit": pair.new_commit}


def _unsupported(value) -> bool:
    """Whether a record's `supported` says no (a record without the field was measured)."""
    return isinstance(value, (bool, np.bool_)) and not value


def _measured(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["supported"].map(_unsupported)] if "supported" in df else df


def _units(kind: str, base: pd.DataFrame, new: pd.DataFrame) -> tuple[list[float], list[float], str]:
    """The samples compared for one config (its records in each run): one per process (the median of its
    repetitions) when both runs measured it in several processes, else the newest record's repetitions, noted."""
    if len(base) >= 2 and len(new) >= 2:
        def medians(side):
            return [float(np.median(_samples(kind, row))) for _, row in side.iterrows()]
        return medians(base), medians(new), ""
    return (_samples(kind, base.iloc[-1]), _samples(kind, new.iloc[-1]),
            f"{len(base)} vs {len(new)} processes: repetitions tested, the spread between processes not sampled")


def _speed_rows(pair: RunPair, min_effect: float, alpha: float) -> list[dict]:
    """Each config the baseline run measured: its speed test against the current run, or "missing" when the current
    run did not measure it (absent, or now unsupported)."""
    kind, rows = pair.kind, []
    new_groups = dict(tuple(pair.new.groupby("config_id", sort=False)))
    for key, old in _measured(pair.base).groupby("config_id", sort=False):
        cur = new_groups.get(key)
        if cur is None or _unsupported(cur.iloc[-1].get("supported")):
            why = ("not measured in the current run" if cur is None
                   else f"unsupported now: {cur.iloc[-1].get('reason', '')}")
            rows.append(_row(kind, pair, old.iloc[-1], "missing",
                             base=float(np.median(_samples(kind, old.iloc[-1]))), note=why))
            continue
        cur = _measured(cur)
        base_units, new_units, note = _units(kind, old, cur)
        result = speed_test(base_units, new_units, min_effect, alpha)
        if note and not result.note:
            result = dataclasses.replace(result, note=note)
        rows.append(_row(kind, pair, cur.iloc[-1], result.verdict, test=result))
    return rows


def _outcome(kind: str, row) -> str:
    """passed, failed, or (conformance) no tests ran: every test of the config was skipped."""
    if kind == "parity":
        return "passed" if row["passed"] else "failed"
    if int(row["failed"]) > 0:
        return "failed"
    return "passed" if int(row["passed"]) > 0 else "no tests ran"


PASS_FAIL_VERDICTS = {  # (baseline outcome, current outcome) -> verdict; None: no baseline record
    ("passed", "failed"): "new failure", (None, "failed"): "new failure", ("no tests ran", "failed"): "new failure",
    ("failed", "failed"): "still failing", ("failed", "passed"): "fixed", ("no tests ran", "passed"): "fixed",
    ("passed", "passed"): "same",
}


def _pass_fail_rows(pair: RunPair) -> list[dict]:
    """Each config of either run: a failure, a config where no test ran, or a config of the baseline that the
    current run lacks (missing) fails; a passing config new in the current run is not listed."""
    kind, rows = pair.kind, []
    base = latest(pair.base).set_index("config_id", drop=False) if pair.base is not None else None
    new = latest(pair.new).set_index("config_id", drop=False)
    for key, cur in new.iterrows():
        now = _outcome(kind, cur)
        was = _outcome(kind, base.loc[key]) if base is not None and key in base.index else None
        verdict = "no tests ran" if now == "no tests ran" else PASS_FAIL_VERDICTS.get((was, now))
        if verdict:
            note = f"all {int(cur['skipped'])} tests skipped" if now == "no tests ran" else ""
            rows.append(_row(kind, pair, cur, verdict, float(was == "passed") if was else float("nan"),
                             float(now == "passed"), note))
    if base is not None:
        for key, old in base.iterrows():
            if key not in new.index:
                rows.append(_row(kind, pair, old, "missing", float(_outcome(kind, old) == "passed"),
                                 note="not run in the current run"))
    return rows


def compare_runs(pairs: list[RunPair], min_effect: float = MIN_EFFECT, alpha: float = 0.05) -> pd.DataFrame:
    """The comparison table of `select_runs`' pairs: one row per config (see `compare`)."""
    if not 0 <= min_effect < 1 or not 0 < alpha < 1:
        raise ValueError(f"min_effect must lie in [0, 1) and alpha in (0, 1), got {min_effect} and {alpha}")
    rows = []
    for pair in pairs:
        if pair.kind in SPEED_KINDS:
            rows += _speed_rows(pair, min_effect, alpha) if pair.base is not None else []
        else:
            rows += _pass_fail_rows(pair)
    return pd.DataFrame(rows, columns=COLUMNS)


def compare(records: list[dict], baseline: str, min_effect: float = MIN_EFFECT, alpha: float = 0.05,
            current_commit: str | None = None, current_run: str | None = None) -> pd.DataFrame:
    """One row per config of the baseline run (and per failing config of the current run), each kind's current run
    against its baseline run (`select_runs`). Speed: ratio of medians new/base, its bootstrap interval, the
    Mann-Whitney p-value and a verdict: "regression" when p < alpha and ratio < 1 - min_effect, "improvement" when
    p < alpha and ratio > 1 + min_effect, "inconclusive" when the sample sizes cannot give p < alpha, else "same";
    "missing" when the current run did not measure a config the baseline measured. Conformance and parity: "new
    failure", "still failing", "no tests ran" (every test skipped), "missing", "fixed" or "same"."""
    return compare_runs(select_runs(records, baseline, current_commit, current_run), min_effect, alpha)


def failing(comparison: pd.DataFrame) -> pd.DataFrame:
    """The rows that fail a nightly: significant regressions, configs gone missing, failures and configs where no
    test ran."""
    return comparison[comparison["verdict"].isin(FAILING)]
