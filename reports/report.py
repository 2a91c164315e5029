"""The markdown report of the result history: pandas tables and matplotlib PNG plots of the latest result per config
(throughput, compute buffers, per-op fraction of the backend's ceiling, conformance, parity), where each figure came
from (machine, commit, device), and optionally the comparison against a baseline (reports/compare.py)."""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from reports.compare import (FAILING, MIN_EFFECT, RunPair, compare_runs, failing, fingerprint, frame,  # noqa: E402
                             latest, runs_summary, select_runs)

MIB = 2**20
VERDICT_ORDER = {"regression": 0, "missing": 1, "new failure": 2, "still failing": 3, "no tests ran": 4,
                 "inconclusive": 5, "improvement": 6, "fixed": 7, "same": 8}


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


# ---- plots: fixed colours, one line per (commit, device, config), log axes for wide ranges -------------------------
# Fixed colours: a backend has the same colour in every panel and every report; a variant its line style and marker.
BACKEND_COLORS = {"numpy": "tab:gray", "opencl": "tab:blue", "vulkan": "tab:red", "cuda": "tab:green",
                  "ggml": "tab:purple", "llama.cpp": "black"}
OTHER_COLORS = ("tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
VARIANT_STYLES = {"chunk16": ("-", "o"), "chunk64": ("--", "s"), "block16": ("-.", "^"), "recurrent": (":", "D")}
OTHER_STYLES = ((0, (5, 1, 1, 1)), "v")
WIDE_RANGE = 10  # largest / smallest positive value above which an axis is logarithmic: over a decade
SHAPE = re.compile(r"ne_a=(\[[^\]]*\])")
OLD_CEILING = "buffer copy (old record)"


def backend_color(backend) -> str:
    """The backend's colour: fixed for the known ones, else picked by a hash of its name (stable across runs)."""
    return BACKEND_COLORS.get(backend) or OTHER_COLORS[zlib.crc32(str(backend).encode()) % len(OTHER_COLORS)]


def variant_style(variant) -> tuple:
    """(line style, marker) of a delta-net variant."""
    return VARIANT_STYLES.get(variant, OTHER_STYLES)


def wide_range(values) -> bool:
    """Whether the positive values span more than WIDE_RANGE (then a log axis keeps the small ones visible)."""
    positive = [float(v) for v in values if pd.notna(v) and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > WIDE_RANGE


def newest_commits(df: pd.DataFrame, all_commits: bool = False) -> pd.DataFrame:
    """The records to plot: for each device (fingerprint) and backend, those of its newest commit (every commit with
    `all_commits`), and of each (commit, config) the latest record."""
    if df.empty:
        return df
    if not all_commits:
        newest = df.groupby(["fingerprint", "backend"], dropna=False)["commit"].transform("last")  # frame: by time
        df = df[df["commit"] == newest]
    return df.groupby(["config_id", "commit"], sort=False).tail(1).reset_index(drop=True)


def _line_labels(df: pd.DataFrame, fields: list[str], commits: bool = True) -> pd.Series:
    """A label per row naming its line: the config fields, then the commit (unless not `commits`: bars, which join
    nothing) and the device only where the plotted rows have several (lines are never joined across them: they are
    part of the line's key)."""
    many = {key: df[key].nunique(dropna=False) > 1 for key in ("commit", "fingerprint", "reps", "model") if key in df}
    many["commit"] = commits and many.get("commit", False)

    def label(row) -> str:
        parts = [Path(str(row["model"])).name] if many.get("model") else []
        parts += [str(row[f]) for f in fields if f in row and not pd.isna(row[f])]
        parts += [f"r{row['reps']}"] if many.get("reps") and not pd.isna(row["reps"]) else []
        parts += [f"@{_short_commit(row['commit'])}"] if many.get("commit") else []
        parts += [f"[{str(row['device'])[:28]}]"] if many.get("fingerprint") else []
        return " ".join(parts)
    return df.apply(label, axis=1)


def _short_commit(commit) -> str:
    bare = str(commit).removesuffix("-dirty")
    return bare[:9] + ("-dirty" if bare != str(commit) else "")


def _shape(case) -> str:
    """An op case's first operand shape ([4096,1024]), from its label."""
    found = SHAPE.search(str(case))
    return found.group(1) if found else ""


def _columns(case) -> str:
    """The second operand's shape of a matrix product case (b = ne_b=[...]): what the first multiplies."""
    found = re.search(r"ne_b=\[([0-9,]+)\]", str(case))
    return f"[{found.group(1)}]" if found else "?"


def _weights_type(dtype) -> str:
    """A product's weights type for its label ("q4_K "), empty for f32 and for records from before types."""
    return "" if pd.isna(dtype) or dtype == "f32" else f"{dtype} "


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
    return ["Plots show each device and backend at its newest commit, one line per (commit, device, config); each "
            "table names its commit.", "", markdown_table(spans)]


def _throughput(records, out_dir, stem, all_commits=False) -> list[str]:
    df = newest_commits(frame(records, "bench"), all_commits)
    if df.empty:
        return ["No throughput records (kind \"bench\": `python -m bench pp512 tg128`)."]
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
    # A line's key: everything but the depth it runs along, so no line joins commits, devices or repetition counts.
    key = ["commit", "fingerprint", "backend", "model", "variant", "form", "n_batch", "n_ubatch", "reps"]
    df = df.assign(line=_line_labels(df, ["backend", "variant", "form"]))
    newest = df.groupby(["fingerprint", "backend"])["commit"].transform("last")
    fig, axes = plt.subplots(1, len(tests), figsize=(6.5 * len(tests), 6), squeeze=False)
    for ax, test in zip(axes[0], tests):
        part = df[df["base_test"] == test]
        for _, series in part.groupby([k for k in key if k in part], dropna=False, sort=True):
            series = series.sort_values("n_depth")
            row = series.iloc[0]
            style, marker = variant_style(row["variant"])
            ax.errorbar([depths.index(d) for d in series["n_depth"]], series["avg_ts"], yerr=series["stddev_ts"],
                        marker=marker, ls=style, capsize=3, label=row["line"], color=backend_color(row["backend"]),
                        alpha=1.0 if row["commit"] == newest[series.index[0]] else 0.45)
        models = ", ".join(f"{m} ub{u}" for m, u in part[["model", "n_ubatch"]].drop_duplicates().itertuples(False))
        ax.set_title(f"{test}: tokens/s by depth\n(model {models})", fontsize=10)
        ax.set_xticks(range(len(depths)), [f"d{d}" for d in depths])
        ax.set_xlim(-0.4, len(depths) - 0.6)
        ax.set_xlabel("depth (tokens in the cache before the test)")
        ax.set_ylabel("tokens/s" + (" (log)" if wide_range(part["avg_ts"]) else ""))
        if wide_range(part["avg_ts"]):
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
    # One legend for every panel (a line keeps its colour and style in all of them), below them: lines stay visible.
    handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.02),
               ncol=min(3, len(handles)))
    return lines + ["", _save(fig, out_dir, stem, "throughput")]


