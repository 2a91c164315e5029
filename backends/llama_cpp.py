"""Run a GGUF in llama.cpp (llama-cpp-python's low-level API): what it computed, for parity checks (llama_cpp_run),
or how fast, as llama-bench measures it (llama_cpp_bench).

llama.cpp aborts the whole process on a failed GGML_ASSERT, so both run it in a child process
(`python -m backends.llama_cpp REQUEST_DIR`: request.json in, a result file out) and turn a crash into a
RuntimeError carrying llama.cpp's stderr.
llama.cpp's own log is dropped below WARN unless KBO_LLAMA_LOG=1, which passes all of it through.
"""
from __future__ import annotations

import ctypes
import fnmatch
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np

from bench import timing

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_ENV = "KBO_LLAMA_LOG"
_GGML_LOG_LEVEL_WARN, _GGML_LOG_LEVEL_CONT = 3, 5  # enum ggml_log_level (ERROR = 4 lies between them)
_SETUP_HINT = "llama-cpp-python is not installed in this environment: run scripts/setup.sh"


def llama_cpp_run(gguf_path, seqs, nodes: list[str] | None = None, ubatch: int = 512, n_threads: int = 2,
                  timeout_s: float = 600) -> dict:
    """Feed sequences to one llama.cpp context and return every logit and, optionally, named graph nodes.

    seqs: [(prompt_tokens, decode_tokens), ...], one entry per sequence. Sequence s runs as llama.cpp
    seq_id s in one context with n_seq_max = len(seqs), so state leaking between sequences would show. Order of the
    llama_decode calls: each sequence's prompt in turn (seq 0's whole prompt, then seq 1's, ...), split into calls
    of at most `ubatch` tokens; then decode step j feeds decode_tokens[j] of every sequence that has one, one call per
    sequence (seq 0 first). Every call holds tokens of ONE sequence and at most `ubatch` of them, so it is ONE
    ubatch (n_ubatch = ubatch), hence one graph evaluation. Positions count from 0 per sequence. CPU only, n_threads
    threads, KV cache in F32 (llama.cpp's default is F16), flash attention off (F32 attention throughout).

    nodes: fnmatch patterns of llama.cpp callback names ("<name>-<layer>", e.g. "attn_norm-0", "kda_g1-*",
    "l_out-3", "result_output", or "*" for all); None captures nothing (faster).

    Returns
      "logits": [float64 array [len(prompt) + len(decode), n_vocab] per sequence]: row i is the logits llama.cpp
                computed at the sequence's i-th token (prompt tokens, then decode tokens), i.e. its prediction of
                token i+1.
      "calls":  [(seq_index, first_position, n_tokens) per llama_decode call, in call order]
      "nodes":  {(seq_index, call_index): {name: float64 array}} where call_index counts that sequence's calls from 0
                (prompt chunks first, then decode steps). Arrays are in numpy layout, shape = reversed ggml ne,
                all 4 dims (as reference.tensor's Tensor.shape): "attn_norm-0" of a 7-token call has ne
                [d_model, 7, 1, 1] and shape (1, 1, 7, d_model). Non-contiguous nodes (views, permutes) are read
                through their ggml strides, so the array is the logical tensor. A name evaluated twice within one
                call keeps both: "name", "name#1", ...
    Raises ValueError on bad input before anything runs, RuntimeError when llama.cpp fails (with its stderr).
    """
    path = _gguf_file(gguf_path)
    if not seqs:
        raise ValueError("no sequences given")
    if ubatch < 1 or n_threads < 1:
        raise ValueError(f"ubatch and n_threads must be >= 1, got {ubatch} and {n_threads}")
    fields = gguf.GGUFReader(path).fields
    n_vocab = fields[f"{fields['general.architecture'].contents()}.vocab_size"].contents()
    request_seqs = []
    for s, seq in enumerate(seqs):
        if len(seq) != 2:
            raise ValueError(f"sequence {s}: expected (prompt_tokens, decode_tokens), got {seq!r}")
        prompt, decode = ([int(t) for t in part] for part in seq)
        if not prompt:
            raise ValueError(f"sequence {s}: the prompt is empty")
        bad = [t for t in prompt + decode if not 0 <= t < n_vocab]
        if bad:
            raise ValueError(f"sequence {s}: token(s) {bad[:5]} outside the vocabulary 0..{n_vocab - 1}")
        request_seqs.append([prompt, decode])
    request = {"mode": "parity", "seqs": request_seqs, "nodes": nodes, "ubatch": ubatch, "n_threads": n_threads}
    return _in_child(path, request, timeout_s, lambda out: _load_result(out / "result.npz", len(request_seqs)))


