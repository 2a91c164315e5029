"""The markdown report of the result history: pandas tables and matplotlib PNG plots of the latest result per config
(throughput, compute buffers, per-op fraction of the backend's ceiling, conformance, parity), where each figure came
from (machine, commit, device), and optionally the comparison against a baseline (reports/compare.py)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from reports.compare import compare, failing, frame, latest  # noqa: E402

MIB = 2**20
VERDICT_ORDER = {"regression": 0, "new failure": 1, "improvement": 2, "fixed": 3, "same": 4}


def _number(x) -> str:
    """4 significant digits, without exponents for large figures (t/s, us); blank for a missing value."""
    if pd.isna(x):
        return ""
    return f"{x:.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def markdown_table(df: pd.DataFrame, max_chars: int = 70) -> str:
    """The frame as a markdown table: floats to 4 significant digits, missing values blank, long strings cut."""
    floats = set(df.select_dtypes("float").columns)
    cells = {c: df[c].map(_number) if c in floats else
             df[c].map(lambda v: "" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else
                       (s if len(s := str(v)) <= max_chars else s[:max_chars - 1] + "…")) for c in df.columns}
    align = ["right" if c in floats or pd.api.types.is_numeric_dtype(df[c]) else "left" for c in df.columns]
    return pd.DataFrame(cells).to_markdown(index=False, colalign=align)


def _supported(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with figures: a record marked supported=False has none."""
    return df[df["supported"].map(lambda v: v is not False)] if "supported" in df else df


def _series_label(row, fields: list[str], hosts: int) -> str:
    """A legend label from the given config fields; the host only when several machines are in the history."""
    parts = [str(row[f]) for f in fields if not pd.isna(row[f])]
    return " ".join(parts) + (f" @{row['host']}" if hosts > 1 else "")


def _save(fig, out_dir: Path, stem: str, name: str) -> str:
    path = out_dir / f"{stem}-{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"![{name}]({path.name})"


# ---- sections: each returns markdown lines, saying so when it has no data --------------------------------------------
def _provenance(records: list[dict]) -> list[str]:
    """Per machine and backend: the hardware, device and driver, and which commits and times the records span."""
    df = pd.DataFrame([{"host": (r.get("machine") or {}).get("host"), "cpu": (r.get("machine") or {}).get("cpu"),
                        "cores": (r.get("machine") or {}).get("cores"), "backend": r["backend"],
                        "device": r.get("device"), "driver": str(r.get("driver") or "")[:60],
                        "commit": r.get("commit"), "time": r.get("time")} for r in records if "backend" in r])
    if df.empty:
        return ["No records."]
    spans = df.sort_values("time").groupby(["host", "backend"], dropna=False).agg(
        cpu=("cpu", "last"), cores=("cores", "last"), device=("device", "last"), driver=("driver", "last"),
        records=("time", "size"), commits=("commit", "nunique"), last_commit=("commit", "last"),
        first=("time", "first"), last=("time", "last")).reset_index()
    return ["Every figure below is the latest record of its config; each table names its commit.", "",
            markdown_table(spans)]


