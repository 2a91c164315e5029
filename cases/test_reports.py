"""Reports, baseline comparison and the report/compare/nightly commands, on small synthetic histories."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import reporting
from bench.__main__ import main
from reports import compare as cmp
from reports import history
from reports.report import render_report

OLD, NEW = "aaaa11112222", "bbbb33334444"
OLD_TIME, NEW_TIME = "2026-11-20T03:00:00+00:00", "2026-11-21T03:00:00+00:00"
MACHINE = {"host": "box", "cpu": "Test CPU", "cores": 2}


def _stamp(record, commit, time):
    return {"machine": MACHINE, "commit": commit, "time": time, "device": "dev0", "driver": "drv 1", **record}


def bench(avg, test="pp512 @ d8192", backend="opencl", variant="chunk16", commit=OLD, time=OLD_TIME, spread=0.002,
          seed=0):
    """A "bench" record whose 5 samples lie within +-spread (relative) of avg."""
    kind, _, depth = test.partition(" @ d")  # llama-bench names: pp512, pp512 @ d8192
    samples = (avg * (1 + spread * np.random.default_rng(seed).uniform(-1, 1, 5))).tolist()
    return _stamp({"kind": "bench", "test": test, "test_kind": kind[:2], "n_prompt": 512 if kind == "pp512" else 0,
                   "n_gen": 128 if kind == "tg128" else 0, "n_depth": int(depth or 0), "backend": backend,
                   "model": "tiny", "variant": variant, "form": "absorbed", "n_batch": 2048, "n_ubatch": 512, "reps": 5,
                   "samples_ts": samples, "avg_ts": float(np.mean(samples)),
                   "stddev_ts": float(np.std(samples, ddof=1)), "weights_bytes": 5 << 20, "state_bytes": 3 << 20,
                   "compute_planned_bytes": (40 if variant == "chunk64" else 25) << 20,
                   "compute_measured_bytes": (42 if variant == "chunk64" else 26) << 20, "supported": True},
                  commit, time)


def ops(us, op="ADD", backend="opencl", commit=OLD, time=OLD_TIME, spread=0.002, seed=0):
    samples = (us * (1 + spread * np.random.default_rng(seed).uniform(-1, 1, 5))).tolist()
    return _stamp({"kind": "ops", "op": op, "backend": backend, "case": f"{op}(big)", "supported": True,
                   "us_per_run": min(samples), "samples_us": samples, "gb_s": 50.0, "gflops": 4.0, "copy_gb_s": 80.0,
                   "frac_copy": 0.625, **({"ceiling_gflops": 100.0, "frac_ceiling": 0.04} if op == "MUL_MAT" else {})},
                  commit, time)


def conformance(backend, op, failed, commit=OLD, time=OLD_TIME):
    return _stamp({"kind": "conformance", "backend": backend, "op": op, "profile": "ci", "passed": 12 - failed,
                   "failed": failed, "skipped": 1}, commit, time)


def parity(backend, passed, commit=OLD, time=OLD_TIME):
    return _stamp({"kind": "parity", "backend": backend, "against": "reference", "model": "tiny", "variant": "chunk16",
                   "form": "absorbed", "passed": passed, "nodes_checked": 812,
                   "first_failing_node": None if passed else "attn_out-3", "max_nmse": 3e-13 if passed else 0.2,
                   "top1_agreement": 1.0 if passed else 0.5}, commit, time)


def delta_net(variant, backend="opencl"):
    planned = {"recurrent": 10, "chunk64": 120, "chunk16": 60, "block16": 70}[variant] << 20
    return _stamp({"kind": "delta_net", "backend": backend, "variant": variant, "S": 128, "H": 32, "T": 512,
                   "n_seqs": 1, "gate": "kda", "supported": True, "planned_compute_bytes": planned,
                   "measured_compute_bytes": planned + (1 << 20), "ms": 100.0}, OLD, OLD_TIME)


def full_history() -> list[dict]:
    """Both commits' records of every kind: opencl got 20% slower, everything else moved by noise only."""
    recs = []
    for seed, (commit, time, slowdown) in enumerate(((OLD, OLD_TIME, 1.0), (NEW, NEW_TIME, 0.8))):
        at = dict(commit=commit, time=time, seed=seed)
        for depth in (0, 8192):
            for backend, variant in (("opencl", "chunk16"), ("vulkan", "chunk16"), ("vulkan", "chunk64")):
                scale = (slowdown if backend == "opencl" else 1.0) * (0.85 if variant == "chunk64" else 1.0)
                at_depth = f" @ d{depth}" if depth else ""
                recs.append(bench(1500.0 * scale / (1 + depth / 8192), "pp512" + at_depth, backend, variant, **at))
                recs.append(bench(90.0 * scale / (1 + depth / 16384), "tg128" + at_depth, backend, variant, **at))
        recs += [ops(1000.0, op, b, **at) for op in ("ADD", "CUMSUM", "MUL_MAT") for b in ("opencl", "vulkan")]
        at.pop("seed")
        recs += [conformance("opencl", "ACC", 0, **at), conformance("vulkan", "ACC", 0 if commit == OLD else 2, **at)]
        recs += [parity("opencl", True, **at), parity("vulkan", True, **at)]
    variants = ("recurrent", "chunk64", "chunk16", "block16")
    return recs + [delta_net(v, b) for v in variants for b in ("opencl", "vulkan")]