def llama_cpp_bench(gguf_path, tests: list[tuple[str, int]], depth: int, n_batch: int, n_ubatch: int, reps: int,
                    n_threads: int = 2, flash_attn: bool = True, seed: int = 0, timeout_s: float = 3600) -> list[dict]:
    """llama-bench's pp/tg tests on llama.cpp's CPU backend, as the anchor our backends' t/s are compared with.

    tests: [("pp" | "tg", n_tokens), ...]. One context for all of them: n_ctx = depth + the longest test, padded to
    256; n_batch as given, n_ubatch clamped to it; KV cache F32; n_threads threads; flash attention on unless
    `flash_attn` is False. Each test as llama-bench runs it: one warm-up, then `reps` timed repetitions; before
    each (the warm-up too), untimed, the memory is cleared and the depth context put in: `depth` random tokens
    decoded in batches of n_batch the first time, then the sequence state saved after that restored (as llama-bench
    does since ggml-org/llama.cpp#16944, and as our runner restores its depth snapshot); timed, ppN decodes N random
    tokens in batches of n_batch (logits of the last token only), tgN decodes N tokens one at a time, and the clock
    stops after llama_synchronize. Token ids are random in [0, n_vocab), drawn from numpy's generator seeded with
    `seed`.

    Returns per test {"samples_ts": t/s per repetition, "avg_ts", "stddev_ts" (timing.mean_std), "system_info":
    llama.cpp's llama_print_system_info}. Raises ValueError on bad input before anything runs, RuntimeError when
    llama.cpp fails (with its stderr).
    """
    path = _gguf_file(gguf_path)
    tests = [(kind, int(n)) for kind, n in tests]
    if not tests or any(kind not in ("pp", "tg") or n < 1 for kind, n in tests):
        raise ValueError(f"tests must be a non-empty list of ('pp' | 'tg', n_tokens >= 1), got {tests!r}")
    if depth < 0 or min(n_batch, n_ubatch, reps, n_threads) < 1:
        raise ValueError(f"depth must be >= 0 and n_batch, n_ubatch, reps, n_threads >= 1, got {depth}, {n_batch}, "
                         f"{n_ubatch}, {reps}, {n_threads}")
    request = {"mode": "bench", "tests": tests, "depth": depth, "n_batch": n_batch,
               "n_ubatch": min(n_batch, n_ubatch), "reps": reps, "n_threads": n_threads, "flash_attn": flash_attn,
               "seed": seed}
    result = _in_child(path, request, timeout_s, lambda out: json.loads((out / "result.json").read_text()))
    records = []
    for (_, n), seconds in zip(tests, result["seconds"]):
        ts = [n / s for s in seconds]
        avg_ts, stddev_ts = timing.mean_std(ts)
        records.append({"samples_ts": ts, "avg_ts": avg_ts, "stddev_ts": stddev_ts,
                        "system_info": result["system_info"]})
    return records


