"""Baseline comparison of history records, like llama.cpp's scripts/compare-llama-bench.py plus what asv and
pytest-benchmark add for a nightly job: results matched by config and machine, a significance test over the samples,
and a threshold.

Speed is compared, so a ratio above 1 is faster: mean t/s for "bench" records, and for "ops" records the inverse of
us_per_run (base us / new us), tested on the per-batch speeds 1/us.

Significance: an exact two-sided permutation test on the difference of the sample means, in NumPy. It assumes no
normality (timings are skewed by the occasional disturbed run), needs no new dependency, and is exact for the sample
sizes the suite takes (5 repetitions a side: C(10, 5) = 252 arrangements, smallest p = 2/252 = 0.008). With only 3
samples a side the smallest possible p is 0.1, so no result can be called significant at alpha = 0.05; more
repetitions are the cure, not a looser alpha.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re

import numpy as np
import pandas as pd

# What identifies "the same measurement" across runs, per record kind (host = the machine's name).
CONFIG_KEYS = {
    "bench": ["test", "backend", "model", "variant", "form", "n_batch", "n_ubatch", "host"],
    "ops": ["op", "backend", "case", "host"],
    "delta_net": ["variant", "backend", "S", "H", "T", "n_seqs", "gate", "host"],
    "conformance": ["backend", "op", "host"],
    "parity": ["backend", "against", "model", "variant", "form", "host"],
}
PASS_FAIL_KINDS = ("conformance", "parity")
UNITS = {"bench": "t/s", "ops": "runs/s", "conformance": "passed", "parity": "passed"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
COMMIT = re.compile(r"^[0-9a-f]{4,40}$")
MAX_EXACT_ARRANGEMENTS = 20_000  # beyond this the permutation test samples arrangements at random


def _host(record: dict):
    return (record.get("machine") or {}).get("host")


def config_id(record: dict) -> str:
    """The record's config as one string, built from the raw values so a missing key or an int read back as float
    by pandas cannot split one config in two."""
    return json.dumps([_host(record) if k == "host" else record.get(k) for k in CONFIG_KEYS[record["kind"]]])


def frame(records: list[dict], kind: str) -> pd.DataFrame:
    """The records of one kind as a DataFrame sorted by time, with `host` flattened out of `machine`, `time` as UTC
    datetimes, `config_id`, and every config key present (missing ones as NA)."""
    rows = [{**r, "host": _host(r), "config_id": config_id(r)} for r in records if r.get("kind") == kind]
    df = pd.DataFrame(rows, columns=None if rows else ["time", "commit", "config_id", *CONFIG_KEYS[kind]])
    for key in CONFIG_KEYS[kind]:
        if key not in df:
            df[key] = pd.NA
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")  # records may differ in precision or zone
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """The most recent record per config (of a `frame`)."""
    return df.groupby("config_id", sort=False).tail(1).reset_index(drop=True)


def _bare(commit) -> str:
    return str(commit).removesuffix("-dirty")


def split(records: list[dict], baseline: str, current_commit: str | None = None) -> tuple[list, list]:
    """(baseline records, current records) for a baseline given as a commit prefix, a date (YYYY-MM-DD: the records
    on or before that UTC day) or "previous" (the records of commits other than `current_commit`, which defaults to
    the newest record's commit; current = that commit's records). Otherwise current = the records outside the
    baseline selection. ValueError when the baseline matches nothing."""
    if not records:
        raise ValueError("the history holds no records")
    if baseline == "previous":
        current = _bare(current_commit or max(records, key=lambda r: r.get("time", ""))["commit"])
        base = [r for r in records if _bare(r.get("commit")) != current]
        return base, [r for r in records if _bare(r.get("commit")) == current]
    if DATE.match(baseline):
        try:
            day = dt.date.fromisoformat(baseline)
        except ValueError:
            raise ValueError(f"baseline {baseline!r} is not a valid date") from None
        base = [r for r in records if dt.datetime.fromisoformat(r["time"]).date() <= day]
        if not base:
            first = min(r["time"] for r in records)[:10]
            raise ValueError(f"no records on or before {baseline}; the history starts on {first}")
        return base, [r for r in records if dt.datetime.fromisoformat(r["time"]).date() > day]
    if COMMIT.match(baseline.lower()):
        commits = {_bare(r.get("commit")) for r in records}
        matched = sorted(c for c in commits if c.startswith(baseline.lower()))
        if not matched:
            raise ValueError(f"no records from commit {baseline!r}; commits in the history: "
                             f"{', '.join(sorted(commits))}")
        if len(matched) > 1:
            raise ValueError(f"commit prefix {baseline!r} is ambiguous: {', '.join(matched)}")
        base = [r for r in records if _bare(r.get("commit")) == matched[0]]
        return base, [r for r in records if _bare(r.get("commit")) != matched[0]]
    raise ValueError(f"baseline {baseline!r} is neither a commit prefix (4-40 hex digits), a date (YYYY-MM-DD) "
                     "nor 'previous'")


def permutation_p(a, b) -> float:
    """Two-sided p-value of the difference of means of samples a and b: exact over every arrangement of the pooled
    samples when there are at most MAX_EXACT_ARRANGEMENTS, else over that many random ones (seeded). NaN when a side
    has fewer than 2 samples."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.concatenate([a, b])
    n, total = len(a), len(pooled)
    observed = abs(a.mean() - b.mean())
    exact = math.comb(total, n) <= MAX_EXACT_ARRANGEMENTS
    if exact:
        picks = np.array(list(itertools.combinations(range(total), n)))
    else:
        rng = np.random.default_rng(0)
        picks = np.argsort(rng.random((MAX_EXACT_ARRANGEMENTS, total)), axis=1)[:, :n]
    sums = pooled[picks].sum(axis=1)
    diffs = np.abs(sums / n - (pooled.sum() - sums) / (total - n))
    # Relative slack: an arrangement equal to the observed one must count despite rounding.
    hits = np.count_nonzero(diffs >= observed * (1 - 1e-9))
    return hits / len(diffs) if exact else (hits + 1) / (len(diffs) + 1)