def _bars(ax, df: pd.DataFrame, title: str) -> None:
    """Planned (grey, a property of the graph) and measured (per backend, in its colour) MiB per variant; a log axis
    when the values span decades."""
    labels = list(dict.fromkeys(df["label"]))
    backends = list(dict.fromkeys(df["backend"]))
    width = 0.8 / (1 + len(backends))
    planned = df.groupby("label", sort=False)["planned"].first().reindex(labels)
    ax.bar([i - 0.4 + width / 2 for i in range(len(labels))], planned, width, label="planned", color="0.6")
    for j, backend in enumerate(backends):
        measured = df[df["backend"] == backend].set_index("label")["measured"].reindex(labels)
        x = [i - 0.4 + width * (j + 1.5) for i in range(len(labels))]
        ax.bar(x, measured, width, label=f"measured ({backend})", color=backend_color(backend))
        for xi, value in zip(x, measured):
            if pd.isna(value):  # the backend did not run this variant
                ax.text(xi, ax.get_ylim()[0], "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    log = wide_range(pd.concat([df["planned"], df["measured"]]))
    if log:
        ax.set_yscale("log")
    for i, value in enumerate(planned):  # the figure on each planned bar: readable whatever the axis
        ax.text(i - 0.4 + width / 2, value, f"{value:.3g}", ha="center", va="bottom", fontsize=7)
    crowded = sum(len(label) for label in labels) > 12 * len(labels) or len(labels) > 3  # labels would touch
    ax.set_xticks(range(len(labels)), labels, rotation=25 if crowded else 0, ha="right" if crowded else "center",
                  fontsize=8)
    ax.set_ylabel("MiB (log)" if log else "MiB")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8)