def _gguf_file(gguf_path) -> Path:
    """The GGUF to load, refused before a child starts when it or llama-cpp-python is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError(_SETUP_HINT)
    path = Path(gguf_path)
    if not path.is_file():
        raise ValueError(f"GGUF file {path} does not exist")
    return path


def _in_child(path: Path, request: dict, timeout_s: float, load):
    """Runs `request` on `path` in a child process and returns load(its directory) once it wrote its result; a crash
    or a timeout is a RuntimeError with llama.cpp's stderr."""
    with tempfile.TemporaryDirectory(prefix="kbo-llama-") as tmp:
        Path(tmp, "request.json").write_text(json.dumps({**request, "gguf": str(path.resolve())}))
        verbose = os.environ.get(LOG_ENV) == "1"
        try:
            # A failed GGML_ASSERT prints its message, then a gdb backtrace unless GGML_NO_BACKTRACE is set.
            env = os.environ if verbose else {**os.environ, "GGML_NO_BACKTRACE": "1"}
            proc = subprocess.run([sys.executable, "-m", "backends.llama_cpp", tmp], cwd=REPO_ROOT, env=env,
                                  timeout=timeout_s, stdout=subprocess.PIPE,
                                  stderr=None if verbose else subprocess.PIPE, text=True)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"llama.cpp on {path} did not finish within {timeout_s} s") from e
        if proc.returncode != 0:
            tail = (proc.stderr or "")[-4000:] if not verbose else "(see stderr above)"
            raise RuntimeError(f"llama.cpp on {path} failed (exit status {proc.returncode}):\n{tail}")
        return load(Path(tmp))


def _load_result(path: Path, n_seqs: int) -> dict:
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        logits = [z[f"logits/{s}"].astype(np.float64) for s in range(n_seqs)]
        nodes = {}
        for key, (s, c, name) in meta["nodes"].items():
            nodes.setdefault((s, c), {})[name] = z[key].astype(np.float64)
    return {"logits": logits, "calls": [tuple(c) for c in meta["calls"]], "nodes": nodes}


# ---- the child process: everything below talks to llama.cpp ----

class _GgmlTensor(ctypes.Structure):
    """struct ggml_tensor of ggml/include/ggml.h (GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64, GGML_MAX_SRC 10,
    GGML_MAX_NAME 64); the name is checked against ggml_get_name for every node read, so a layout change fails."""
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
                ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


class _NodeReader:
    """The eval callback: asks for the nodes whose names match the patterns and copies them out after evaluation."""

    def __init__(self, lib_llama, patterns: list[str]):
        import llama_cpp

        self.patterns = patterns
        self.call: tuple[int, int] = (0, 0)
        self.captured: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self.error: str | None = None
        self.dtypes = {llama_cpp.GGML_TYPE_F32: np.float32, llama_cpp.GGML_TYPE_F16: np.float16,
                       llama_cpp.GGML_TYPE_I32: np.int32}
        base = ctypes.CDLL(str(_lib_dir(lib_llama) / "libggml-base.so"))
        self.get_name = base.ggml_get_name
        self.get_name.restype, self.get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        self.nbytes = base.ggml_nbytes
        self.nbytes.restype, self.nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        self.tensor_get = base.ggml_backend_tensor_get
        self.tensor_get.restype = None
        self.tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)  # kept alive by self

    def _on_node(self, t, ask, _user_data) -> bool:
        try:
            name = self.get_name(t).decode()
            if ask:
                return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
            self._read(t, name)
        except Exception as e:  # an exception must not cross into C: report it after llama_decode returns
            self.error = self.error or f"reading node: {type(e).__name__}: {e}"
        return True  # False would stop the graph evaluation

    def _read(self, t, name: str) -> None:
        st = _GgmlTensor.from_address(t)
        if st.name.decode() != name:
            raise RuntimeError(f"struct ggml_tensor layout mismatch (name {st.name!r} vs {name!r})")
        if st.type not in self.dtypes:
            raise ValueError(f"node {name} has ggml type {st.type}, which is not read (F32, F16, I32 are)")
        raw = np.empty(self.nbytes(t), np.uint8)
        self.tensor_get(t, raw.ctypes.data, 0, raw.nbytes)
        arr = np.ndarray(shape=tuple(reversed(st.ne)), dtype=self.dtypes[st.type], buffer=raw,
                         strides=tuple(reversed(st.nb)))
        nodes = self.captured.setdefault(self.call, {})
        key, i = name, 0
        while key in nodes:
            i += 1
            key = f"{name}#{i}"
        nodes[key] = arr.copy()


