"""llama-bench's result fields and output formats for our pp/tg results, so that llama.cpp's own tools read them.

Read from ggml-org/llama.cpp (the copy vendored by llama-cpp-python 0.3.36):
- tools/llama-bench/llama-bench.cpp: `test::get_fields()` (names and order), `test::get_field_type()` (types), the
  csv, json, jsonl and sql printers, `parse_int_range` (the value syntax of -p/-n/-d/-b/-ub) and
  `cmd_params_defaults` (the defaults of the settings we do not vary);
- scripts/compare-llama-bench.py: the loader (`LlamaBenchData*`): which fields it requires (COMPARE_REQUIRED) and
  the sqlite table it reads (SQL_TABLE).

Units as llama-bench's: times in integer nanoseconds (avg_ns, stddev_ns, samples_ns), speeds in tokens per second
(avg_ts, stddev_ts, samples_ts: (n_prompt + n_gen) / seconds of one repetition, the depth not counted), sizes in
bytes, test_time in RFC 3339 UTC. Our own columns follow llama-bench's fields in every format (OUR_COLUMNS).

What llama-bench's fields mean for our runs (`fields` fills them in; every other setting is llama-bench's default,
which is what our runs do: no CPU mask, no tensor split or override, no embeddings, ...):
- build_commit: this repository's HEAD as 12 hex digits (our records' `commit` also says `-dirty`; the comparison
  script matches commits by hash prefix, so a suffix would hide them), build_number: `git rev-list --count HEAD`.
- cpu_info: this machine's CPU model; gpu_info: the device a kernel backend (opencl, vulkan, cuda) ran on, empty
  for host backends (numpy, ggml, llama.cpp's CPU backend), as llama-bench leaves it empty without a GPU.
- backends: the runtime (RUNTIME_NAMES); llama.cpp's anchor is llama.cpp's CPU backend, "CPU".
- model_filename: --model as given (a preset name or a GGUF path); model_type: the model config, and for our graphs
  the delta-net variant and MLA form, since compare-llama-bench keys results on model_type and not on our columns,
  and must not average two variants together.
- model_size: the weights' bytes as the backend holds them (ours: our allocator's count; llama.cpp: the GGUF's
  tensor data, which is what llama_model_size counts); model_n_params: elements of every weight tensor.
- n_threads: host threads doing the work: llama.cpp's and the ggml backend's thread count, the machine's core count
  for numpy (its BLAS may use them all), 1 for the kernel backends (one host thread drives the device).
- n_gpu_layers: layers on the device: every layer for the kernel backends, 0 for host backends.
- type_k, type_v: f32 (our MLA latent cache, and the F32 KV cache llama.cpp's anchor is given).
- flash_attn: llama-bench's 0 (off) / 1 (on): our attention is unfused, llama.cpp's anchor runs with it on.
- split_mode none and devices auto: one device, the runtime's choice; repack false: no weight repacking.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import re
import subprocess
from pathlib import Path

from reports import history

TEXT, INT, BOOL, FLOAT = "TEXT", "INT", "BOOL", "FLOAT"  # test::field_type

# test::get_fields() with test::get_field_type(), in llama-bench's order.
FIELDS = [
    ("build_commit", TEXT), ("build_number", INT), ("cpu_info", TEXT), ("gpu_info", TEXT), ("backends", TEXT),
    ("model_filename", TEXT), ("model_type", TEXT), ("model_size", INT), ("model_n_params", INT),
    ("n_batch", INT), ("n_ubatch", INT), ("n_threads", INT), ("cpu_mask", TEXT), ("cpu_strict", BOOL),
    ("poll", INT), ("type_k", TEXT), ("type_v", TEXT), ("n_gpu_layers", INT), ("n_cpu_moe", INT),
    ("split_mode", TEXT), ("main_gpu", INT), ("no_kv_offload", BOOL), ("flash_attn", INT), ("devices", TEXT),
    ("tensor_split", TEXT), ("tensor_buft_overrides", TEXT), ("load_mode", TEXT), ("lazy_mode", TEXT),
    ("embeddings", BOOL), ("no_op_offload", INT), ("no_host", BOOL), ("repack", BOOL), ("fit_target", INT),
    ("fit_min_ctx", INT), ("n_prompt", INT), ("n_gen", INT), ("n_depth", INT),
    ("test_time", TEXT), ("avg_ns", INT), ("stddev_ns", INT), ("avg_ts", FLOAT), ("stddev_ts", FLOAT),
]
FIELD_NAMES = [name for name, _ in FIELDS]
SAMPLES = ["samples_ns", "samples_ts"]  # after the fields, in json and jsonl only (llama-bench's printers)

# scripts/compare-llama-bench.py: LLAMA_BENCH_KEY_PROPERTIES + ["build_commit", "test_time", "avg_ts"], the keys its
# json, jsonl and csv loaders require of every result; its sqlite loader reads this table.
COMPARE_REQUIRED = [
    "cpu_info", "gpu_info", "backends", "n_gpu_layers", "n_cpu_moe", "tensor_buft_overrides", "model_filename",
    "model_type", "n_batch", "n_ubatch", "embeddings", "cpu_mask", "cpu_strict", "poll", "n_threads", "type_k",
    "type_v", "load_mode", "no_kv_offload", "split_mode", "main_gpu", "tensor_split", "flash_attn", "n_prompt",
    "n_gen", "n_depth", "fit_target", "fit_min_ctx", "build_commit", "test_time", "avg_ts"]
SQL_TABLE = "llama_bench"

# Our columns, after llama-bench's in csv and sql (json and jsonl carry the whole record).
OUR_COLUMNS = [
    ("backend", TEXT), ("variant", TEXT), ("form", TEXT), ("model_config", TEXT), ("test", TEXT), ("device", TEXT),
    ("driver", TEXT), ("n_ctx", INT), ("reps", INT), ("weights_bytes", INT), ("state_bytes", INT),
    ("compute_planned_bytes", INT), ("compute_measured_bytes", INT), ("kernel_ns", INT), ("harness_overhead", FLOAT),
    ("kernel_timer", TEXT),
]

RUNTIME_NAMES = {"numpy": "NumPy", "opencl": "OpenCL", "vulkan": "Vulkan", "cuda": "CUDA", "ggml": "ggml-python CPU",
                 "llama.cpp": "CPU"}
HOST_BACKENDS = ("numpy", "ggml", "llama.cpp")

# cmd_params_defaults of the settings our runs do not vary, as llama-bench prints them.
DEFAULTS = {"cpu_mask": "0x0", "cpu_strict": False, "poll": 50, "n_cpu_moe": 0, "split_mode": "none", "main_gpu": 0,
            "no_kv_offload": False, "devices": "auto", "tensor_split": "0.00", "tensor_buft_overrides": "none",
            "load_mode": "auto", "lazy_mode": "auto", "embeddings": False, "no_op_offload": 0, "no_host": False,
            "repack": False, "fit_target": 0, "fit_min_ctx": 0, "type_k": "f32", "type_v": "f32"}

FORMATS = ["md", "csv", "json", "jsonl", "sql"]

_RANGE = re.compile(r"(\d+)(?:-(\d+)(?:([+*])(\d+))?)?")


def parse_int_range(flag: str, text: str, minimum: int) -> list[int]:
    """llama-bench's value syntax: comma-separated items, each N, first-last, first-last+step or first-last*mult
    (both ends included). ValueError naming `flag` for anything else, a value below `minimum`, an empty range
    (last < first; llama-bench yields nothing there) or a step that does not advance."""
    values = []
    for item in text.split(","):
        m = _RANGE.fullmatch(item.strip())
        if not m:
            raise ValueError(f"{flag} takes N, first-last, first-last+step or first-last*mult, comma-separated; "
                             f"got {text!r}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        op, step = m.group(3) or "+", int(m.group(4) or 1)
        if last < first:
            raise ValueError(f"{flag}: the range {item!r} is empty (last < first)")
        n = first
        while n <= last:
            values.append(n)
            following = n + step if op == "+" else n * step
            if following <= n:
                raise ValueError(f"{flag}: the range {item!r} does not advance")
            n = following
    for n in values:
        if n < minimum:
            raise ValueError(f"{flag} must be >= {minimum}, got {n}")
    return values


def now() -> str:
    """test_time: RFC 3339 UTC to the second, as llama-bench writes it."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=None)
