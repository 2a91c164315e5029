"""The result history: one JSON line per result, appended atomically so a crash never corrupts earlier records.

Each record carries where it came from (time, machine, commit, backend, device, driver) beside its figures.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import subprocess
from pathlib import Path

HISTORY = Path(__file__).resolve().parent / "history.jsonl"


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
    """A record with its provenance filled in (time, machine, commit) unless already present."""
    return {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "commit": commit(), **record}


def append(records: list[dict], path: Path | str = HISTORY) -> None:
    """Append records as JSON lines in ONE write on an O_APPEND descriptor, then fsync: concurrent writers never
    interleave lines, and a crash can at worst leave a torn last line, which `load` skips."""
    if not records:
        return
    blob = "".join(json.dumps(stamp(r), sort_keys=True, default=str) + "\n" for r in records).encode()
    path = Path(path)
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


def load(path: Path | str = HISTORY, kind: str | None = None) -> list[dict]:
    """All intact records (optionally of one kind); torn lines from a crash are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if kind is None or rec.get("kind") == kind:
            records.append(rec)
    return records