def _lib_dir(lib_llama) -> Path:
    return Path(lib_llama._name).parent


def _child(request_dir: Path) -> None:
    """The child's side: load the model with llama.cpp's log filtered, run the request's mode, write its result."""
    try:
        import llama_cpp
    except ImportError as e:
        raise SystemExit(f"{_SETUP_HINT} ({e})")

    req = json.loads(Path(request_dir, "request.json").read_text())
    verbose = os.environ.get(LOG_ENV) == "1"
    shown_level = [0]  # a CONT message continues the previous one at its level

    @llama_cpp.llama_log_callback
    def log(level, text, _user_data):
        if level != _GGML_LOG_LEVEL_CONT:
            shown_level[0] = level
        if verbose or shown_level[0] >= _GGML_LOG_LEVEL_WARN:
            sys.stderr.write(text.decode(errors="replace"))

    llama_cpp.llama_log_set(log, None)
    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(req["gguf"].encode(), mparams)
    if not model:
        raise SystemExit(f"llama.cpp could not load {req['gguf']}")
    {"parity": _parity, "bench": _bench}[req["mode"]](llama_cpp, model, req, Path(request_dir))
    llama_cpp.llama_model_free(model)


def _padded(n_tokens: int) -> int:
    """n_tokens rounded up to a multiple of 256, as llama.cpp pads its KV cache."""
    return -(-n_tokens // 256) * 256


def _context(llama_cpp, model, req: dict, n_ctx: int, n_batch: int, n_ubatch: int, flash_attn: bool,
             n_seq_max: int = 1, cb_eval=None):
    """A CPU context with an F32 KV cache and the request's n_threads."""
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = n_ctx, n_batch, n_ubatch, n_seq_max
    cparams.n_threads = cparams.n_threads_batch = req["n_threads"]
    cparams.type_k = cparams.type_v = llama_cpp.GGML_TYPE_F32
    cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                               else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    if cb_eval is not None:
        cparams.cb_eval = cb_eval
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise SystemExit("llama.cpp could not create a context")
    return ctx


def _parity(llama_cpp, model, req: dict, out_dir: Path) -> None:
    """llama_cpp_run's calls; writes result.npz (logits, calls, captured nodes)."""
    seqs, ubatch, patterns = req["seqs"], req["ubatch"], req["nodes"]
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    reader = _NodeReader(llama_cpp.llama_cpp._lib, patterns) if patterns else None
    longest = max(len(p) + len(d) for p, d in seqs)
    # Without a unified KV cache each sequence gets n_ctx / n_seq_max cells. llama.cpp reserves an output row per
    # sequence (asserts n_batch >= n_seq_max). Plain attention (mul_mat + soft_max) in F32: the CPU flash-attention
    # path rounds the MLA output to ~1e-3 relative (NMSE 2e-6 on tiny), which would hide a real difference of that
    # size.
    ctx = _context(llama_cpp, model, req, len(seqs) * _padded(longest), max(ubatch, len(seqs)), ubatch,
                   flash_attn=False, n_seq_max=len(seqs), cb_eval=reader.callback if reader else None)

    batch = llama_cpp.llama_batch_init(ubatch, 0, 1)
    logits = [[] for _ in seqs]
    calls, n_calls, pos = [], [0] * len(seqs), [0] * len(seqs)

    def decode(s: int, tokens: list[int]) -> None:
        for i, tok in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, pos[s] + i, 1, 1
            batch.seq_id[i][0] = s
        batch.n_tokens = len(tokens)
        if reader:
            reader.call = (s, n_calls[s])
        rc = llama_cpp.llama_decode(ctx, batch)
        if rc != 0:
            raise SystemExit(f"llama_decode returned {rc} for sequence {s} at position {pos[s]}")
        if reader and reader.error:
            raise SystemExit(reader.error)
        for i in range(len(tokens)):
            row = llama_cpp.llama_get_logits_ith(ctx, i)
            logits[s].append(np.ctypeslib.as_array(row, shape=(n_vocab,)).copy())
        calls.append((s, pos[s], len(tokens)))
        n_calls[s] += 1
        pos[s] += len(tokens)

    for s, (prompt, _) in enumerate(seqs):
        for start in range(0, len(prompt), ubatch):
            decode(s, prompt[start:start + ubatch])
    for step in range(max(len(d) for _, d in seqs)):
        for s, (_, dec) in enumerate(seqs):
            if step < len(dec):
                decode(s, [dec[step]])

    arrays = {f"logits/{s}": np.stack(rows) for s, rows in enumerate(logits)}
    node_meta = {}
    for (s, c), named in (reader.captured.items() if reader else ()):
        for name, arr in named.items():
            key = f"node/{len(node_meta)}"
            arrays[key], node_meta[key] = arr, (s, c, name)
    meta = json.dumps({"calls": calls, "nodes": node_meta})
    np.savez(out_dir / "result.npz", meta=np.array(meta), **arrays)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)