def _compute_buffer(records, out_dir, stem, all_commits=False) -> list[str]:
    sources = []  # (title, frame with label, backend, planned MiB, measured MiB, commit)
    bench = _supported(newest_commits(frame(records, "bench"), all_commits))
    if not bench.empty and "compute_planned_bytes" in bench:
        # The buffer must hold the worst graph (pp's full ubatch, not tg's one token), as llama.cpp sizes it.
        bench = bench.groupby(["backend", "model", "variant", "form", "n_ubatch", "commit"], dropna=False,
                              sort=False).agg(planned=("compute_planned_bytes", "max"),
                                              measured=("compute_measured_bytes", "max")).reset_index()
        bench = bench.dropna(subset=["planned", "measured"], how="all")  # llama.cpp reports neither
        several = bench["commit"].nunique() > 1
        label = (bench["model"].map(lambda m: Path(str(m)).name) + " " if bench["model"].nunique() > 1 else "") \
            + bench["variant"].astype(str) + " " + bench["form"].astype(str) \
            + (" @" + bench["commit"].map(_short_commit) if several else "")
        models = ", ".join(f"{m} ub{u}" for m, u in bench[["model", "n_ubatch"]].drop_duplicates().itertuples(False))
        sources.append((f"model compute buffer, worst test (bench)\nmodel {models}", bench.assign(
            label=label, planned=bench["planned"] / MIB, measured=bench["measured"] / MIB)))
    delta = newest_commits(frame(records, "delta_net"), all_commits)
    if not delta.empty:
        shape = delta[["S", "H", "T", "n_seqs", "gate"]].astype(str).agg(" ".join, axis=1)
        delta = delta[shape == shape.iloc[-1]]  # one shape: the most recent run's
        s, h, t, n_seqs, gate = shape.iloc[-1].split()
        several = delta["commit"].nunique() > 1
        sources.append((f"delta net alone\n{gate.upper()}, S={s} H={h} T={t} seqs={n_seqs}",
                        delta.assign(label=delta["variant"] + (" @" + delta["commit"].map(_short_commit)
                                                               if several else ""),
                                     planned=delta["planned_compute_bytes"] / MIB,
                                     measured=delta.get("measured_compute_bytes", pd.NA) / MIB)))
    if not sources:
        return ["No compute-buffer records (kinds \"bench\" and \"delta_net\")."]
    lines = []
    fig, axes = plt.subplots(1, len(sources), figsize=(7 * len(sources), 5), squeeze=False)
    for ax, (title, df) in zip(axes[0], sources):
        lines += [f"**{title.replace(chr(10), ': ')}** (MiB; planned = graph planner peak, measured = the backend "
                  f"allocator's peak)", "",
                  markdown_table(df[["label", "backend", "planned", "measured", "commit"]]
                                 .rename(columns={"label": "variant"})), ""]
        _bars(ax, df, title)
    return lines + [_save(fig, out_dir, stem, "compute-buffer")]


def _ceilings(records, all_commits) -> pd.DataFrame:
    """The STREAM ceiling records (kind "copy") to show beside the ops: each device and backend's newest."""
    rows = [{**r, "fingerprint": fingerprint(r)} for r in records if r.get("kind") == "copy"]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["time"] = pd.to_datetime(df["time"], utc=True, format="ISO8601")
    df = df.sort_values("time", kind="stable").assign(config_id=df["fingerprint"] + " " + df["backend"])
    return newest_commits(df.reset_index(drop=True), all_commits)


