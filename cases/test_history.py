"""The history survives a torn write and concurrent appenders."""
import json
import multiprocessing as mp

from reports import history


def test_append_and_load(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append([{"kind": "ops", "x": 1}, {"kind": "copy", "x": 2}], path)
    recs = history.load(path)
    assert [r["x"] for r in recs] == [1, 2]
    assert {"time", "machine", "commit"} <= set(recs[0])
    assert [r["x"] for r in history.load(path, kind="copy")] == [2]


def test_torn_line_is_skipped_and_not_glued(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append([{"kind": "ops", "x": 1}], path)
    with open(path, "ab") as f:  # a crash mid-write
        f.write(b'{"kind": "ops", "x": 2, "trunc')
    history.append([{"kind": "ops", "x": 3}], path)
    assert [r["x"] for r in history.load(path)] == [1, 3]


def _writer(path, i):
    history.append([{"kind": "ops", "writer": i, "n": n} for n in range(50)], path)


def test_concurrent_appends_do_not_interleave(tmp_path):
    path = tmp_path / "h.jsonl"
    procs = [mp.Process(target=_writer, args=(path, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 200 and all(json.loads(line) for line in lines)