def _bench(llama_cpp, model, req: dict, out_dir: Path) -> None:
    """llama_cpp_bench's tests (llama-bench's test_prompt and test_gen); writes result.json: seconds per repetition
    of each test, and llama.cpp's system info."""
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    n_batch, depth = req["n_batch"], req["depth"]
    ctx = _context(llama_cpp, model, req, _padded(depth + max(n for _, n in req["tests"])), n_batch,
                   req["n_ubatch"], req["flash_attn"])
    memory = llama_cpp.llama_get_memory(ctx)
    rng = np.random.default_rng(req["seed"])
    context = rng.integers(0, n_vocab, depth)
    tokens = (llama_cpp.llama_token * n_batch)()

    def decode(ids: np.ndarray) -> None:
        """ids in batches of n_batch; llama_batch_get_one lets the memory place them and asks for the last logits."""
        for start in range(0, len(ids), n_batch):
            chunk = ids[start:start + n_batch].tolist()
            tokens[:len(chunk)] = chunk
            rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, len(chunk)))
            if rc != 0:
                raise SystemExit(f"llama_decode returned {rc} on a batch of {len(chunk)} tokens")

    saved = []  # the state after the depth context, as llama-bench keeps it (its ctx_state)

    def fresh_context() -> None:
        llama_cpp.llama_memory_clear(memory, False)
        if saved:
            if not llama_cpp.llama_state_seq_set_data(ctx, saved[0], len(saved[0]), 0):
                raise SystemExit("llama_state_seq_set_data could not restore the depth context")
        elif depth:
            decode(context)
            state = (ctypes.c_uint8 * llama_cpp.llama_state_seq_get_size(ctx, 0))()
            llama_cpp.llama_state_seq_get_data(ctx, state, len(state), 0)
            saved.append(state)

    def one_run(kind: str, work: np.ndarray) -> None:
        if kind == "pp":
            decode(work)
        else:
            for i in range(len(work)):
                decode(work[i:i + 1])

    seconds = [timing.measure(functools.partial(one_run, kind, rng.integers(0, n_vocab, n)),
                              lambda: llama_cpp.llama_synchronize(ctx), req["reps"], before=fresh_context)
               for kind, n in req["tests"]]
    system_info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    (out_dir / "result.json").write_text(json.dumps({"seconds": seconds, "system_info": system_info}))
    llama_cpp.llama_free(ctx)


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