def build() -> tuple[str, int]:
    """(build_commit, build_number): HEAD as 12 hex digits and its commit count; ("unknown", 0) outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  check=True).stdout.strip()
        return git("rev-parse", "--short=12", "HEAD"), int(git("rev-list", "--count", "HEAD"))
    except (OSError, subprocess.CalledProcessError, ValueError):
        return "unknown", 0


def n_threads(backend: str, anchor_threads: int | None = None) -> int:
    """Host threads doing a backend's work (see the module docstring)."""
    if backend == "llama.cpp":
        return anchor_threads
    if backend == "ggml":
        from backends.ggml import N_THREADS
        return N_THREADS
    if backend == "numpy":
        return os.cpu_count() or 1
    return 1


def fields(record: dict, n_layer: int, n_params: int) -> dict:
    """llama-bench's fields of one of our bench records (its n_batch, n_ubatch, n_prompt, n_gen, n_depth, test_time
    and avg_ts/stddev_ts are already ours; the llama.cpp anchor's model_size too). Timing fields only for a record
    with samples_ts."""
    backend = record["backend"]
    host = backend in HOST_BACKENDS
    commit, number = build()
    out = {"build_commit": commit, "build_number": number, "cpu_info": history.machine().get("cpu", ""),
           "gpu_info": "" if host else record.get("device", ""), "backends": RUNTIME_NAMES.get(backend, backend),
           "model_filename": record["model"],
           "model_type": record["model_config"] + ("" if backend == "llama.cpp" else
                                                    f" {record['variant']} {record['form']}"),
           "model_size": record.get("weights_bytes", record.get("model_size")), "model_n_params": n_params,
           "n_threads": n_threads(backend, record.get("n_threads")), "n_gpu_layers": 0 if host else n_layer,
           "flash_attn": int(bool(record.get("flash_attn", False))), **DEFAULTS}
    if "samples_ts" in record:
        tokens = record["n_prompt"] + record["n_gen"]
        samples_ns = [round(1e9 * tokens / ts) for ts in record["samples_ts"]]
        mean = sum(samples_ns) / len(samples_ns)
        spread = (math.sqrt(sum((s - mean) ** 2 for s in samples_ns) / (len(samples_ns) - 1))
                  if len(samples_ns) > 1 else 0.0)
        out.update(samples_ns=samples_ns, avg_ns=round(mean), stddev_ns=round(spread))
    return out