def _throughput(records, out_dir, stem) -> list[str]:
    df = latest(frame(records, "bench"))
    if df.empty:
        return ["No throughput records (kind \"bench\": `python -m bench pp512 tg128`)."]
    hosts = df["host"].nunique()
    for part in ("weights", "state"):
        if f"{part}_bytes" in df:
            df[f"{part} MiB"] = df[f"{part}_bytes"] / MIB
    cols = ["test", "backend", "model", "variant", "form", "n_batch", "n_ubatch", "avg_ts", "stddev_ts", "reps",
            "weights MiB", "state MiB", "device", "commit"]
    lines = ["Mean t/s +- sample standard deviation over the repetitions (llama-bench semantics); state = the "
             "recurrent state + the latent KV cache as allocated for the context.", "",
             markdown_table(df[[c for c in cols if c in df]].sort_values(["test", "backend", "variant"]))]
    df = _supported(df)
    if df.empty:
        return lines
    df = df.assign(base_test=df["test"].str.split(" @ ").str[0])  # pp512 @ d8192 -> pp512: one plot per test
    tests = sorted(df["base_test"].unique(), key=lambda t: (not t.startswith("pp"), t))
    depths = sorted(df["n_depth"].unique())
    df = df.assign(series=df.apply(_series_label, axis=1, args=(["backend", "variant", "form", "model"], hosts)))
    palette = plt.get_cmap("tab20").colors
    colors = {label: palette[i % len(palette)] for i, label in enumerate(sorted(df["series"].unique()))}  # same per panel
    fig, axes = plt.subplots(1, len(tests), figsize=(6.5 * len(tests), 6), squeeze=False)
    for ax, test in zip(axes[0], tests):
        part = df[df["base_test"] == test]
        for label, series in part.groupby("series"):
            series = series.sort_values("n_depth")
            ax.errorbar([depths.index(d) for d in series["n_depth"]], series["avg_ts"], yerr=series["stddev_ts"],
                        marker="o", capsize=3, label=label, color=colors[label])
        ax.set_title(f"{test}: tokens/s by depth")
        ax.set_xticks(range(len(depths)), [f"d{d}" for d in depths])
        ax.set_xlim(-0.4, len(depths) - 0.6)
        ax.set_xlabel("depth (tokens in the cache before the test)")
        ax.set_ylabel("tokens/s")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: lines stay visible
    return lines + ["", _save(fig, out_dir, stem, "throughput")]


def _compute_buffer(records, out_dir, stem) -> list[str]:
    sources = []  # (title, frame with backend, variant, planned MiB, measured MiB)
    bench = _supported(latest(frame(records, "bench")))
    if not bench.empty and "compute_planned_bytes" in bench:
        # The buffer must hold the worst graph (pp's full ubatch, not tg's one token), as llama.cpp sizes it.
        bench = bench.groupby(["backend", "model", "variant", "form"], dropna=False, sort=False).agg(
            planned=("compute_planned_bytes", "max"), measured=("compute_measured_bytes", "max"),
            commit=("commit", "last")).reset_index()
        sources.append(("model compute buffer, worst test (bench)", bench.assign(
            label=bench["model"].astype(str) + " " + bench["variant"].astype(str) + " " + bench["form"].astype(str),
            planned=bench["planned"] / MIB, measured=bench["measured"] / MIB)))
    delta = latest(frame(records, "delta_net"))
    if not delta.empty:
        shape = delta[["S", "H", "T", "n_seqs", "gate"]].astype(str).agg(" ".join, axis=1)
        delta = delta[shape == shape.iloc[-1]]  # one shape: the most recent run's
        s, h, t, n_seqs, gate = shape.iloc[-1].split()
        sources.append((f"delta net alone ({gate.upper()}, S={s} H={h} T={t} seqs={n_seqs})",
                        delta.assign(label=delta["variant"], planned=delta["planned_compute_bytes"] / MIB,
                                     measured=delta.get("measured_compute_bytes", pd.NA) / MIB)))
    if not sources:
        return ["No compute-buffer records (kinds \"bench\" and \"delta_net\")."]
    lines = []
    fig, axes = plt.subplots(1, len(sources), figsize=(7 * len(sources), 4.5), squeeze=False)
    for ax, (title, df) in zip(axes[0], sources):
        lines += [f"**{title}** (MiB; planned = graph planner peak, measured = the backend allocator's peak)", "",
                  markdown_table(df[["label", "backend", "planned", "measured", "commit"]]
                                 .rename(columns={"label": "variant"})),
                  ""]
        labels = list(dict.fromkeys(df["label"]))
        backends = list(dict.fromkeys(df["backend"]))
        # Planned is a property of the graph (one bar per variant); measured is per backend.
        width = 0.8 / (1 + len(backends))
        planned = df.groupby("label", sort=False)["planned"].first().reindex(labels)
        ax.bar([i - 0.4 + width / 2 for i in range(len(labels))], planned, width, label="planned", color="0.6")
        for j, backend in enumerate(backends):
            measured = df[df["backend"] == backend].set_index("label")["measured"].reindex(labels)
            x = [i - 0.4 + width * (j + 1.5) for i in range(len(labels))]
            ax.bar(x, measured, width, label=f"measured ({backend})")
            for xi, value in zip(x, measured):
                if pd.isna(value):  # the backend did not run this variant
                    ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0, ha="right"
                      if len(labels) > 4 else "center")
        ax.set_ylabel("MiB")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return lines + [_save(fig, out_dir, stem, "compute-buffer")]