# ---- comparison ------------------------------------------------------------------------------------------------------
def _verdict(table, kind, test, backend, config=""):
    row = table[(table.kind == kind) & (table.test == test) & (table.backend == backend)
                & table.config.str.contains(config)]
    assert len(row) == 1, row
    return row.iloc[0]


def test_clear_slowdown_is_a_regression_and_noise_is_same():
    table = cmp.compare(full_history(), OLD)
    slow = _verdict(table, "bench", "pp512", "opencl")
    assert slow.verdict == "regression" and slow.ratio == pytest.approx(0.8, rel=0.01) and slow.p_value < 0.05
    steady = _verdict(table, "bench", "pp512", "vulkan", "variant=chunk64")
    assert steady.verdict == "same" and steady.ratio == pytest.approx(1.0, rel=0.01)
    assert set(table[table.kind == "ops"].verdict) == {"same"}
    # every config of the new commit found its baseline: 12 bench, 6 ops, 2 conformance, 2 parity
    assert table.kind.value_counts().to_dict() == {"bench": 12, "ops": 6, "conformance": 2, "parity": 2}


def test_small_or_noisy_change_is_not_a_regression():
    # 20% slower on average but samples spread +-50%: not significant
    noisy = cmp.compare([bench(1000.0, spread=0.5), bench(800.0, spread=0.5, commit=NEW, time=NEW_TIME, seed=3)], OLD)
    assert noisy.iloc[0].verdict == "same" and noisy.iloc[0].p_value >= 0.05
    # significant but within the 5% threshold
    small = cmp.compare([bench(1000.0), bench(970.0, commit=NEW, time=NEW_TIME, seed=3)], OLD)
    assert small.iloc[0].p_value < 0.05 and small.iloc[0].verdict == "same"
    assert cmp.compare([bench(1000.0), bench(970.0, commit=NEW, time=NEW_TIME)], OLD, threshold=0.02) \
        .iloc[0].verdict == "regression"


def test_records_without_samples_are_never_significant():
    unsampled = {**bench(500.0, commit=NEW, time=NEW_TIME), "samples_ts": None}
    row = cmp.compare([bench(1000.0), unsampled], OLD).iloc[0]
    assert row.ratio == pytest.approx(0.5, rel=0.01) and np.isnan(row.p_value) and row.verdict == "same"


def test_faster_is_an_improvement_and_ops_compare_speed():
    table = cmp.compare([ops(1000.0), ops(500.0, commit=NEW, time=NEW_TIME, seed=2)], OLD)
    row = table.iloc[0]
    assert row.verdict == "improvement" and row.ratio == pytest.approx(2.0, rel=0.01) and row.unit == "runs/s"


def test_new_failures_are_flagged():
    table = cmp.compare(full_history(), "2026-11-20")
    assert _verdict(table, "conformance", "ACC", "vulkan").verdict == "new failure"
    assert _verdict(table, "conformance", "ACC", "opencl").verdict == "same"
    flipped = cmp.compare([parity("cuda", True), parity("cuda", False, commit=NEW, time=NEW_TIME)], OLD)
    assert list(flipped.verdict) == ["new failure"]
    assert set(cmp.failing(table).verdict) == {"regression", "new failure"}


