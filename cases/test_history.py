"""The history survives a torn write and concurrent appenders, and reading it skips (and reports) every line that
is not a usable record."""
import json
import multiprocessing as mp

import pytest

from reports import history


def op(x, **extra):
    """An "ops" record as `python -m bench ops` appends it (before `append` stamps time, machine and commit)."""
    return {"kind": "ops", "backend": "numpy", "op": "ADD", "case": "ADD(small)", "supported": True,
            "us_per_run": 10.0 + x, "frac_copy": 0.5, "x": x, **extra}


def copy(x):
    return {"kind": "copy", "backend": "numpy", "gb_s": 20.0, "x": x}


def test_append_and_load(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append([op(1), copy(2)], path)
    recs = history.load(path)
    assert [r["x"] for r in recs] == [1, 2]
    assert {"time", "machine", "commit"} <= set(recs[0])
    assert [r["x"] for r in history.load(path, kind="copy")] == [2]


def test_torn_line_is_skipped_and_not_glued(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append([op(1)], path)
    with open(path, "ab") as f:  # a crash mid-write
        f.write(b'{"kind": "ops", "x": 2, "trunc')
    history.append([op(3)], path)
    assert [r["x"] for r in history.load(path)] == [1, 3]


def _writer(path, i):
    history.append([op(n, writer=i) for n in range(50)], path)


def test_concurrent_appends_do_not_interleave(tmp_path):
    path = tmp_path / "h.jsonl"
    procs = [mp.Process(target=_writer, args=(path, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 200 and all(json.loads(line) for line in lines)


def test_lines_that_are_not_records_are_skipped_and_counted(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append([op(1)], path)
    good = history.load(path)[0]
    unsupported = {**good, "x": 2, "supported": False, "reason": "no kernel"}
    del unsupported["us_per_run"], unsupported["frac_copy"]  # a refusal carries no figures, and needs none
    bench_missing_figure = {"kind": "bench", "time": good["time"], "commit": "abc", "test": "pp512", "backend": "numpy",
                            "model": "tiny", "variant": "chunk16", "form": "absorbed", "n_batch": 2048,
                            "n_ubatch": 512, "n_depth": 0, "stddev_ts": 1.0}
    lines = ["42", "null", '{"kind":"bench"}', json.dumps(bench_missing_figure), "[1, 2]", '"text"',
             json.dumps({**good, "us_per_run": "fast"}), json.dumps({**good, "us_per_run": 0}),
             json.dumps({**good, "time": "yesterday"}), json.dumps({**good, "supported": "yes"}),
             json.dumps({k: v for k, v in good.items() if k != "commit"}), "", json.dumps(unsupported),
             '{"kind": "ops", "x": 3, "trunc']
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
    skipped = []
    recs = history.load(path, skipped=skipped)
    assert [r["x"] for r in recs] == [1, 2]
    assert [n for n, _ in skipped] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15]  # line 13 is blank
    why = dict(skipped)
    assert why[2] == "not a record but int 42" and why[3] == "not a record but NoneType null"
    assert why[4] == "bench record without time" and why[5] == "bench record without avg_ts"
    assert why[8] == 'ops record: us_per_run is "fast"' and why[9] == "ops record: us_per_run is 0"
    assert "not an ISO date" in why[10] and "supported is 'yes'" in why[11]
    assert why[12] == "ops record without commit" and why[15] == "not JSON (a torn write?)"


@pytest.mark.parametrize("kind", ["under a file", "a directory"])
def test_writable_says_why_not(kind, tmp_path):
    assert history.writable(tmp_path / "new" / "h.jsonl") is None  # created with its folder, as append would
    assert (tmp_path / "new" / "h.jsonl").exists()
    if kind == "under a file":
        (tmp_path / "f").write_text("")
        path = tmp_path / "f" / "h.jsonl"
    else:
        path = tmp_path / "d"
        path.mkdir()
    assert history.writable(path).startswith(f"cannot append to the history {path}: ")


def _append_forever(path):
    for n in range(10**9):
        history.append([op(n, writer="killed"), copy(n)], path)


def test_kill_9_mid_appends_leaves_every_line_whole(tmp_path):
    import os
    import signal
    import time

    path = tmp_path / "h.jsonl"
    child = mp.Process(target=_append_forever, args=(path,))
    child.start()
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing assert
    while (not path.exists() or path.read_bytes().count(b"\n") < 40) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    skipped = []
    recs = history.load(path, skipped=skipped)
    lines = path.read_text().count("\n") + (not path.read_text().endswith("\n"))
    # One write() per append: at worst (a kill inside a write that crosses a page) the last line is torn.
    assert len(recs) >= 40 and skipped in ([], [(lines, "not JSON (a torn write?)")])
    history.append([op(-1)], path)
    assert history.load(path)[-1]["x"] == -1 and len(history.load(path)) == len(recs) + 1


# ---- issue 14: run ids and where the history lives -------------------------------------------------------------------
def test_records_carry_the_run_id_of_kbo_run_id_or_of_their_process(tmp_path, monkeypatch):
    path = tmp_path / "h.jsonl"
    monkeypatch.setenv("KBO_RUN_ID", "nightly-7")
    history.append([op(1)], path)
    monkeypatch.delenv("KBO_RUN_ID")
    history.append([op(2)], path)
    history.append([op(3)], path)
    history.append([op(4, run_id="given")], path)  # a record that has one keeps it
    ids = [r["run_id"] for r in history.load(path)]
    assert ids[0] == "nightly-7" and ids[1] == ids[2] == history.run_id() != "nightly-7" and ids[3] == "given"


def test_a_run_id_that_is_not_text_is_skipped(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append([op(1, run_id=7)], path)
    skipped = []
    assert history.load(path, skipped=skipped) == [] and skipped == [(1, "ops record: run_id is 7")]


def test_the_default_history_lives_in_the_user_data_folder_not_the_repository(tmp_path, monkeypatch):
    from pathlib import Path

    repo = Path(history.__file__).resolve().parent.parent
    monkeypatch.delenv("KBO_HISTORY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert history.default_path() == tmp_path / "data" / "kimi-backend-ops" / "history.jsonl"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = history.default_path()
    assert default == tmp_path / "home" / ".local" / "share" / "kimi-backend-ops" / "history.jsonl"
    assert repo not in default.parents
    monkeypatch.setenv("KBO_HISTORY", str(tmp_path / "mine.jsonl"))
    assert history.default_path() == tmp_path / "mine.jsonl"


def test_appends_and_loads_follow_history_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "HISTORY", tmp_path / "patched.jsonl")
    assert history.writable() is None
    history.append([op(1)])
    assert [r["x"] for r in history.load()] == [1] and (tmp_path / "patched.jsonl").exists()