def _speeds(kind: str, row) -> tuple[float, list[float]]:
    """(the figure compared, higher is better; its samples in the same unit)."""
    def samples(key):  # a record without samples reads back as NaN when its frame has others with them
        value = row.get(key)
        return value if isinstance(value, list) else []

    if kind == "bench":
        return float(row["avg_ts"]), samples("samples_ts")
    return 1e6 / float(row["us_per_run"]), [1e6 / s for s in samples("samples_us")]


def _label(kind: str, row) -> tuple[str, str]:
    """(test name, the rest of its config) for the table."""
    keys = [k for k in CONFIG_KEYS[kind] if k not in ("backend", "host")]
    name_key = keys.pop(0)
    rest = " ".join(f"{k}={row[k]}" for k in keys if not pd.isna(row[k]))
    return str(row[name_key]), rest


def _pairs(base: list[dict], new: list[dict], kind: str) -> list[tuple[pd.Series, pd.Series]]:
    """(baseline row, current row) for each config present on both sides, latest record per side."""
    b, n = (latest(frame(side, kind)).set_index("config_id", drop=False) for side in (base, new))
    return [(b.loc[key], n.loc[key]) for key in b.index.intersection(n.index, sort=False)]


def compare(records: list[dict], baseline: str, threshold: float = 0.05, alpha: float = 0.05,
            current_commit: str | None = None) -> pd.DataFrame:
    """One row per config present in both the baseline and the current records: speed ratio new/base, p-value and a
    verdict - "regression" when ratio < 1 - threshold and p < alpha, "improvement" when ratio > 1 + threshold and
    p < alpha, else "same"; and "new failure" for a conformance or parity config that passed in the baseline and
    fails now. See `split` for how baseline and current records are chosen."""
    if not 0 < threshold < 1 or not 0 < alpha < 1:
        raise ValueError(f"threshold and alpha must lie in (0, 1), got {threshold} and {alpha}")
    base, new = split(records, baseline, current_commit)
    rows = []
    for kind in ("bench", "ops"):
        supported = [[r for r in side if r.get("supported", True)] for side in (base, new)]
        for old, cur in _pairs(*supported, kind):
            (base_speed, base_samples), (new_speed, new_samples) = _speeds(kind, old), _speeds(kind, cur)
            ratio = new_speed / base_speed
            p = permutation_p(base_samples, new_samples)
            significant = p < alpha  # False for NaN
            verdict = ("regression" if ratio < 1 - threshold and significant else
                       "improvement" if ratio > 1 + threshold and significant else "same")
            rows.append(_row(kind, old, cur, base_speed, new_speed, ratio, p, verdict))
    for kind in PASS_FAIL_KINDS:
        for old, cur in _pairs(base, new, kind):
            was, now = _passed(kind, old), _passed(kind, cur)
            verdict = "new failure" if was and not now else "fixed" if now and not was else "same"
            rows.append(_row(kind, old, cur, float(was), float(now), float("nan"), float("nan"), verdict))
    columns = ["kind", "backend", "test", "config", "host", "base_commit", "new_commit", "base", "new", "unit",
               "ratio", "p_value", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _passed(kind: str, row) -> bool:
    if kind == "conformance":
        return int(row["failed"]) == 0
    return bool(row["passed"])


def _row(kind, old, cur, base_value, new_value, ratio, p, verdict) -> dict:
    test, config = _label(kind, cur)
    return {"kind": kind, "backend": cur["backend"], "test": test, "config": config, "host": cur["host"],
            "base_commit": old["commit"], "new_commit": cur["commit"],
            "base": base_value, "new": new_value, "unit": UNITS[kind], "ratio": ratio, "p_value": p,
            "verdict": verdict}


def failing(comparison: pd.DataFrame) -> pd.DataFrame:
    """The rows that fail a nightly: significant regressions and new failures."""
    return comparison[comparison["verdict"].isin(["regression", "new failure"])]
