"""Vulkan backend through kp (vulkan-kompute 0.9.0); on CI it runs on Mesa's lavapipe (CPU driver).

Kernels are GLSL compute shaders beside this file, one per op family, sharing common.glsl (parameter block, bindings,
indexing, exact f16 conversion) and quants.glsl (ggml's quantized blocks, read in place and dequantized in registers by
MUL_MAT, MUL_MAT_ID and GET_ROWS; one type per compile, Q_<TYPE>). An op runs its family's file with the #defines
KERNELS below gives it. Every kernel binds (params, dst, src0, src1, ...): the parameter block of backends/base.py
sits in a small uint32 kp tensor; a one-source op gets src0 again as src1, GATED_DELTA_NET binds its six sources at
2..7.

A compiled graph (reference/plan.py) replays as ONE recorded kp sequence (VulkanReplay): kp's OpAlgoDispatch only
orders transfers before shaders, so the sequence records kp.OpMemoryBarrier (added to kp's binding by
scripts/patches/kp-0.9.0.patch) wherever a dispatch depends on an earlier one. A single node (prepare, compute) runs
as its own one-dispatch sequence.

SPIR-V comes from `glslc --target-env=vulkan1.1 -O`, compiled lazily once per (file, defines) and cached in memory
and on disk (keyed by sources, includes, compiler version, flags and defines; written atomically because pytest-xdist
workers compile concurrently).

What shapes the kernels (Mesa 22.3 lavapipe, measured): a buffer load inside any branch or loop, or at a per-lane
index, runs lane by lane (~7 ns per 32-bit component, stores are far cheaper), and both sides of a branch run,
masked. So fast paths are compile-time specialisations picked here from the layout (VEC4 = 16-byte accesses), parameters
are read once at the top of each kernel, and a read+write kernel tops out near 1 GB/s against ~7 GB/s for the
driver's buffer copy. Compute kernels (MUL_MAT, GATED_DELTA_NET, SOLVE_TRI) load a value once per subgroup and hand
it to the other lanes with subgroupBroadcast, and keep big per-thread tiles: spilled registers are far cheaper than
lane-by-lane loads.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from reference.node import Node
from reference.ops import REGISTRY
from reference.tensor import Buffer, DType

from ..base import TENSOR_WORDS, Backend, Replay, active_mutant, kernel_text, param_block

HERE = Path(__file__).resolve().parent
GLSLC_FLAGS = ["--target-env=vulkan1.1", "-O"]

# op -> #defines; the kernel file is the op's family (backends/vulkan/<family>.comp). kernel_for() adds the type and
# layout defines: SRC_F16/DST_F16, VEC4 / DST_VEC4 (contiguous 4-aligned operands), XCACHE/SHARE_A (SOLVE_TRI), DCONV
# (SSM_CONV), ROWCACHE (norms, softmax), IN_PLACE_BLOCK (ACC/SET in place), A_F16/SHARE (MUL_MAT), SDIM/KDA
# (GATED_DELTA_NET).
KERNELS = {
    "ACC": ("OP_ACC",),
    "SET": ("OP_SET",),
    "CUMSUM": (),
    "TRI": ("OP_TRI",),
    "FILL": ("OP_FILL",),
    "DIAG": ("OP_DIAG",),
    "SOLVE_TRI": (),
    "SSM_CONV": (),
    "L2_NORM": ("OP_L2_NORM",),
    "RMS_NORM": ("OP_RMS_NORM",),
    "SOFTPLUS": ("OP_SOFTPLUS",),
    "SIGMOID": ("OP_SIGMOID",),
    "SILU": ("OP_SILU",),
    "EXP": ("OP_EXP",),
    "NEG": ("OP_NEG",),
    "SCALE": ("OP_SCALE",),
    "ADD": ("OP_ADD",),
    "SUB": ("OP_SUB",),
    "MUL": ("OP_MUL",),
    "DIV": ("OP_DIV",),
    "CPY": (),  # + SRC_F16 / DST_F16 from the types, Q_<TYPE> for a quantized dst
    "CONT": (),
    "MUL_MAT": (),  # + A_F16 for an f16 a, Q_<TYPE> with QMV/QTILE for a quantized a
    "REPEAT": ("OP_REPEAT",),
    "PAD": ("OP_PAD",),
    "GATED_DELTA_NET": (),  # + SDIM=S, WG (S/4 threads, whole 8s), KDA (per-key gates)
    "MUL_MAT_ID": ("OP_MUL_MAT_ID",),  # + A_F16 for f16 experts
    "GET_ROWS": (),  # + SRC_F16 for an f16 a, Q_<TYPE> for a quantized a
    "ARGSORT": ("OP_ARGSORT",),
    "TOP_K": ("OP_TOP_K",),
    "SOFT_MAX_EXT": (),
    "CONCAT": ("OP_CONCAT",),
    "SUM_ROWS": ("OP_SUM_ROWS",),
    "CLAMP": ("OP_CLAMP",),
}
assert set(KERNELS) == set(REGISTRY), f"Vulkan kernels missing for {sorted(set(REGISTRY) - set(KERNELS))}"

# Threads per workgroup and elements per thread, as the shaders define them (common.glsl defaults WG 256, PER 4;
# a VEC4 thread moves one uvec4, i.e. 4 elements too).
ELEMENTWISE = (256, 4)
# MUL_MAT SHARE tile per subgroup: (blocks of 8 rows of a, columns of b per lane) = 32 x 64 outputs, 256 accumulators
# a lane (measured on the 1024x1024x512 bench case: (1,4) 660 ms, (2,8) 420, (4,4) 360, (4,16) 320, (4,8) 270 CPU-ms).
MM_TILE = (4, 8)
# SHARE computes 8 * MT columns of b per subgroup: with fewer, most lanes load clamped copies of the same column, and
# the plain 4x4 VEC4 path loads less (measured on tg's attention scores, 8448 keys x 4 heads: see kernel_words).
MM_SHARE_MIN_M = 32
MMID_COLS = 8  # MUL_MAT_ID BY_EXPERT: columns of one expert per batch
ROW_KERNEL_WG = 64  # cumsum, norm, softmax, sort (a subgroup per row), solve_tri.comp (a thread per 4 columns)
# sort.comp holds SORT_PASS elements of a row in a subgroup's registers at a time (CHUNK = SORT_PASS / subgroup per
# lane, at least 4): rows that fit sort there (bitonic network), longer ones by rank counting in strips of SORT_PASS.
# Its loops are unrolled, so this sets the shader's size whatever the subgroup: lavapipe (8 lanes) gets CHUNK 32; on
# an NVIDIA H200 (32 lanes) CHUNK 32 made 1024-element networks whose pipelines took tens of seconds to build, and the
# rank-counting ones timed out (device check, 2026-11-30).
SORT_PASS = 256
MAX_GROUPS_X = 65535
LOOP_LIMIT = 65535 - 1000  # llvmpipe ends an invocation's loops after 65535 iterations in all (sort.comp: keep below)
MAX_BINDING_BYTES = 128 << 20  # lavapipe's maxStorageBufferRange: a larger buffer cannot be bound whole
MAX_ALLOC_BYTES = 2 << 30  # larger allocations abort the process inside kp
# Quantized types (quants.glsl: Q_<TYPE>): what MUL_MAT/MUL_MAT_ID/GET_ROWS read as a, and what CPY writes.
QUANT_READ = {DType.Q8_0, DType.Q4_0, DType.Q4_1, DType.Q5_0, DType.Q5_1, DType.Q2_K, DType.Q3_K, DType.Q4_K,
              DType.Q5_K, DType.Q6_K}
QUANT_WRITE = {DType.Q8_0, DType.Q4_0}
QMV_MAX_M = 4  # quantized MUL_MAT: up to this many columns per matrix the mat-vec path (QMV), more the QTILE path
QMV_ROWS, QTILE_ROWS, QTILE_COLS = 8, 4, 8  # as matmul.comp defines QR/QC for QMV and QTILE


# ---- SPIR-V compilation -----------------------------------------------------------------------------------------
def _cache_dir() -> Path:
    root = os.environ.get("KBO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kimi-backend-ops")
    return Path(root) / "spirv"


@functools.lru_cache(maxsize=None)
def _glslc_version() -> str:
    return subprocess.run(["glslc", "--version"], capture_output=True, text=True, check=True).stdout


def _sources(name: str) -> str:
    """The file's text (as kernel_text gives it) followed by every file it includes (recursively), for the cache key."""
    text = kernel_text("vulkan", HERE / name)
    parts = [text]
    for inc in re.findall(r'^\s*#include\s+"([^"]+)"', text, flags=re.M):
        parts.append(_sources(inc))
    return "\n".join(parts)