def test_configs_match_on_machine_and_settings():
    other_host = {**bench(800.0, commit=NEW, time=NEW_TIME), "machine": {**MACHINE, "host": "other"}}
    other_variant = bench(800.0, variant="block16", commit=NEW, time=NEW_TIME)
    assert cmp.compare([bench(1000.0), other_host, other_variant], OLD).empty


def test_baseline_by_commit_and_by_date_pick_the_latest_per_config():
    early = bench(2000.0, time="2026-11-19T03:00:00+00:00", commit="cccc55556666")
    recs = [early, bench(1000.0), bench(1000.0, commit=NEW, time=NEW_TIME)]
    by_date = cmp.compare(recs, "2026-11-20")  # the OLD record (latest on or before the day), not the early one
    assert by_date.iloc[0].base_commit == OLD and by_date.iloc[0].verdict == "same"
    by_commit = cmp.compare(recs, "cccc")
    assert by_commit.iloc[0].base_commit == "cccc55556666" and by_commit.iloc[0].new_commit == NEW
    assert by_commit.iloc[0].verdict == "regression"
    previous = cmp.compare(recs, "previous")  # the newest commit against the latest record of the others
    assert previous.iloc[0].base_commit == OLD and previous.iloc[0].new_commit == NEW


@pytest.mark.parametrize("baseline,message", [
    ("deadbeef", "no records from commit 'deadbeef'; commits in the history: aaaa11112222, bbbb33334444"),
    ("2026-01-01", "no records on or before 2026-01-01; the history starts on 2026-11-20"),
    ("2026-02-30", "not a valid date"),
    ("last-week", "neither a commit prefix"),
])
def test_bad_baseline_is_refused(baseline, message):
    with pytest.raises(ValueError, match=message):
        cmp.compare(full_history(), baseline)


def test_permutation_p_is_exact():
    # 5 vs 5 fully separated: only the observed split and its mirror are as extreme, p = 2/252
    assert cmp.permutation_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert cmp.permutation_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)  # why 3 reps can never be significant
    assert cmp.permutation_p([1, 5, 3, 8], [2, 6, 4, 7]) > 0.5
    assert np.isnan(cmp.permutation_p([1.0], [2.0, 3.0]))


# ---- report ----------------------------------------------------------------------------------------------------------
def test_report_renders_every_section(tmp_path):
    records = full_history()
    path = render_report(records, tmp_path, "Synthetic", baseline=OLD)
    text = path.read_text()
    for png in ("throughput", "compute-buffer", "ops", "matmul", "conformance"):
        image = tmp_path / f"report-{png}.png"
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 10_000, png
        assert f"]({image.name})" in text
    # the tables hold the latest figures and their provenance
    slowed = next(r for r in records
                  if r.get("test") == "pp512" and r["backend"] == "opencl" and r["commit"] == NEW)
    assert f" {slowed['avg_ts']:.4g} |" in text
    assert "| regression" in text and "| new failure" in text
    assert "vulkan/ACC (2)" in text and "attn_out" not in text  # latest parity passed
    assert NEW in text and "Test CPU" in text and "dev0" in text


def test_report_without_data_says_so(tmp_path):
    only_ops = [ops(1000.0)]
    text = render_report(only_ops, tmp_path, "Sparse").read_text()
    assert "No throughput records" in text and "No conformance records" in text and "No parity records" in text
    assert "No compute-buffer records" in text
    assert (tmp_path / "report-ops.png").exists() and not (tmp_path / "report-throughput.png").exists()