def _ops(records, out_dir, stem) -> list[str]:
    df = _supported(latest(frame(records, "ops")))
    if df.empty:
        return ["No per-op records (kind \"ops\": `python -m bench ops`)."]
    hosts = df["host"].nunique()
    df = df.assign(series=df.apply(_series_label, axis=1, args=(["backend"], hosts)),
                   pct_copy=100 * df["frac_copy"],
                   pct_ceiling=100 * df["frac_ceiling"] if "frac_ceiling" in df else float("nan"))
    cols = ["op", "backend", "us_per_run", "gb_s", "copy_gb_s", "pct_copy", "gflops", "ceiling_gflops", "pct_ceiling",
            "device", "commit"]
    lines = ["GB/s as a percentage of the backend's own buffer-copy bandwidth measured in the same run (above 100% "
             "for ops that touch less memory than their operands' size); matrix products' GFLOPS as a percentage of "
             "the library ceiling (cuBLAS or NumPy's BLAS).", "",
             markdown_table(df[[c for c in cols if c in df]].sort_values(["op", "backend"])), ""]
    ops = sorted(df["op"].unique(), reverse=True)  # reversed: barh draws bottom-up, so A reads at the top
    series = list(dict.fromkeys(df["series"]))
    fig, ax = plt.subplots(figsize=(10, 0.13 * len(ops) * len(series) + 1.5))
    height = 0.8 / len(series)
    # A few ops (FILL writes without reading) reach several times the copy rate; clip them and print their value.
    x_max = min(300.0, max(110.0, 1.1 * df["pct_copy"].max()))
    for j, name in enumerate(series):
        pct = df[df["series"] == name].set_index("op")["pct_copy"].reindex(ops)
        y = [i - 0.4 + height * (j + 0.5) for i in range(len(ops))]
        ax.barh(y, pct.clip(upper=x_max), height, label=name, color=f"C{j}")
        for yi, value in zip(y, pct):
            if value > x_max:
                ax.text(x_max, yi, f" {value:.0f}%", va="center", ha="right", fontsize=7, color="white")
    ax.axvline(100, color="k", lw=0.8, ls="--")
    ax.set_xlim(0, x_max)
    ax.set_yticks(range(len(ops)), ops, fontsize=8)
    ax.set_ylim(-0.6, len(ops) - 0.4)
    ax.set_xlabel("% of the backend's copy bandwidth (GB/s of the op / GB/s of a buffer copy)")
    ax.set_title("memory throughput per op")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    lines.append(_save(fig, out_dir, stem, "ops"))
    matmul = df.dropna(subset=["pct_ceiling"]).sort_values(["op", "series"], ascending=False)
    if matmul.empty:
        return lines + ["", "No matrix-product ceiling records."]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(matmul) + 1.2))
    ax.barh(range(len(matmul)), matmul["pct_ceiling"], 0.7,
            color=[f"C{series.index(s)}" for s in matmul["series"]])
    ax.set_yticks(range(len(matmul)), [f"{op} ({s})" for op, s in zip(matmul["op"], matmul["series"])], fontsize=8)
    ax.set_xlabel("% of the library's GFLOPS on the same product (cuBLAS or NumPy's BLAS)")
    ax.set_title("matrix products vs the library ceiling")
    ax.grid(axis="x", alpha=0.3)
    return lines + ["", _save(fig, out_dir, stem, "matmul")]


