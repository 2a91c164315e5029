"""The result history: one JSON line per result, appended atomically so a crash never corrupts earlier records.

Each record carries where it came from (time, machine, commit, run id, backend, device, driver) beside its figures.
The history lives outside the repository (see `default_path`), so recording never makes the checkout "-dirty";
reports/published-history.jsonl is the committed copy of the records behind the figures the README and notes quote.

Reading checks every line: a torn line from a crash, a JSON value that is not a record (`42`, `null`, a list), or a
record without the fields its kind needs (`problem` says which) is skipped and reported, never passed on to the
report and comparison code.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import secrets
import subprocess
from pathlib import Path

HISTORY_ENV = "KBO_HISTORY"
RUN_ID_ENV = "KBO_RUN_ID"


def default_path() -> Path:
    """$KBO_HISTORY, else the per-user data folder: ${XDG_DATA_HOME:-~/.local/share}/kimi-backend-ops/history.jsonl."""
    if os.environ.get(HISTORY_ENV):
        return Path(os.environ[HISTORY_ENV])
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "kimi-backend-ops" / "history.jsonl"


# The history every command and `pytest --record-history` use unless given another file. Read at call time (the
# functions below default to it when passed no path), so tests can point it elsewhere.
HISTORY = default_path()


@functools.lru_cache(maxsize=None)
def _process_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_id() -> str:
    """The id of the run the records belong to: $KBO_RUN_ID when set (the nightly sets one for all its steps), else
    one id per process (UTC start time and a random suffix)."""
    return os.environ.get(RUN_ID_ENV) or _process_run_id()


@functools.lru_cache(maxsize=None)
def machine() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version()}


@functools.lru_cache(maxsize=None)
def commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stamp(record: dict) -> dict:
    """A record with its provenance filled in (time, machine, commit, run id) unless already present."""
    return {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "commit": commit(), "run_id": run_id(), **record}


def writable(path: Path | str | None = None) -> str | None:
    """None when records can be appended to `path` (default HISTORY), else why not: opens it for appending the way
    `append` does (creating it, and its folder, when missing), so a read-only file or folder is found before any work
    runs."""
    path = Path(path or HISTORY)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError as err:
        return f"cannot append to the history {path}: {err.strerror or err}"
    return None


def append(records: list[dict], path: Path | str | None = None) -> None:
    """Append records to `path` (default HISTORY) as JSON lines in ONE write on an O_APPEND descriptor, then fsync:
    concurrent writers never interleave lines, and a crash can at worst leave a torn last line, which `load` skips."""
    if not records:
        return
    blob = "".join(json.dumps(stamp(r), sort_keys=True, default=str) + "\n" for r in records).encode()
    path = Path(path or HISTORY)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A torn line left by an earlier crash must not swallow our first record.
        if os.fstat(fd).st_size and _last_byte(path) != b"\n":
            blob = b"\n" + blob
        written = os.write(fd, blob)
        if written != len(blob):
            raise OSError(f"short write to {path}: {written} of {len(blob)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


# The fields each kind of record must carry for the report and the comparison to use it: (name, type) pairs, the
# second list only for records with figures (supported is not False). Other kinds need the common fields only.
_TEXT, _INT, _NUMBER, _BOOL, _POSITIVE = str, int, (int, float), bool, "positive"
COMMON_FIELDS = [("kind", _TEXT), ("time", _TEXT), ("commit", _TEXT)]
REQUIRED = {
    "bench": ([("test", _TEXT), ("backend", _TEXT), ("model", _TEXT), ("variant", _TEXT), ("form", _TEXT),
               ("n_batch", _INT), ("n_ubatch", _INT), ("n_depth", _INT)],
              [("avg_ts", _POSITIVE), ("stddev_ts", _NUMBER)]),
    "ops": ([("op", _TEXT), ("backend", _TEXT), ("case", _TEXT)], [("us_per_run", _POSITIVE), ("frac_copy", _NUMBER)]),
    "copy": ([("backend", _TEXT)], [("gb_s", _NUMBER)]),
    "delta_net": ([("variant", _TEXT), ("backend", _TEXT), ("S", _INT), ("H", _INT), ("T", _INT), ("n_seqs", _INT),
                   ("gate", _TEXT), ("planned_compute_bytes", _INT)], []),
    "conformance": ([("backend", _TEXT), ("op", _TEXT), ("passed", _INT), ("failed", _INT), ("skipped", _INT)], []),
    "parity": ([("backend", _TEXT), ("against", _TEXT), ("model", _TEXT), ("variant", _TEXT), ("form", _TEXT),
                ("passed", _BOOL)], []),
    "mutants": ([("mutant", _TEXT), ("backend", _TEXT), ("op", _TEXT), ("caught", _BOOL), ("seed", _INT)], []),
}


# Fields a record may leave out, but when present (and not null) must have this type: the report sums, plots and
# tests them. _SAMPLES: a list of positive numbers (per-repetition speeds or times).
_SAMPLES = "samples"
# run_id groups a run's records (the comparison takes one whole run as its baseline); older records have none.
COMMON_OPTIONAL = [("run_id", _TEXT)]
OPTIONAL = {
    "bench": [("reps", _INT), ("weights_bytes", _NUMBER), ("state_bytes", _NUMBER),
              ("compute_planned_bytes", _NUMBER), ("compute_measured_bytes", _NUMBER), ("samples_ts", _SAMPLES)],
    "ops": [("gb_s", _NUMBER), ("copy_gb_s", _NUMBER), ("gflops", _NUMBER), ("ceiling_gflops", _NUMBER),
            ("frac_ceiling", _NUMBER), ("samples_us", _SAMPLES), ("reps", _INT), ("budget_s", _NUMBER)],
    "delta_net": [("measured_compute_bytes", _NUMBER)],
}


def _type_ok(value, kind) -> bool:
    if kind == _SAMPLES:
        return isinstance(value, list) and all(_type_ok(v, _POSITIVE) for v in value)
    if isinstance(value, bool):  # JSON true/false is no count or figure
        return kind is _BOOL
    if kind == _POSITIVE:  # a speed: the comparison divides by it
        return isinstance(value, (int, float)) and 0 < value < float("inf")
    return isinstance(value, kind) and (kind is not _NUMBER or value == value)  # NaN is no figure


def problem(record) -> str | None:
    """None when `record` is a history record the report and comparison can use, else what is wrong with it."""
    if not isinstance(record, dict):
        return f"not a record but {type(record).__name__} {json.dumps(record)[:40]}"
    kind = record.get("kind")
    fields, figures = REQUIRED.get(kind, ([], [])) if isinstance(kind, str) else ([], [])
    if record.get("supported", True) is not False:
        fields = fields + figures
    if "supported" in record and not isinstance(record["supported"], bool):
        return f"{kind} record: supported is {record['supported']!r}, not true/false"
    for name, want in COMMON_FIELDS + fields:
        if name not in record or record[name] is None:
            return f"{kind or 'a'} record without {name}"
        if not _type_ok(record[name], want):
            return f"{kind} record: {name} is {json.dumps(record[name])[:40]}"
    for name, want in COMMON_OPTIONAL + OPTIONAL.get(kind, []):
        if record.get(name) is not None and not _type_ok(record[name], want):
            return f"{kind} record: {name} is {json.dumps(record[name])[:40]}"
    try:
        dt.datetime.fromisoformat(record["time"])
    except ValueError:
        return f"{kind} record: time {record['time'][:40]!r} is not an ISO date and time"
    if "machine" in record and not isinstance(record["machine"], (dict, type(None))):
        return f"{kind} record: machine is {json.dumps(record['machine'])[:40]}"
    return None


def load(path: Path | str | None = None, kind: str | None = None, skipped: list | None = None) -> list[dict]:
    """The usable records of `path` (default HISTORY), optionally of one kind. Torn lines from a crash and lines that
    are not usable records (see `problem`) are left out; with `skipped` given, (line number, why) of each is appended
    to it. Blank lines are ignored."""
    path = Path(path or HISTORY)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            why = "not JSON (a torn write?)"
        else:
            why = problem(rec)
        if why:
            if skipped is not None:
                skipped.append((number, why))
            continue
        if kind is None or rec["kind"] == kind:
            records.append(rec)
    return records