# ---- command line ----------------------------------------------------------------------------------------------------
def _history_file(tmp_path, records):
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_compare_command_exits_1_on_regression(tmp_path, capsys):
    path = _history_file(tmp_path, full_history())
    assert main(["compare", "--history", path, "--baseline", OLD]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "pp512" in out
    steady = _history_file(tmp_path, [bench(1000.0), bench(1001.0, commit=NEW, time=NEW_TIME)])
    assert main(["compare", "--history", steady, "--baseline", OLD]) == 0


def test_report_command_writes_the_report(tmp_path, capsys):
    path = _history_file(tmp_path, full_history())
    assert main(["report", "--history", path, "-o", str(tmp_path / "out"), "--baseline", "2026-11-20"]) == 0
    assert "## Comparison with the baseline" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("argv,message", [
    (["compare", "--baseline", "2026-01-01"], "no records on or before 2026-01-01"),
    (["compare", "--baseline", OLD, "--threshold", "5"], "threshold and alpha must lie in (0, 1)"),
    (["compare"], "the following arguments are required: --baseline"),
    (["report", "--history", "EMPTY"], "holds no records"),
    (["report", "--history", "MISSING"], "no history at"),
    (["nightly", "--baseline", "zzzz"], "neither a commit prefix"),
    (["nightly", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_input_exits_2(argv, message, tmp_path, monkeypatch, capsys):
    hist = _history_file(tmp_path, full_history())
    monkeypatch.setattr(history, "HISTORY", Path(hist))  # nightly reads (and its steps append to) the default history
    (tmp_path / "empty.jsonl").touch()
    argv = [{"EMPTY": tmp_path / "empty.jsonl", "MISSING": tmp_path / "missing.jsonl"}.get(a, a) for a in argv]
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_nightly_step_outcomes():
    step = reporting.Step("boom", [sys.executable, "-c", "print('about to fail'); raise SystemExit(3)"])
    reporting.run_step(step)
    assert step.failed and step.status == "failed (exit code 3)" and step.tail == ["about to fail"]


def test_nightly_writes_the_report_and_fails_on_a_regression(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(history, "HISTORY", Path(_history_file(tmp_path, full_history())))
    monkeypatch.setattr(history, "commit", lambda: NEW + "-dirty")  # the run appended to the tracked history
    monkeypatch.setattr(reporting, "NIGHTLY_DIR", tmp_path / "nightly")
    monkeypatch.setattr(reporting, "nightly_steps", lambda quick: [
        reporting.Step("fine", [sys.executable, "-c", "print('ok')"]),
        reporting.Step("fine too", [sys.executable, "-c", "print('also ok')"])])
    assert main(["nightly", "--quick"]) == 1  # every step passed, but opencl pp512 regressed
    [md] = (tmp_path / "nightly").glob("*.md")  # <date>.md
    report = md.read_text()
    assert "| fine " in report and "| fine too" in report
    assert "| regression" in report and "Baseline: previous" in report
    assert (md.parent / f"{md.stem}-throughput.png").exists()


# ---- issue 15: lines of the history that are not records -------------------------------------------------------------
MALFORMED = ["42", "null", '{"kind": "bench"}', json.dumps({k: v for k, v in bench(1.0).items() if k != "avg_ts"}),
             json.dumps({**ops(5.0), "us_per_run": "fast"}), '{"kind": "ops", "op": "ADD", "tr']


@pytest.mark.parametrize("argv,code", [
    (["compare", "--baseline", OLD], 1),  # the regression of full_history, found as without the bad lines
    (["report", "--baseline", OLD], 0),
    (["report"], 0),
])
def test_malformed_lines_are_skipped_and_counted(argv, code, tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    good = full_history()
    path.write_text("".join(json.dumps(r) + "\n" for r in good[:5]) + "\n".join(MALFORMED) + "\n"
                    + "".join(json.dumps(r) + "\n" for r in good[5:]))
    if argv[0] == "report":
        argv = argv + ["-o", str(tmp_path / "out")]
    assert main(argv + ["--history", str(path)]) == code
    out, err = capsys.readouterr()
    assert f"skipped 6 malformed lines of {path} (line 6: not a record but int 42; line 7: not a record but " \
           f"NoneType null; line 8: bench record without time; and 3 more)" in err
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps(r) + "\n" for r in good))
    if argv[0] == "compare":  # the same comparison as the clean history's
        assert main(argv + ["--history", str(clean)]) == code
        assert capsys.readouterr().out == out
    else:
        assert "## Throughput" in (tmp_path / "out" / "report.md").read_text()


def test_history_of_only_malformed_lines_holds_no_records(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    path.write_text("42\nnull\n")
    with pytest.raises(SystemExit) as done:
        main(["compare", "--baseline", OLD, "--history", str(path)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "skipped 2 malformed lines" in err and "holds no records" in err


def test_times_in_other_iso_forms_are_read(tmp_path):
    recs = [bench(1000.0, time="2026-11-20T03:00:00Z"), bench(1000.0, commit=NEW, time="2026-11-21T03:00:00.250+00:00")]
    assert list(cmp.compare(recs, OLD).verdict) == ["same"]
    assert "| pp512" in render_report(recs, tmp_path, "Mixed").read_text()