@functools.lru_cache(maxsize=None)
def _source_dir() -> Path:
    """Where glslc reads the kernels: this folder, or with a Vulkan mutant active (KBO_MUTANT) a copy of its sources
    with the mutant's edit made (kernel_text), so the files themselves never change."""
    active = active_mutant()
    if active is None or active[1].backend != "vulkan":
        return HERE
    tree = Path(tempfile.mkdtemp(prefix="kbo-mutant-"))
    atexit.register(shutil.rmtree, tree, ignore_errors=True)
    for path in [*HERE.glob("*.comp"), *HERE.glob("*.glsl")]:
        (tree / path.name).write_text(kernel_text("vulkan", path))
    return tree


@functools.lru_cache(maxsize=None)
def spirv(name: str, defines: tuple[str, ...]) -> bytes:
    """SPIR-V of kernel file `name` compiled with `defines`, from the disk cache when it is there."""
    flags = GLSLC_FLAGS + [f"-D{d}" for d in defines]
    key = hashlib.sha256("\0".join([_sources(name), _glslc_version(), *flags]).encode()).hexdigest()[:32]
    cache = _cache_dir() / f"{Path(name).stem}-{key}.spv"
    if cache.exists():
        return cache.read_bytes()
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
    os.close(fd)
    try:
        done = subprocess.run(["glslc", *flags, str(_source_dir() / name), "-o", tmp], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"glslc failed on {name} {defines}:\n{done.stderr}")
        code = Path(tmp).read_bytes()
        os.replace(tmp, cache)  # atomic: concurrent workers never see a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return code


def _elems(t, nb_bytes: int) -> int:
    return nb_bytes // t.dtype.size