def row(record: dict) -> dict:
    """A record in llama-bench's order: its fields, samples_ns, samples_ts, then the rest of ours."""
    first = [k for k in FIELD_NAMES + SAMPLES if k in record]
    return {**{k: record[k] for k in first}, **{k: v for k, v in record.items() if k not in first}}


def _scalar(value, kind: str):
    """A value as llama-bench's csv and sql carry it: booleans as 0/1, a missing or NaN figure as None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if kind == BOOL or isinstance(value, bool):
        return int(value)
    return value


def _flat(records: list[dict]) -> tuple[list[tuple[str, str]], list[list]]:
    columns = FIELDS + OUR_COLUMNS
    return columns, [[_scalar(r.get(name), kind) for name, kind in columns] for r in records]


def to_csv(records: list[dict]) -> str:
    """llama-bench's csv (a header of field names, one line per result, every value numeric where its type is) with
    our columns after its fields."""
    import csv
    import io

    columns, rows = _flat(records)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for name, _ in columns])
    writer.writerows([["" if v is None else v for v in values] for values in rows])
    return out.getvalue()


def to_json(records: list[dict]) -> str:
    return json.dumps([row(r) for r in records], indent=2)


def to_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(row(r)) + "\n" for r in records)


_SQL_TYPES = {TEXT: "TEXT", INT: "INTEGER", BOOL: "INTEGER", FLOAT: "REAL"}  # sql_printer::get_sql_field_type


def _sql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def sql_script(table: str, columns: list[tuple[str, str]], rows: list[list]) -> str:
    """`CREATE TABLE IF NOT EXISTS table (...)` of (name, SQL type) columns, then one INSERT per row of values (None
    as NULL), as llama-bench and test-backend-ops print their `-o sql` (`| sqlite3 file.sqlite`)."""
    names = ", ".join(name for name, _ in columns)
    lines = [f"CREATE TABLE IF NOT EXISTS {table} ("]
    lines += [f"  {name} {kind}{',' if i < len(columns) - 1 else ''}" for i, (name, kind) in enumerate(columns)]
    lines += [");", ""]
    lines += [f"INSERT INTO {table} ({names}) VALUES ({', '.join(map(_sql_literal, values))});" for values in rows]
    return "\n".join(lines) + "\n"


def to_sql(records: list[dict]) -> str:
    """llama-bench's sql: the llama_bench table with our columns added after its fields, one INSERT per result. A
    database that llama-bench itself created lacks our columns: append ours to a file of our own."""
    columns, rows = _flat(records)
    return sql_script(SQL_TABLE, [(name, _SQL_TYPES[kind]) for name, kind in columns], rows)


PRINTERS = {"csv": to_csv, "json": to_json, "jsonl": to_jsonl, "sql": to_sql}