def _conformance(records, out_dir, stem) -> list[str]:
    df = latest(frame(records, "conformance"))
    if df.empty:
        return ["No conformance records (`python -m pytest --record-history cases/test_ops.py`)."]
    counts = df.groupby(["host", "backend"])[["passed", "failed", "skipped"]].sum().reset_index()
    failed = df[df["failed"] > 0]
    profiles = sorted(df["profile"].dropna().unique()) if "profile" in df else []
    lines = [f"Latest run per backend and op (Hypothesis profiles: {', '.join(profiles) or 'unknown'}).", "",
             markdown_table(counts), ""]
    lines += (["Failing: " + ", ".join(f"{r.backend}/{r.op} ({r.failed})" for r in failed.itertuples()), ""]
              if not failed.empty else ["No failing op.", ""])
    hosts = counts["host"].nunique()
    labels = counts.apply(_series_label, axis=1, args=(["backend"], hosts))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(counts) + 1.2))
    left = pd.Series(0, index=counts.index)
    total = counts[["passed", "failed", "skipped"]].sum(axis=1)
    for outcome, color in (("passed", "tab:green"), ("failed", "tab:red"), ("skipped", "0.7")):
        ax.barh(range(len(counts)), counts[outcome], left=left, color=color, label=outcome)
        for y, (start, n) in enumerate(zip(left, counts[outcome])):
            if n >= 0.06 * total.max():  # the count inside its segment, where it fits
                ax.text(start + n / 2, y, str(n), ha="center", va="center", fontsize=8)
        left += counts[outcome]
    ax.set_yticks(range(len(counts)), labels)
    ax.set_xlabel("test cases")
    ax.set_title("conformance outcomes per backend")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return lines + [_save(fig, out_dir, stem, "conformance")]


def _parity(records) -> list[str]:
    df = latest(frame(records, "parity"))
    if df.empty:
        return ["No parity records (`python -m bench parity`)."]
    cols = ["backend", "against", "model", "variant", "form", "passed", "nodes_checked", "first_failing_node",
            "max_nmse", "top1_agreement", "commit"]
    return [markdown_table(df[[c for c in cols if c in df]].sort_values(["backend", "against"]))]


def _comparison(records, baseline, current_commit) -> list[str]:
    table = compare(records, baseline, current_commit=current_commit)
    if table.empty:
        return [f"No config was measured both in the baseline ({baseline}) and now."]
    bad = failing(table)
    worst_first = table.assign(_order=table["verdict"].map(VERDICT_ORDER)).sort_values(["_order", "kind", "test"])
    return [f"Baseline: {baseline}. "
            f"{len(bad)} significant regression(s) or new failure(s) in {len(table)} matched configs.", "",
            markdown_table(worst_first.drop(columns="_order"))]


def render_report(records: list[dict], out_dir, title: str, baseline: str | None = None, notes: list[str] = (),
                  stem: str = "report", current_commit: str | None = None) -> Path:
    """Writes out_dir/<stem>.md and its PNG plots (<stem>-*.png) from history records and returns the markdown's path.
    `notes` go first (e.g. a nightly's steps). With `baseline` (a commit prefix, YYYY-MM-DD or "previous", against
    `current_commit`; see compare.split) a comparison section is added."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [("Provenance", _provenance(records)),
                ("Throughput (t/s by backend and variant across depths)", _throughput(records, out_dir, stem)),
                ("Compute buffer by variant", _compute_buffer(records, out_dir, stem)),
                ("Per-op throughput vs the backend's ceiling", _ops(records, out_dir, stem)),
                ("Conformance", _conformance(records, out_dir, stem)),
                ("Parity", _parity(records))]
    if baseline is not None:
        sections.append(("Comparison with the baseline", _comparison(records, baseline, current_commit)))
    lines = [f"# {title}", "", *notes, ""] if notes else [f"# {title}", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", *body, ""]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path