def _vec4_ok(node: Node) -> bool:
    """Whether the kernel may take its VEC4 path: 16-byte accesses over operands laid out as it needs."""
    op, dst, srcs = node.op.name, node.dst, node.srcs
    if op in ("CUMSUM", "L2_NORM", "RMS_NORM", "SUM_ROWS", "SOFT_MAX_EXT"):  # rows contiguous and 4-aligned
        rows = {"SUM_ROWS": srcs[:1], "SOFT_MAX_EXT": [dst, *srcs]}.get(op, [dst, srcs[0]])
        return all(_elems(t, t.nb[0]) == 1 and all(_elems(t, b) % 4 == 0 for b in t.nb[1:])
                   and _elems(t, t.offset) % 4 == 0 for t in rows)
    if op in ("MUL_MAT", "MUL_MAT_ID"):  # rows of a and b contiguous along K, every row start 4-aligned
        return all(t.nb[0] == t.dtype.size and all(_elems(t, b) % 4 == 0 for b in t.nb[1:])
                   and _elems(t, t.offset) % 4 == 0 and t.ne[0] % 4 == 0 for t in srcs[:2])
    if op == "GET_ROWS":  # dst contiguous; a f32 with rows contiguous, row length and starts multiples of 4
        a = srcs[0]
        return dst.is_contiguous() and _elems(dst, dst.offset) % 4 == 0 and a.dtype == DType.F32 \
            and a.nb[0] == 4 and a.ne[0] % 4 == 0 and all(_elems(a, b) % 4 == 0 for b in (a.offset, *a.nb[1:]))
    if op in ("ARGSORT", "TOP_K"):  # sort.comp has no VEC4 path
        return False
    if op == "CONCAT" and (node.params["dim"] == 0 or dst.ne[0] % 4):  # 4 dst elements must share a source
        return False
    flat = {"FILL": [dst], "DIAG": [dst], "ACC": [dst, srcs[0]], "SET": [dst, srcs[0]]}.get(op, [dst, *srcs])
    if op in ("ADD", "SUB", "MUL", "DIV") and srcs[1].ne != srcs[0].ne:
        return False
    return all(t.is_contiguous() and _elems(t, t.offset) % 4 == 0 for t in flat)