def _ops(records, out_dir, stem, all_commits=False) -> list[str]:
    # Bars join nothing and each record holds its own ceilings: the newest record of every op config (all commits'
    # with all_commits), its commit in the table.
    ops = frame(records, "ops")
    df = _supported(newest_commits(ops, True) if all_commits else latest(ops))
    if df.empty:
        return ["No per-op records (kind \"ops\": `python -m bench ops`)."]
    # Records from before the STREAM ceilings held every op against the runtime's buffer copy.
    own = df["frac_bw_ceiling"] if "frac_bw_ceiling" in df else pd.Series(float("nan"), index=df.index)
    ceiling = df["bw_ceiling"] if "bw_ceiling" in df else pd.Series(None, index=df.index, dtype=object)
    why = df["over_ceiling_why"] if "over_ceiling_why" in df else pd.Series("", index=df.index)
    df = df.assign(series=_line_labels(df, ["backend"], commits=all_commits), shape=df["case"].map(_shape),
                   pct_ceiling_bw=100 * own.fillna(df["frac_copy"]),
                   ceiling_bw=ceiling.where(own.notna(), OLD_CEILING),
                   why=why.fillna("").where(own.notna(), ""),
                   pct_library=100 * df["frac_ceiling"] if "frac_ceiling" in df else float("nan"))
    lines = ["Each op's GB/s as a percentage of the ceiling of its access pattern, measured in the same run by the "
             "backend's own STREAM kernels (copy c = a, triad a = b + s*c, fill a = s; arrays of 64 MiB): write-only "
             "ops against fill, ops that read about as much as they write against copy, ops that read more against "
             "triad. Where an op still exceeds its ceiling, the last column says why. Matrix products' GFLOPS are "
             "also a percentage of the library named on their row (cuBLAS, or NumPy's BLAS for CPU drivers), "
             "measured in the same rounds.", ""]
    ceilings = _ceilings(records, all_commits)
    if not ceilings.empty:
        cols = ["backend", "copy_gb_s", "triad_gb_s", "fill_gb_s", "ceiling_source", "reps", "device", "commit"]
        lines += ["**STREAM ceilings** (GB/s, median of the rounds)", "",
                  markdown_table(ceilings[[c for c in cols if c in ceilings]]), ""]
    cols = ["op", "shape", "backend", "us_per_run", "gb_s", "ceiling_bw", "pct_ceiling_bw", "why", "gflops",
            "ceiling", "ceiling_gflops", "pct_library", "reps", "device", "commit"]
    table = df[[c for c in cols if c in df]].sort_values(["op", "backend"]).rename(columns={
        "ceiling_bw": "ceiling", "pct_ceiling_bw": "% of ceiling", "why": "above its ceiling because",
        "ceiling": "library", "ceiling_gflops": "library GFLOPS", "pct_library": "% of library"})
    lines += [markdown_table(table, max_chars=110), ""]
    lines.append(_ops_plot(df, out_dir, stem))
    matmul = df.dropna(subset=["pct_library"])
    if "flops" in matmul:  # memory-bound products (quantized mat-vecs: flops 0) are judged by bandwidth above
        matmul = matmul[matmul["flops"].fillna(1) > 0]
    matmul = matmul.sort_values(["op", "series"], ascending=False)
    if matmul.empty:
        return lines + ["", "No matrix-product ceiling records."]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(matmul) + 1.4))
    ax.barh(range(len(matmul)), matmul["pct_library"], 0.7, color=[backend_color(b) for b in matmul["backend"]])
    library = matmul["ceiling"] if "ceiling" in matmul else pd.Series("the library", index=matmul.index)
    types = matmul["type"] if "type" in matmul else pd.Series(pd.NA, index=matmul.index)
    labels = [f"{op} {_weights_type(t)}{shape} x {_columns(case)} {s}"
              for op, t, shape, case, s in zip(matmul["op"], types, matmul["shape"], matmul["case"], matmul["series"])]
    ax.set_yticks(range(len(matmul)), labels, fontsize=8)
    for y, (value, lib) in enumerate(zip(matmul["pct_library"], library)):
        ax.text(value, y, f" {value:.0f}% of {lib}", va="center", fontsize=7)
    ax.axvline(100, color="k", lw=0.8, ls="--")
    ax.set_xlim(0, 1.35 * max(110.0, matmul["pct_library"].max()))  # room for the library's name
    ax.set_xlabel("% of the library's GFLOPS on the same product (median of the rounds)")
    ax.set_title("matrix products vs the library ceiling (a of the shape shown)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return lines + ["", _save(fig, out_dir, stem, "matmul")]


def _ops_plot(df: pd.DataFrame, out_dir, stem) -> str:
    """Horizontal bars per op and line (backend, commit where several), each op's % of its own ceiling; ops above
    100% carry a footnote number whose reason is printed under the plot."""
    ops = sorted(df["op"].unique(), reverse=True)  # reversed: barh draws bottom-up, so A reads at the top
    series = list(dict.fromkeys(df.sort_values("backend")["series"]))
    shapes = df.groupby("op")["shape"].first()
    newest = df.sort_values("time").groupby("backend")["commit"].last()  # backend -> its newest commit
    fig, ax = plt.subplots(figsize=(10, 0.16 * len(ops) * len(series) + 2))
    height = 0.8 / len(series)
    log = wide_range(df["pct_ceiling_bw"])
    notes = []
    for j, name in enumerate(series):
        # a series' newest record of each op (configs its label does not name, e.g. budgets, would collide)
        rows = df[df["series"] == name].drop_duplicates("op", keep="last").set_index("op").reindex(ops)
        y = [i - 0.4 + height * (j + 0.5) for i in range(len(ops))]
        backend = rows["backend"].dropna().iloc[0]
        older = not rows["commit"].dropna().isin(newest[newest.index == backend]).any()  # faded, like old lines
        ax.barh(y, rows["pct_ceiling_bw"], height, label=name, color=backend_color(backend), alpha=0.45 if older else 1)
        for yi, op, pct, why in zip(y, ops, rows["pct_ceiling_bw"], rows["why"]):
            if pd.notna(pct) and pct > 100 and isinstance(why, str) and why:
                notes.append(f"[{len(notes) + 1}] {name} {op}: {why}")
                ax.text(pct, yi, f" [{len(notes)}]", va="center", fontsize=6)
    ax.axvline(100, color="k", lw=0.8, ls="--")
    if log:
        ax.set_xscale("log")
    else:
        ax.set_xlim(0, 1.1 * max(110.0, df["pct_ceiling_bw"].max()))
    ax.set_yticks(range(len(ops)), [f"{op} {shapes[op]}" for op in ops], fontsize=7)
    ax.set_ylim(-0.6, len(ops) - 0.4)
    old = (df["ceiling_bw"] == OLD_CEILING).any()
    ax.set_xlabel("% of the backend's STREAM ceiling for the op's access pattern (copy, triad or fill)"
                  + (", log scale" if log else "") + ("\n(records from before the STREAM ceilings: % of the runtime's "
                                                      "buffer copy)" if old else ""))
    ax.set_title("memory throughput per op vs the backend's own bandwidth ceiling", fontsize=10)
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    if notes:
        # under the x label (about 40 points below the axes), inside the saved area (bbox_inches="tight")
        ax.annotate("\n".join(notes), xy=(0, 0), xycoords="axes fraction", xytext=(0, -48), textcoords="offset points",
                    fontsize=7, va="top", ha="left")
    return _save(fig, out_dir, stem, "ops")


def _conformance(records, out_dir, stem) -> list[str]:
    df = latest(frame(records, "conformance"))
    if df.empty:
        return ["No conformance records (`python -m pytest --record-history cases/test_ops.py`)."]
    # One bar per backend and machine: a GPU machine's CUDA run and a CPU machine's all-skipped one never add up.
    counts = df.groupby(["fingerprint", "backend"])[["passed", "failed", "skipped"]].sum().reset_index()
    failed = df[df["failed"] > 0]
    profiles = sorted(df["profile"].dropna().unique()) if "profile" in df else []
    lines = [f"Latest run per backend and op (Hypothesis profiles: {', '.join(profiles) or 'unknown'}).", "",
             markdown_table(counts), ""]
    lines += (["Failing: " + ", ".join(f"{r.backend}/{r.op} ({r.failed})" for r in failed.itertuples()), ""]
              if not failed.empty else ["No failing op.", ""])
    idle = df[df["passed"] + df["failed"] == 0]  # every test skipped: not a pass
    if not idle.empty:
        lines += ["No test ran (all skipped, counted as failing): "
                  + ", ".join(f"{r.backend}/{r.op}" for r in idle.itertuples()), ""]
    machines = counts.groupby("backend")["fingerprint"].transform("nunique")
    labels = [b if n == 1 else f"{b} @ {f}" for b, f, n in zip(counts["backend"], counts["fingerprint"], machines)]
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


def comparison_section(pairs: list[RunPair], table: pd.DataFrame, baseline: str) -> list[str]:
    """Markdown lines of a comparison (`compare.select_runs` pairs and their `compare.compare_runs` table): which
    runs were compared, a count of what fails, and the table, failing rows first."""
    if not pairs:
        return [f"Baseline: {baseline}. No run to compare."]
    lines = [f"Baseline: {baseline}. Runs compared (one whole run per kind of record and side, same machine):", "",
             markdown_table(runs_summary(pairs)), ""]
    if table.empty:
        return lines + ["No config of a baseline run to compare."]
    counts = table["verdict"].value_counts()
    bad = failing(table)
    failing_counts = ", ".join(f"{counts[v]} {v}" for v in FAILING if v in counts)
    lines += [f"{len(bad)} failing ({failing_counts or 'none'}) of {len(table)} compared configs; "
              f"{counts.get('inconclusive', 0)} inconclusive (too few samples for a verdict).", ""]
    worst_first = table.assign(_order=table["verdict"].map(VERDICT_ORDER)).sort_values(["_order", "kind", "test"],
                                                                                       kind="stable")
    shown = [c for c in table.columns if c not in ("base_run", "new_run", "base_commit", "new_commit")]
    return lines + [markdown_table(worst_first[shown])]


def _comparison(records, baseline, current_commit, current_run, min_effect) -> list[str]:
    pairs = select_runs(records, baseline, current_commit, current_run)
    return comparison_section(pairs, compare_runs(pairs, min_effect), baseline)


def render_report(records: list[dict], out_dir, title: str, baseline: str | None = None, notes: list[str] = (),
                  stem: str = "report", current_commit: str | None = None, current_run: str | None = None,
                  min_effect: float = MIN_EFFECT, all_commits: bool = False) -> Path:
    """Writes out_dir/<stem>.md and its PNG plots (<stem>-*.png) from history records and returns the markdown's path.
    `notes` go first (e.g. a nightly's steps). With `baseline` (a commit prefix, YYYY-MM-DD or "previous", against
    `current_run` or the newest run of `current_commit`; see compare.select_runs) a comparison section is added. Plots
    show each device's newest commit, or with `all_commits` every commit (older ones faded), one line per commit."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [("Provenance", _provenance(records)),
                ("Throughput (t/s by backend and variant across depths)",
                 _throughput(records, out_dir, stem, all_commits)),
                ("Compute buffer by variant", _compute_buffer(records, out_dir, stem, all_commits)),
                ("Per-op throughput vs the backend's ceiling", _ops(records, out_dir, stem, all_commits)),
                ("Conformance", _conformance(records, out_dir, stem)),
                ("Parity", _parity(records))]
    if baseline is not None:
        sections.append(("Comparison with the baseline",
                         _comparison(records, baseline, current_commit, current_run, min_effect)))
    lines = [f"# {title}", "", *notes, ""] if notes else [f"# {title}", ""]
    for heading, body in sections:
        lines += [f"## {heading}", "", *body, ""]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path