def _sort_chunk() -> int:
    """sort.comp's CHUNK: the elements a lane holds per pass."""
    return max(4, SORT_PASS // subgroup_size())


def _sort_per_lane(node: Node) -> int:
    """sort.comp: a row's elements per lane of a subgroup, rounded up to a power of two."""
    return 1 << (-(-node.srcs[0].ne[0] // subgroup_size()) - 1).bit_length()


def _sort_loop_iterations(node: Node) -> int:
    """sort.comp's rank counting: its loop iterations per lane (strips times blocks of subgroup * 4)."""
    n, sg = node.srcs[0].ne[0], subgroup_size()
    return -(-n // (sg * _sort_chunk())) * -(-n // (sg * 4))


def kernel_for(node: Node) -> tuple[str, tuple[str, ...]]:
    """The kernel file and #defines for this node (op, types, layout fast paths)."""
    op = node.op.name
    name, defines = f"{node.op.family}.comp", KERNELS[op]
    quant = _quant_type(node)
    if quant is not None:
        return name, defines + (f"Q_{quant.name}",) + _quant_path(node)
    if op in ("CPY", "CONT"):
        defines += (("SRC_F16",) if node.srcs[0].dtype == DType.F16 else ()) \
                   + (("DST_F16",) if node.dst.dtype == DType.F16 else ())
    if op in ("MUL_MAT", "MUL_MAT_ID") and node.srcs[0].dtype == DType.F16:
        defines += ("A_F16",)
    if op == "GET_ROWS" and node.srcs[0].dtype == DType.F16:
        defines += ("SRC_F16",)
    if op == "GATED_DELTA_NET":
        S = node.srcs[2].ne[0]
        defines += (f"WG={-(-S // 32) * 8}", f"SDIM={S}") + (("KDA",) if node.srcs[3].ne[0] == S > 1 else ())
    elif op in ("REPEAT", "PAD"):
        dst, a = node.dst, node.srcs[0]
        if dst.is_contiguous() and _elems(dst, dst.offset) % 4 == 0:
            rows4 = a.nb[0] == a.dtype.size and a.ne[0] % 4 == 0 and dst.ne[0] % 4 == 0 \
                and all(_elems(a, b) % 4 == 0 for b in (a.offset, *a.nb[1:]))
            defines += ("VEC4",) if rows4 else ("DST_VEC4",)
    elif op == "SOLVE_TRI":
        if node.srcs[0].ne[0] <= 128:
            defines += ("XCACHE",) + (("SHARE_A",) if subgroup_size() >= 8 else ())
    elif op in ("ARGSORT", "TOP_K"):  # a lane's share of the row (BITONIC), else strips of SORT_PASS
        sg, per_lane, chunk = subgroup_size(), _sort_per_lane(node), _sort_chunk()
        bitonic = per_lane <= chunk  # sort.comp's network goes up to 1024 >= SORT_PASS
        defines += (f"SG={sg}",) + ((f"CHUNK={per_lane}", "BITONIC") if bitonic else (f"CHUNK={chunk}",))
        defines += ("DESC",) if node.params.get("order") == "DESC" else ()
    elif op == "MUL_MAT_ID":
        if _mmid_share(node):
            defines += ("VEC4", "SHARE", f"TNB={MM_TILE[0]}", f"MT={MM_TILE[1]}")
        else:
            k, cols = node.srcs[0].ne[0], node.dst.ne[1] * node.dst.ne[2]
            # BY_EXPERT's loop iterations when every column picks one expert: the scans, K (/4 with VEC4) and a few
            # more per batch
            worst = 2 * cols + -(-cols // MMID_COLS) * ((k // 4 if _vec4_ok(node) else k) + 8)
            defines += (("VEC4",) if _vec4_ok(node) else ()) \
                + (("BY_EXPERT", f"MT={MMID_COLS}") if worst <= LOOP_LIMIT else ())
    elif op == "SSM_CONV":
        d_conv = node.srcs[1].ne[0]
        defines += (f"DCONV={d_conv}",) if d_conv <= 16 else ()
    elif _in_place_block(node):
        defines += ("IN_PLACE_BLOCK",)
    elif _vec4_ok(node):
        defines += ("VEC4",)
        if op == "MUL_MAT" and subgroup_size() == 8 and _mm_columns(node)[0] >= MM_SHARE_MIN_M:
            defines += ("SHARE", f"TNB={MM_TILE[0]}", f"MT={MM_TILE[1]}")
        if op in ("L2_NORM", "RMS_NORM", "SOFT_MAX_EXT"):  # keep each lane's share of the row (uvec4s) for later
            per_lane = -(-(node.dst.ne[0] // 4) // min(subgroup_size(), ROW_KERNEL_WG))
            if per_lane <= 128:
                defines += (f"ROWCACHE={max(4, 1 << (per_lane - 1).bit_length())}",)
    elif op in ("CPY", "CONT") and node.dst.is_contiguous() and _elems(node.dst, node.dst.offset) % 4 == 0:
        defines += ("DST_VEC4",)
    return name, defines


def _quant_type(node: Node):
    """The quantized type a node's kernel reads (a of MUL_MAT, MUL_MAT_ID, GET_ROWS) or writes (CPY's dst), else
    None."""
    t = node.dst if node.op.name == "CPY" or not node.srcs else node.srcs[0]
    return t.dtype if t.dtype.quantized else None


def _rows4(t) -> bool:
    """f32 t's rows contiguous with 4-aligned starts (16-byte loads along them)."""
    return t.nb[0] == 4 and all(_elems(t, b) % 4 == 0 for b in (t.offset, *t.nb[1:]))


def _quant_path(node: Node) -> tuple[str, ...]:
    """The quantized kernels' specialisations: matmul.comp QMV (with its QC) or QTILE and B_VEC4, get_rows.comp
    DST_VEC4 (dst contiguous and 4-aligned); cpy.comp has one quantizing path."""
    op = node.op.name
    if op == "GET_ROWS":
        return ("DST_VEC4",) if node.dst.is_contiguous() and _elems(node.dst, node.dst.offset) % 4 == 0 else ()
    if op == "CPY":
        return ()
    b4 = ("B_VEC4",) if _rows4(node.srcs[1]) else ()
    m = _mm_columns(node)[0] if op == "MUL_MAT" else 1
    if m > QMV_MAX_M:
        return ("QTILE",) + b4
    return ("QMV", f"QC={1 << (m - 1).bit_length()}") + b4


def _column_stride(t) -> int | None:
    """The one stride (bytes) that walks t's dims 1, 2, 3 as a single run of columns, or None when there is none."""
    ne, nb = t.ne, t.nb
    s = next((nb[d] for d in (1, 2, 3) if ne[d] > 1), nb[1])
    run = 1
    for d in (1, 2, 3):
        if ne[d] > 1 and nb[d] != run * s:
            return None
        run *= ne[d]
    return s


def _folds_batches(node: Node) -> bool:
    """MUL_MAT whose a is one matrix for every batch, while b and dst walk their dims 1..3 as one run of columns:
    the batches are then just more columns (a decode step's attention over H heads: M = H, not H batches of M = 1),
    so the tile fills and a is read once instead of once per batch."""
    if node.op.name != "MUL_MAT":
        return False
    a, b, d = node.srcs[0], node.srcs[1], node.dst
    return a.ne[2] == a.ne[3] == 1 and b.ne[2] * b.ne[3] > 1 and None not in (_column_stride(b), _column_stride(d))


def _mm_columns(node: Node) -> tuple[int, int]:
    """(columns of b per batch, batches) as MUL_MAT's kernel sees them (_folds_batches)."""
    d = node.dst
    if _folds_batches(node):
        return d.ne[1] * d.ne[2] * d.ne[3], 1
    return d.ne[1], d.ne[2] * d.ne[3]


def kernel_words(node: Node) -> np.ndarray:
    """The node's parameter block as its kernel reads it: MUL_MAT with folded batches (_folds_batches) describes b
    and dst as [K or N, M * batches] matrices (with MM_SHARE_MIN_M: tg32 at d8192 on the tiny model, lavapipe, per
    step by timestamp queries: the scores' MUL_MAT 10.6 -> 0.86 ms, the latent mix 3.1 -> 1.2 ms)."""
    words = param_block(node)
    if _folds_batches(node):
        for t, tensor in ((0, node.dst), (2, node.srcs[1])):
            e, cols = tensor.dtype.size, tensor.ne[1] * tensor.ne[2] * tensor.ne[3]
            stride = _column_stride(tensor) // e
            words[TENSOR_WORDS * t + 2:TENSOR_WORDS * t + 5] = [cols, 1, 1]
            words[TENSOR_WORDS * t + 6:TENSOR_WORDS * t + 9] = [stride, cols * stride, cols * stride]
    return words.view(np.uint32)


def _in_place_block(node: Node) -> bool:
    """ACC/SET in place (dst is a itself): acc_set.comp walks b only, as nothing else changes."""
    return node.op.name in ("ACC", "SET") and node.inplace


def _mmid_share(node: Node) -> bool:
    """Whether MUL_MAT_ID takes matmul.comp's SHARE tile: VEC4 operands, 8-lane subgroups, and loop iterations per
    invocation below llvmpipe's limit when every column picks one expert (its scan, then per batch of 8 * MT columns
    K / 4 steps and the stores)."""
    if not _vec4_ok(node) or subgroup_size() != 8:
        return False
    k, cols = node.srcs[0].ne[0], node.dst.ne[1] * node.dst.ne[2]
    tnb, mt = MM_TILE
    return cols + -(-cols // (8 * mt)) * (k // 4 + 8 * tnb * mt + 2 * mt + 8) <= LOOP_LIMIT


@functools.lru_cache(maxsize=None)
def subgroup_size() -> int:
    """The device's subgroup size, from a one-thread shader (kp's device properties do not carry it)."""
    import kp
    mgr = _manager()
    out = mgr.tensor_t(np.zeros(4, dtype=np.uint32))
    algo = mgr.algorithm([out], spirv("probe.comp", ()), [1, 1, 1], np.zeros(0, np.uint32), np.zeros(0, np.uint32))
    mgr.sequence().record(kp.OpAlgoDispatch(algo)).record(kp.OpTensorSyncLocal([out])).eval()
    return int(out.data()[0])


# ---- dispatch sizes ---------------------------------------------------------------------------------------------
def _grid(groups: int) -> list[int]:
    """A 2-D grid of at least `groups` workgroups (kernels flatten it; extra groups find no work)."""
    x = min(groups, MAX_GROUPS_X)
    return [x, -(-groups // x), 1]


def workgroups(node: Node) -> list[int]:
    op, dst = node.op.name, node.dst
    if _quant_type(node) is not None:  # 64 threads a group (matmul.comp), 256 (get_rows.comp, cpy.comp)
        if op == "MUL_MAT":  # a thread per QR rows x QC columns of one batch
            m, batches = _mm_columns(node)
            rows, cols = (QTILE_ROWS, QTILE_COLS) if "QTILE" in kernel_for(node)[1] else (QMV_ROWS, _qmv_cols(node))
            return _grid(-(-(-(-dst.ne[0] // rows) * -(-m // cols) * batches) // 64))
        if op == "MUL_MAT_ID":  # a thread per QMV_ROWS rows of one (slot, token) column
            return _grid(-(-(-(-dst.ne[0] // QMV_ROWS) * dst.ne[1] * dst.ne[2]) // 64))
        return _grid(-(-dst.nelements // 32 // 256) or 1)  # a thread per 32 elements (a block piece, a q8_0/q4_0 block)
    if op == "SOLVE_TRI":
        # A thread per 4 columns, each batch padded to whole subgroups (solve_tri.comp computes the same)
        sg = subgroup_size()
        per_batch = -(-(-(-dst.ne[0] // 4)) // sg) * sg
        return _grid(-(-per_batch * dst.ne[2] * dst.ne[3] // ROW_KERNEL_WG))
    if op in ("CUMSUM", "L2_NORM", "RMS_NORM", "SUM_ROWS", "SOFT_MAX_EXT", "ARGSORT", "TOP_K"):
        rows = dst.ne[1] * dst.ne[2] * dst.ne[3]
        # A subgroup per row; the kernels grid-stride over rows, so any group count is correct.
        rows_per_group = max(1, ROW_KERNEL_WG // subgroup_size())
        return _grid(-(-rows // rows_per_group))
    if op == "MUL_MAT":  # 64 threads per group; SHARE: a subgroup per 8x32 block of dst, else a thread per 4x4
        m, batches = _mm_columns(node)
        if "SHARE" in kernel_for(node)[1]:
            tn, tm = 8 * MM_TILE[0], 8 * MM_TILE[1]
            return _grid(-(-(-(-dst.ne[0] // tn) * -(-m // tm) * batches) // (64 // 8)))
        return _grid(-(-(-(-dst.ne[0] // 4) * -(-m // 4) * batches) // 64))
    if op == "MUL_MAT_ID":  # 64 threads a group; SHARE: a subgroup per 8*TNB n of one expert, BY_EXPERT: a thread per
        # 4 n of one expert, else per 4 n of one (e, t) column
        if "SHARE" in kernel_for(node)[1]:
            return _grid(-(-(-(-node.srcs[0].ne[1] // (8 * MM_TILE[0])) * node.srcs[0].ne[2]) // (64 // 8)))
        per_row = node.srcs[0].ne[2] if "BY_EXPERT" in kernel_for(node)[1] else dst.ne[1] * dst.ne[2]
        return _grid(-(-(-(-dst.ne[0] // 4) * per_row) // 64))
    if op == "GATED_DELTA_NET":  # a group per (head, sequence)
        v = node.srcs[2]
        return _grid(v.ne[1] * v.ne[3])
    if op == "SSM_CONV":  # a thread per (channel, block of 16 tokens, sequence), 256 per group
        return _grid(-(-dst.ne[0] * -(-dst.ne[1] // 16) * dst.ne[2] // 256))
    wg, per = ELEMENTWISE
    items = node.srcs[1].nelements if _in_place_block(node) else dst.nelements
    return _grid(max(1, -(-items // (wg * per))))  # an empty b in place still dispatches one (idle) group


def _qmv_cols(node: Node) -> int:
    return int(next(d for d in kernel_for(node)[1] if d.startswith("QC=")).split("=")[1])


def _bound_handles(node: Node) -> list:
    """The kp tensors a kernel binds after its params: dst, then the sources (a one-source op gets src0 again)."""
    srcs = [s.buffer.handle for s in node.srcs]
    return [node.dst.buffer.handle, *srcs, *srcs[:1] * (2 - len(srcs))]


def _unsupported_type(node: Node) -> str | None:
    """Why the kernels cannot read or write this node's types, None when they can: f32/f16/i32 as before, quantized
    a of MUL_MAT, MUL_MAT_ID and GET_ROWS (rows of whole blocks, read in place), f32 -> q8_0/q4_0 CPY."""
    op = node.op.name
    quant = _quant_type(node)
    for role, t in [("dst", node.dst), *((f"src{i}", s) for i, s in enumerate(node.srcs))]:
        if t.dtype == DType.BF16:
            return f"vulkan kernels do not read or write bf16 ({role} of {op})"
        if t.dtype.quantized and t.dtype is not quant:
            return f"vulkan: {op} does not take a {t.dtype.label} {role} (quantized: a of MUL_MAT, MUL_MAT_ID, " \
                   f"GET_ROWS; dst of CPY)"
    if quant is None:
        return None
    if op not in ("MUL_MAT", "MUL_MAT_ID", "GET_ROWS", "CPY"):
        return f"vulkan: {op} has no quantized kernel"
    if op == "CPY":
        if quant not in QUANT_WRITE or node.srcs[0].dtype != DType.F32:
            return f"vulkan: CPY quantizes f32 to {', '.join(sorted(t.label for t in QUANT_WRITE))} only, not " \
                   f"{node.srcs[0].dtype.label} to {quant.label}"
        if node.dst.nb[0] != quant.type_size:
            return "vulkan: CPY writes quantized rows of consecutive blocks (dst nb0 == type size)"
        return None
    if quant not in QUANT_READ:
        return f"vulkan: no dequantizer for {quant.label} (quants.glsl)"
    if node.srcs[0].nb[0] != quant.type_size:
        return f"vulkan: quantized a must have consecutive blocks along its rows (nb0 == {quant.type_size})"
    return None


# ---- the backend ------------------------------------------------------------------------------------------------
_MANAGER = None


def _manager():
    global _MANAGER
    if _MANAGER is None:
        import kp  # noqa: F401  (imported late: a missing driver aborts the process, see backends/__init__.py)
        _MANAGER = kp.Manager()
    return _MANAGER


class VulkanBackend(Backend):
    name = "vulkan"
    # Creating a kp algorithm builds a pipeline (~9 ms on lavapipe, most of a model step): pooled buffers make a
    # graph run again bind the same buffers, so its algorithms are reused from the cache below.
    pool_buffers = True

    def __init__(self):
        super().__init__()
        import kp
        self.kp = kp
        if not hasattr(kp, "OpMemoryBarrier"):
            raise RuntimeError("this kp lacks OpMemoryBarrier, which graph replay records between dependent "
                               "dispatches: run `make setup` (it builds kp with scripts/patches/kp-0.9.0.patch)")
        self.mgr = _manager()
        self._algorithms: dict[tuple, tuple] = {}  # (kernel, defines, workgroups, bound buffers) -> algorithm etc.
        self._bound_by: dict[int, set] = {}  # id(buffer handle) -> keys of the algorithms bound to it

    # ---- buffers ----
    def _alloc(self, nbytes):
        if nbytes > MAX_ALLOC_BYTES:
            raise MemoryError(f"vulkan: {nbytes} bytes is over the {MAX_ALLOC_BYTES} byte allocation limit")
        return self.mgr.tensor_t(np.zeros(nbytes // 4, dtype=np.uint32))

    def _free(self, buf: Buffer) -> None:
        for key in self._bound_by.pop(id(buf.handle), ()):  # a later buffer may reuse this id
            self._algorithms.pop(key, None)
        buf.handle.destroy()

    def _eval(self, *ops) -> None:
        seq = self.mgr.sequence()
        for op in ops:
            seq.record(op)
        seq.eval()

    def write(self, buf: Buffer, data: np.ndarray) -> None:
        buf.handle.data()[:] = np.ascontiguousarray(data).view(np.uint8).reshape(-1).view(np.uint32)
        self._eval(self.kp.OpTensorSyncDevice([buf.handle]))

    def read(self, buf: Buffer) -> np.ndarray:
        self._eval(self.kp.OpTensorSyncLocal([buf.handle]))
        return buf.handle.data().view(np.uint8).copy()

    # ---- ops ----
    def supports(self, node: Node) -> str | None:
        refused = _unsupported_type(node)
        if refused:
            return refused
        if node.op.name in ("ARGSORT", "TOP_K") and _sort_loop_iterations(node) > LOOP_LIMIT:
            return (f"rows of {node.srcs[0].ne[0]} need {_sort_loop_iterations(node)} loop iterations in sort.comp; "
                    f"llvmpipe stops an invocation's loops after {LOOP_LIMIT}")
        if node.op.name == "GATED_DELTA_NET" and subgroup_size() < 8:
            return f"gated_delta_net.comp broadcasts over 8 lanes; this device's subgroups have {subgroup_size()}"
        for t in node.tensors:
            if t.buffer is not None and t.buffer.nbytes > MAX_BINDING_BYTES:
                return (f"a {t.buffer.nbytes}-byte buffer exceeds the {MAX_BINDING_BYTES}-byte storage-buffer range "
                        f"lavapipe can bind")
        return None

    def kernel_path(self, node: Node) -> str:
        if node.dst.nelements == 0:
            return "nothing to dispatch"
        # sizes (WG=, SDIM=, CHUNK=, ...) dropped: only the specialisations. The quantized type (Q_<TYPE>) shows as
        # QUANT: it selects quants.glsl's dequantizer, the same code on every path (each type is pinned, and checked
        # bit for bit by cases/test_vulkan_quants.py), so a path is the kernel's structure, not type x structure.
        name, defines = kernel_for(node)
        shown = ["QUANT" if d.startswith("Q_") else d.split("=")[0] for d in defines]
        return " ".join([name, *shown] + ["FOLDED"] * _folds_batches(node))

    def _dispatch(self, node: Node) -> tuple | None:
        """(params tensor, algorithm, one-dispatch sequence) of a bound node, None for an empty dst. Shared by every
        node of the same kernel, grid, buffers and parameter block (pipelines are costly to build)."""
        if node.dst.nelements == 0:
            return None
        name, defines = kernel_for(node)
        words = kernel_words(node)
        buffers = _bound_handles(node)
        groups = tuple(workgroups(node))
        key = (name, defines, groups, tuple(id(h) for h in buffers), words.tobytes())
        if key not in self._algorithms:
            self._algorithms[key] = self._new_dispatch(node, words)
            for h in buffers:
                self._bound_by.setdefault(id(h), set()).add(key)
        return self._algorithms[key]

    def _new_dispatch(self, node: Node, words: np.ndarray, patchable: bool = False) -> tuple:
        """A new params tensor and pipeline for the node. `patchable`: its one-dispatch sequence uploads the params
        first, so they may be rewritten in host memory between runs."""
        kp = self.kp
        params = self.mgr.tensor_t(words.copy())
        self._eval(kp.OpTensorSyncDevice([params]))
        name, defines = kernel_for(node)
        algo = self.mgr.algorithm([params, *_bound_handles(node)], spirv(name, defines), workgroups(node),
                                  np.zeros(0, np.uint32), np.zeros(0, np.uint32))
        seq = self.mgr.sequence()
        if patchable:
            seq.record(kp.OpTensorSyncDevice([params]))
        return params, algo, seq.record(kp.OpAlgoDispatch(algo))

    def _prepare(self, node: Node):
        dispatch = self._dispatch(node)
        if dispatch is None:
            return lambda: None

        def run(seq=dispatch[2], keep=dispatch):  # keep the params tensor and pipeline alive with the callable
            seq.eval()
        return run

    def record(self, nodes, inputs, outputs):
        return VulkanReplay(self, nodes, inputs, outputs)

    def synchronize(self) -> None:
        pass  # every run() waits for its sequence

    @functools.lru_cache(maxsize=None)
    def memory_limits(self) -> dict:
        # kp reports no heap sizes: held to this machine's RAM (lavapipe's buffers live there) and kp's allocation limit
        return {"device": None, "host_memory": True,
                "max_alloc": (MAX_ALLOC_BYTES, "kp's largest allocation that does not abort (MAX_ALLOC_BYTES)")}

    def device_info(self) -> dict:
        props = self.mgr.get_device_properties()
        driver = "Vulkan (kp 0.9.0)"
        try:
            out = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True, timeout=30).stdout
            info = dict(re.findall(r"^\s*(driverName|driverInfo|apiVersion)\s*=\s*(.+)$", out, flags=re.M))
            if info:
                driver = f"{info.get('driverName', '?')} {info.get('driverInfo', '')}, Vulkan " \
                         f"{info.get('apiVersion', '?').split()[0]} via kp 0.9.0"
        except (OSError, subprocess.SubprocessError):
            pass
        return {"device": props["device_name"], "driver": driver}

    stream_source = "Vulkan compute shaders (backends/vulkan/stream.comp)"
    stream_granule = 4 * 256  # stream.comp: a vec4 per thread, 256 threads a group, no bounds check

    def _stream(self, kernel, arrays, n, scalar):
        groups = n // self.stream_granule
        if groups > MAX_GROUPS_X:
            raise ValueError(f"vulkan stream kernels take at most {MAX_GROUPS_X * self.stream_granule} elements, "
                             f"got {n}")
        scalar_tensor = self.mgr.tensor_t(np.array([scalar], dtype=np.float32).view(np.uint32))
        self._eval(self.kp.OpTensorSyncDevice([scalar_tensor]))
        algo = self.mgr.algorithm([scalar_tensor, *(b.handle for b in arrays)],
                                  spirv("stream.comp", (kernel.upper(),)), [groups, 1, 1],
                                  np.zeros(0, np.uint32), np.zeros(0, np.uint32))
        seq = self.mgr.sequence().record(self.kp.OpAlgoDispatch(algo))

        def run(keep=(scalar_tensor, algo)):  # the scalar and the pipeline live as long as the callable
            seq.eval()
        return run

    def last_level_cache_bytes(self) -> int | None:
        # kp reports no cache sizes: lavapipe (llvmpipe) runs on the host's cores and caches; other devices: unknown
        if "llvmpipe" in self.mgr.get_device_properties()["device_name"]:
            return super().last_level_cache_bytes()
        return None


# Vulkan's flag bits, as kp.OpMemoryBarrier takes them
SHADER_READ, SHADER_WRITE, COMPUTE_STAGE = 0x20, 0x40, 0x800


class VulkanReplay(Replay):
    """One kp sequence per compiled graph: the inputs' upload, every dispatch with a barrier wherever a dispatch
    touches a buffer an earlier one wrote, or writes one an earlier one read, since the last barrier (kp's own
    OpAlgoDispatch orders only transfers before shaders), and the outputs' download; run() evaluates it once. The
    one-dispatch sequences of prepare() serve step(). A patched node gets its own parameter tensor (its pipeline
    built once), which the sequence uploads before the dispatches, so later patches only write host memory."""

    timer = "Vulkan timestamp queries (kp sequence timestamps)"

    def __init__(self, backend: VulkanBackend, nodes, inputs, outputs):
        super().__init__(backend, nodes)
        self.inputs, self.outputs = [b.handle for b in inputs], {id(b) for b in outputs}
        self.output_handles = [b.handle for b in outputs]
        self.dispatches = [backend._dispatch(n) for n in self.nodes]
        self.own: dict[int, tuple] = {}  # node index -> the dispatch made for it by patch()
        self._timed = None
        self.downloaded = False
        self.seq, _ = self._record(backend.mgr.sequence())

    def _record(self, seq) -> tuple:
        """Record the replay into `seq`; returns it and each node's op position in it (None: nothing dispatched).
        `self.layout` lists what was recorded: ("upload",), ("barrier", buffers), ("dispatch", node index),
        ("download",)."""
        kp = self.backend.kp
        count = 0
        self.layout: list[tuple] = []

        def add(op, *what):
            nonlocal count
            seq.record(op)
            self.layout.append(what)
            count += 1

        uploads = self.inputs + [d[0] for d in self.own.values()]
        if uploads:
            add(kp.OpTensorSyncDevice(uploads), "upload")
        dirty: dict[int, object] = {}  # written since the last barrier that covered them
        read: dict[int, object] = {}  # read since the last barrier
        positions = []
        for index, (node, dispatch) in enumerate(zip(self.nodes, self.dispatches)):
            if dispatch is None:
                positions.append(None)
                continue
            dst, srcs = node.dst.buffer.handle, [t.buffer.handle for t in node.srcs]
            hazards = {id(h): h for h in [dst, *srcs] if id(h) in dirty}
            if id(dst) in read:
                hazards[id(dst)] = dst
            if hazards:
                add(kp.OpMemoryBarrier(list(hazards.values()), SHADER_WRITE, SHADER_READ | SHADER_WRITE,
                                       COMPUTE_STAGE, COMPUTE_STAGE), "barrier", set(hazards))
                for key in hazards:
                    dirty.pop(key, None)
                read.clear()
            positions.append(count)
            add(kp.OpAlgoDispatch(dispatch[1]), "dispatch", index)
            dirty[id(dst)] = dst
            read.update((id(h), h) for h in srcs)
        if self.output_handles:
            add(kp.OpTensorSyncLocal(self.output_handles), "download")
        return seq, positions

    def run(self, writes) -> None:
        for buf, data in writes.items():
            buf.handle.data()[:] = np.ascontiguousarray(data).view(np.uint32)
        self.seq.eval()
        self.downloaded = True

    def step(self, index: int) -> None:
        self.downloaded = False
        super().step(index)

    def read(self, buf: Buffer) -> np.ndarray:
        if self.downloaded and id(buf) in self.outputs:  # the sequence downloaded it at the end of run()
            return buf.handle.data().view(np.uint8).copy()
        return self.backend.read(buf)

    def patch(self, index: int, node) -> None:
        backend = self.backend
        old = self.nodes[index]
        self.nodes[index] = node
        words = kernel_words(node)
        same_kernel = kernel_for(node) == kernel_for(old) and workgroups(node) == workgroups(old)
        if index in self.own and same_kernel:
            self.own[index][0].data()[:] = words  # uploaded at the start of the next run
            return
        dispatch = backend._new_dispatch(node, words, patchable=True) if same_kernel and node.dst.nelements \
            else backend._dispatch(node)
        self.dispatches[index] = dispatch
        if same_kernel and dispatch is not None:
            self.own[index] = dispatch
        self.launches[index] = (lambda seq=dispatch[2], keep=dispatch: seq.eval()) if dispatch else (lambda: None)
        self.seq, _ = self._record(backend.mgr.sequence())
        self._timed = None

    def profile(self, writes) -> list[int]:
        if self._timed is None:
            seq = self.backend.mgr.sequence(0, len(self.nodes) * 2 + 2)
            self._timed = self._record(seq)
        seq, positions = self._timed
        for buf, data in writes.items():
            buf.handle.data()[:] = np.ascontiguousarray(data).view(np.uint32)
        seq.eval()
        self.downloaded = True
        stamps = seq.get_timestamps()
        period = self.backend.mgr.get_device_properties().get("timestamp_period", 1.0)
        return [0 if p is None else int((stamps[p + 1] - stamps[p]) * period) for p in positions]


def create() -> VulkanBackend:
    return VulkanBackend()
