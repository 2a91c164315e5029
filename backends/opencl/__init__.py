"""OpenCL backend through PyOpenCL (written for PoCL's CPU driver, plain OpenCL C 1.2).

One context and one in-order, profiling queue per process. Each kernel file (one per op family, beside this one)
is built once per set of defines with common.cl prepended; each prepared node gets its own cl.Kernel with its
arguments set once, so a compiled graph's replay only enqueues. The parameter block of backends/base.py
goes to every kernel BY VALUE (a struct argument, see common.cl); for element-wise ops prepare() first merges
neighbouring dims that all operands walk contiguously, so a contiguous 4-D tensor runs as one long row.
The kernels are shaped for a CPU driver: each work item loops over a contiguous run of elements, which the
compiler vectorises; one element per work item with a bounds check measured 5-20x slower on PoCL.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyopencl as cl

from reference.node import Node
from reference.ops import REGISTRY
from reference.tensor import Buffer, DType

from ..base import PARAM_WORDS, TENSOR_WORDS, Backend, Replay, kernel_text, param_block, pow2_at_least

HERE = Path(__file__).parent
CHUNK = 256  # elements per work item of the "rows" and "flat" grids (common.cl)
# "rows" grid when a source is strided along ne0: short runs, many rows per work group (see prepare)
STRIDED_CHUNK, STRIDED_LOCAL = 16, 256
BUILD_OPTIONS = ["-cl-std=CL1.2"]
MAX_LOCAL = 64  # work items per work group; on a CPU driver a work group is the unit one core takes
SSM_TILE = 64  # ssm_conv.cl's TILE
SOLVE_COLUMNS = 8  # columns per work item in solve_tri.cl
# mul_mat_k1 (matrix-vector products): rows of a x rows of b per work item, work group shape
MM_RN, MM_RM, MM_LOCAL = 4, 8, (2, 16)
# mul_mat_vec_q (quantized a, few columns; "qrows" grid): rows of a per single-work-item group, each group staging its
# columns of b in local memory first (PoCL, 2304 x 9216 q4_K, n = 1, one thread: 256 rows 15% faster than 64, 16
# rows 50% slower; two rows at a time spilled the accumulators, 2x slower)
QMV_ROWS = 256
# mul_mat_pack / mul_mat_id: k per packed chunk, columns of b per MUL_MAT work group, columns per micro-kernel,
# float8 rows of a per group (PoCL, 1024x1024x512, GFLOPS best of 3: CM x NV 4x3 150, 4x2 146, 6x2 150 but
# 117-150; 8x1 105; 3x4 21 (spills). KC 128-384 and TM 128-256 within the noise)
PACK_KC, PACK_TM, PACK_CM, PACK_NV = 256, 128, 4, 3
PACK_MIN_M = 8  # fewer columns of b, contiguous along k: mul_mat_k1 (no packing, no wasted columns)
MIN_SEGMENT, MAX_SEGMENTS = 64, 256  # "segments" grid: least elements per work item, most work items per row
SORT_LOCAL = 64  # "sort" grid (rows too long for argsort8): most work items per row
SORT8_LOCAL_BYTES = 256 << 10  # argsort8 (8 rows per work item) while its 64 * NP bytes of keys fit this
# Defines that carry a size, not a code path (kernel_path keeps their names only); CHUNK (strided or not) and RM = 1
# (a matrix-vector product) do choose the path.
SIZE_DEFINES = {"NP", "KP", "D_CONV", "S_V", "RN", "KC", "TM", "CM", "NV", "QROWS"}
# Quantized weights (quants.cl): MUL_MAT, MUL_MAT_ID and GET_ROWS read every type quants.cl knows as src0 (define
# A_<TYPE>); CPY encodes f32 into the types ggml's CPY writes (define DST_<TYPE>; cpy.cl's cpy_quantize).
QUANT_READ = frozenset(t for t in DType if t.quantized)
QUANT_READERS = ("MUL_MAT", "MUL_MAT_ID", "GET_ROWS")
QUANT_WRITE = frozenset({DType.Q8_0, DType.Q4_0})
QUANT_DEFINES = {f"{side}_{t.name}" for t in QUANT_READ for side in ("A", "DST")}
# The f32 -> quantized encoders divide (d = amax / 127, 1 / d) exactly as ggml does only when division rounds
# correctly, which OpenCL C promises only under this option (and a device that supports it).
EXACT_DIVIDE = "-cl-fp32-correctly-rounded-divide-sqrt"
assert PACK_KC % 256 == 0, "mul_mat_pack's k chunks must be whole blocks of every quantized type"
PARAMS_DTYPE = np.dtype([("w", np.int32, PARAM_WORDS)])  # common.cl's Params, passed by value

# op -> (entry point, defines, grid); the kernel file is the op's family (backends/opencl/<family>.cl). Grids: "rows" =
# runs of CHUNK elements along dst rows (ne1 and ne2*ne3 in dims 1 and 2), "flat" = runs of CHUNK dst elements,
# "segments" = one work group per row, "tiles" = SSM_TILE channels x SSM_TILE tokens per work group, "columns" = one
# work item per (SOLVE_COLUMNS columns, batch), "sort8" = one work item per 8 rows sorting 8 x NP keys (NP = a power of
# two >= ne0) in local memory (prepare() switches to entry argsort on the "sort" grid, one work group per row, when they
# do not fit SORT8_LOCAL_BYTES), "experts" = one single-work-item group per (8 * PACK_NV rows of N, expert), "pack" =
# one single-work-item group per 8 * PACK_NV rows x PACK_TM columns of dst (any strides), "k1" = one work item per MM_RN
# x MM_RM block of dst (prepare() switches MUL_MAT to entry mul_mat_k1 on this grid when b has few columns and a and b
# are both contiguous along k), "heads" = one work group per (head, seq) with one work item per value column. prepare()
# adds per-node defines: CHUNK, types (CPY/CONT, a of MUL_MAT), b broadcast (binary), taps
# (SSM_CONV), head size and gate kind (GATED_DELTA_NET), types (GET_ROWS, MUL_MAT_ID), NP and KP (ARGSORT/TOP_K),
# blocking and b's k stride (MUL_MAT, MUL_MAT_ID), the quantized type of src0 (A_<TYPE>: MUL_MAT, MUL_MAT_ID,
# GET_ROWS; a quantized MUL_MAT with few columns runs entry mul_mat_vec_q on the "qrows" grid, one
# single-work-item group per QMV_ROWS rows of a x RM columns of b, while its staged b fits local memory) or of
# CPY's dst (DST_<TYPE>: entry cpy_quantize, CHUNK whole blocks).
KERNELS = {
    "SOFTPLUS": ("unary", ["OP_SOFTPLUS"], "rows"),
    "SIGMOID": ("unary", ["OP_SIGMOID"], "rows"),
    "SILU": ("unary", ["OP_SILU"], "rows"),
    "EXP": ("unary", ["OP_EXP"], "rows"),
    "NEG": ("unary", ["OP_NEG"], "rows"),
    "SCALE": ("unary", ["OP_SCALE"], "rows"),
    "CLAMP": ("unary", ["OP_CLAMP"], "rows"),
    "ADD": ("binary", ["OP_ADD"], "rows"),
    "SUB": ("binary", ["OP_SUB"], "rows"),
    "MUL": ("binary", ["OP_MUL"], "rows"),
    "DIV": ("binary", ["OP_DIV"], "rows"),
    "ACC": ("acc_set", ["ACC"], "flat"),
    "SET": ("acc_set", ["SET"], "flat"),
    "CUMSUM": ("cumsum", [], "segments"),
    "TRI": ("tri", [], "rows"),
    "FILL": ("fill", [], "rows"),
    "DIAG": ("diag", [], "rows"),
    "SOLVE_TRI": ("solve_tri", [], "columns"),
    "SSM_CONV": ("ssm_conv", [], "tiles"),
    "L2_NORM": ("norm", ["L2"], "segments"),
    "RMS_NORM": ("norm", ["RMS"], "segments"),
    "SUM_ROWS": ("sum_rows", [], "segments"),
    "SOFT_MAX_EXT": ("soft_max", [], "segments"),
    "ARGSORT": ("argsort8", [], "sort8"),
    "TOP_K": ("argsort8", ["TOP_K"], "sort8"),
    "CPY": ("cpy", [], "rows"),
    "CONT": ("cpy", [], "rows"),
    "REPEAT": ("repeat", [], "rows"),
    "PAD": ("pad", [], "rows"),
    "CONCAT": ("concat", [], "rows"),
    "GET_ROWS": ("get_rows", [], "rows"),
    "MUL_MAT": ("mul_mat_pack", [], "pack"),
    "MUL_MAT_ID": ("mul_mat_id", [], "experts"),
    "GATED_DELTA_NET": ("gated_delta_net", [], "heads"),
}
assert set(KERNELS) == set(REGISTRY), f"OpenCL kernels missing for {sorted(set(REGISTRY) - set(KERNELS))}"


def _collapse(words: np.ndarray, ts: list[int]) -> None:
    """Merge dim k into the dim before it wherever every tensor in `ts` allows it (in place on the block).

    ts[0] sets the shape; another tensor either has the same size in both dims and is contiguous across them, or
    (a broadcast b) has size 1 in both. Merging keeps the flat element order, so CPY may collapse src and dst apart.
    """
    ref = ts[0]
    ne = {t: [int(v) for v in words[TENSOR_WORDS * t + 1:TENSOR_WORDS * t + 5]] for t in ts}
    nb = {t: [int(v) for v in words[TENSOR_WORDS * t + 5:TENSOR_WORDS * t + 9]] for t in ts}
    out = {t: [[ne[t][0], nb[t][0]]] for t in ts}
    for k in range(1, 4):
        if ne[ref][k] == 1:
            continue
        if out[ref][-1][0] == 1:
            for t in ts:
                out[t][-1] = [ne[t][k], nb[t][k]]
            continue
        merged = {}
        for t in ts:
            pn, pb = out[t][-1]
            if pn == out[ref][-1][0] and ne[t][k] == ne[ref][k] and nb[t][k] == pb * pn:
                merged[t] = [pn * ne[t][k], pb]
            elif pn == 1 and ne[t][k] == 1:
                merged[t] = [1, pb]
            else:
                merged = None
                break
        for t in ts:
            if merged is None:
                out[t].append([ne[t][k], nb[t][k]])
            else:
                out[t][-1] = merged[t]
    for t in ts:
        dims = out[t] + [[1, out[t][-1][0] * out[t][-1][1]]] * (4 - len(out[t]))
        words[TENSOR_WORDS * t + 1:TENSOR_WORDS * t + 5] = [n for n, _ in dims]
        words[TENSOR_WORDS * t + 5:TENSOR_WORDS * t + 9] = [s for _, s in dims]


class OpenCLBackend(Backend):
    name = "opencl"

    def __init__(self):
        super().__init__()
        platform, device = next((p, p.get_devices()[0]) for p in cl.get_platforms() if p.get_devices())
        self.platform, self.device = platform, device
        self.ctx = cl.Context([device])
        self.queue = cl.CommandQueue(self.ctx, device, properties=cl.command_queue_properties.PROFILING_ENABLE)
        self._common = kernel_text(self.name, HERE / "common.cl")
        self._programs: dict[tuple, cl.Program] = {}

    # ---- buffers ------------------------------------------------------------------------------------------------
    def _alloc(self, nbytes):
        return cl.Buffer(self.ctx, cl.mem_flags.READ_WRITE, nbytes)

    def _free(self, buf: Buffer) -> None:
        buf.handle.release()

    def write(self, buf: Buffer, data: np.ndarray) -> None:
        cl.enqueue_copy(self.queue, buf.handle, np.ascontiguousarray(data.view(np.uint8).reshape(-1)),
                        is_blocking=True)

    def read(self, buf: Buffer) -> np.ndarray:
        out = np.empty(buf.nbytes, dtype=np.uint8)
        cl.enqueue_copy(self.queue, out, buf.handle, is_blocking=True)
        return out

    # ---- kernels ------------------------------------------------------------------------------------------------
    def kernel(self, file: str, entry: str, defines: tuple[str, ...]) -> cl.Kernel:
        """A new cl.Kernel for (file, entry, defines), its program built on first use: each prepared node owns one,
        so its arguments are set once."""
        key = (file, defines)
        if key not in self._programs:
            quantized = [d for d in defines if d in QUANT_DEFINES]
            parts = [self._common] + [kernel_text(self.name, HERE / "quants.cl")] * bool(quantized)
            src = "\n".join(parts + [kernel_text(self.name, HERE / file)])
            options = [EXACT_DIVIDE] * any(d.startswith("DST_") for d in quantized)
            self._programs[key] = cl.Program(self.ctx, src).build(BUILD_OPTIONS + options + [f"-D{d}" for d in defines])
        return cl.Kernel(self._programs[key], entry)

    def supports(self, node: Node) -> str | None:
        name = node.op.name
        for i, t in enumerate(node.srcs):
            if t.dtype == DType.BF16:
                return "no bf16 kernels on OpenCL"
            if t.dtype.quantized and (i or name not in QUANT_READERS or t.dtype not in QUANT_READ):
                return (f"{name} reads no {t.dtype.label} src{i} on OpenCL (quantized: src0 of "
                        f"{', '.join(QUANT_READERS)})")
        if node.dst.dtype.quantized:
            if node.dst.dtype not in QUANT_WRITE or node.srcs[0].dtype != DType.F32:
                return (f"CPY encodes f32 into {'/'.join(sorted(t.label for t in QUANT_WRITE))} only, not "
                        f"{node.srcs[0].dtype.label} into {node.dst.dtype.label}")
            if not self.device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
                return f"{self.device.name.strip()} cannot divide correctly rounded ({EXACT_DIVIDE}), which " \
                       f"ggml's {node.dst.dtype.label} scales need"
        if name in ("ARGSORT", "TOP_K") and 8 * pow2_at_least(node.srcs[0].ne[0]) > self.device.local_mem_size:
            return f"{name} sorts a row in local memory: {node.srcs[0].ne[0]} keys do not fit"
        for t in node.tensors:
            if (t.offset + t.extent()) // t.dtype.size >= 2**31:
                return f"{t.describe()} reaches past element 2^31: the kernels index with 32-bit ints"
        return None

    def _prepare(self, node: Node):
        launch = self.launch(node)
        if launch is None:
            return lambda: None
        (file, entry, defines), args, gsize, lsize = launch
        knl = self.kernel(file, entry, defines)
        knl.set_args(*args)
        queue, enqueue = self.queue, cl.enqueue_nd_range_kernel

        def run() -> cl.Event:
            return enqueue(queue, knl, gsize, lsize)
        run.kernel, run.launch = knl, launch  # for OpenCLReplay.patch
        return run

    def kernel_path(self, node: Node) -> str:
        launch = self.launch(node)
        if launch is None:
            return "nothing to launch"
        (file, entry, defines), _, _, _ = launch
        shown = [d.split("=")[0] if d.split("=")[0] in SIZE_DEFINES else d for d in defines]
        return " ".join([entry, *("RM" if d.startswith("RM=") and d != "RM=1" else d for d in shown)])

    def launch(self, node: Node) -> tuple | None:
        """((file, entry, defines), kernel arguments, global size, local size) of a node; None when it has nothing
        to do."""
        name = node.op.name
        entry, defines, grid = KERNELS[name]
        file = f"{node.op.family}.cl"
        dst, srcs = node.dst, node.srcs
        if dst.nelements == 0:
            return None
        defines = list(defines)
        words = param_block(node)
        inplace = name in ("ACC", "SET") and node.inplace  # only b's block changes: acc_set_block walks b
        if inplace:
            if srcs[1].nelements == 0:
                return None
            entry = "acc_set_block"
        if node.op.elementwise:  # no result depends on which dim an element sits in: merge dims before launch
            if name in ("CPY", "CONT") and dst.ne != srcs[0].ne:  # same flat order, different shapes
                _collapse(words, [0])
                _collapse(words, [1])
                if list(words[1:5]) != list(words[10:14]):
                    defines.append("FLAT")
            else:
                _collapse(words, list(range(len(node.tensors))))
        if name in ("CPY", "CONT"):
            defines += ["SRC_F16"] * (srcs[0].dtype == DType.F16) + ["DST_F16"] * (dst.dtype == DType.F16)
            if dst.dtype.quantized:
                entry = "cpy_quantize"
                defines.append(f"DST_{dst.dtype.name}")
        if name in ("ADD", "SUB", "MUL", "DIV") and words[19] != words[1]:
            defines.append("BCAST0")
        if name == "SSM_CONV":
            defines.append(f"D_CONV={srcs[1].ne[0]}")
        if name in ("MUL_MAT", "MUL_MAT_ID", "GET_ROWS"):
            defines += ["A_F16"] * (srcs[0].dtype == DType.F16)
            defines += [f"A_{srcs[0].dtype.name}"] * srcs[0].dtype.quantized
        k_contiguous = words[TENSOR_WORDS + 5] == 1 and words[2 * TENSOR_WORDS + 5] == 1
        if name == "MUL_MAT" and dst.ne[1] < PACK_MIN_M and k_contiguous and (
                not srcs[0].dtype.quantized or self._mat_vec_q_local_bytes(node) <= self.device.local_mem_size):
            rm = min(MM_RM, dst.ne[1])  # a matrix-vector product takes RM = 1
            if srcs[0].dtype.quantized:
                entry, grid = "mul_mat_vec_q", "qrows"
                defines += [f"QROWS={QMV_ROWS}", f"RM={rm}"]
            else:
                entry, grid, rn = "mul_mat_k1", "k1", min(MM_RN, dst.ne[0])
                defines += [f"RN={rn}", f"RM={rm}"]
        elif name in ("MUL_MAT", "MUL_MAT_ID"):
            defines += [f"KC={PACK_KC}", f"TM={PACK_TM}", f"CM={PACK_CM}", f"NV={PACK_NV}"]
            defines += ["BK1"] * int(words[2 * TENSOR_WORDS + 5] == 1)
        if grid == "sort8":
            np_keys = pow2_at_least(srcs[0].ne[0])
            defines += [f"NP={np_keys}", f"KP={pow2_at_least(dst.ne[0]) if name == 'TOP_K' else np_keys}"]
            if 64 * np_keys > SORT8_LOCAL_BYTES:
                entry, grid = "argsort", "sort"
        if name == "GATED_DELTA_NET":
            defines += [f"S_V={srcs[2].ne[0]}"] + ["KDA"] * (srcs[3].ne[0] != 1)
        # A source strided along ne0 (a transpose) reads a cache line per element: then each work item takes a short
        # run and the work group many rows, so neighbouring work items share those lines.
        walked = range(1, 2) if name == "GET_ROWS" else range(1, len(node.tensors))  # not GET_ROWS' ids
        strided = grid == "rows" and any(words[TENSOR_WORDS * t + 5] != 1 for t in walked)
        chunk = STRIDED_CHUNK if strided and not dst.dtype.quantized else CHUNK  # cpy_quantize: whole blocks
        program = (file, entry, tuple(defines + [f"CHUNK={chunk}"]))

        bufs = [t.buffer.handle for t in ([dst] + srcs[1:] if inplace else node.tensors)]
        if name == "FILL":
            bufs = [dst.buffer.handle]  # FILL never reads its source
        args = bufs + [np.frombuffer(words.tobytes(), dtype=PARAMS_DTYPE)[0]]
        ne0, ne1, ne23 = int(words[1]), int(words[2]), int(words[3]) * int(words[4])
        if grid == "rows":
            chunks = -(-ne0 // chunk)
            l0 = 1 if strided else min(MAX_LOCAL, pow2_at_least(chunks))
            l1 = min((STRIDED_LOCAL if strided else MAX_LOCAL) // l0, pow2_at_least(ne1))
            gsize, lsize = (-(-chunks // l0) * l0, -(-ne1 // l1) * l1, ne23), (l0, l1, 1)
        elif grid == "flat":
            runs = -(-(srcs[1] if inplace else dst).nelements // chunk)
            local = min(MAX_LOCAL, pow2_at_least(runs))
            gsize, lsize = (-(-runs // local) * local,), (local,)
        elif grid == "segments":  # the row is src0's (SUM_ROWS' dst has ne0 = 1)
            local = min(MAX_SEGMENTS, pow2_at_least(-(-srcs[0].ne[0] // MIN_SEGMENT)))
            gsize, lsize = (local, ne1, ne23), (local, 1, 1)
            args.append(cl.LocalMemory(4 * (2 * local + 2)))
        elif grid == "sort8":
            gsize, lsize = (-(-srcs[0].nelements // srcs[0].ne[0] // 8),), (1,)
            args.append(cl.LocalMemory(64 * np_keys))
        elif grid == "sort":
            local = min(SORT_LOCAL, max(1, np_keys // 2))
            gsize, lsize = (local, ne1, ne23), (local, 1, 1)
            args.append(cl.LocalMemory(8 * np_keys))
        elif grid == "experts":
            gsize, lsize = (-(-srcs[0].ne[1] // (8 * PACK_NV)), srcs[0].ne[2]), (1, 1)
        elif grid == "tiles":
            gsize, lsize = (-(-ne0 // SSM_TILE) * SSM_TILE, -(-ne1 // SSM_TILE), ne23), (SSM_TILE, 1, 1)
        elif grid == "pack":
            gsize = (-(-dst.ne[0] // (8 * PACK_NV)), -(-dst.ne[1] // PACK_TM), dst.ne[2] * dst.ne[3])
            lsize = (1, 1, 1)
        elif grid == "qrows":
            gsize, lsize = (-(-dst.ne[0] // QMV_ROWS), -(-dst.ne[1] // rm), dst.ne[2] * dst.ne[3]), (1, 1, 1)
            args.append(cl.LocalMemory(self._mat_vec_q_local_bytes(node)))
        elif grid == "k1":
            blocks = (-(-dst.ne[0] // rn), -(-dst.ne[1] // rm))
            l0, l1 = (min(want, pow2_at_least(n)) for want, n in zip(MM_LOCAL, blocks))
            gsize = (-(-blocks[0] // l0) * l0, -(-blocks[1] // l1) * l1, dst.ne[2] * dst.ne[3])
            lsize = (l0, l1, 1)
        elif grid == "heads":
            S, H, _, n = srcs[2].ne
            gsize, lsize = (S, H, n), (S, 1, 1)
        else:  # columns: groups of SOLVE_COLUMNS columns
            groups = -(-dst.ne[0] // SOLVE_COLUMNS)
            local = min(MAX_LOCAL, pow2_at_least(groups))
            gsize, lsize = (-(-groups // local) * local, dst.ne[2] * dst.ne[3]), (local, 1)
        return program, args, gsize, lsize

    @staticmethod
    def _mat_vec_q_local_bytes(node: Node) -> int:
        """mul_mat_vec_q's staged b: its RM columns of K floats and their K / 32 run sums (matmul.cl)."""
        k, m = node.srcs[0].ne[0], min(MM_RM, node.dst.ne[1])
        return 4 * m * (k + k // 32)

    def record(self, nodes, inputs, outputs):
        return OpenCLReplay(self, nodes)

    def synchronize(self) -> None:
        self.queue.finish()

    def memory_limits(self) -> dict:
        dev = self.device
        return {"device": (int(dev.global_mem_size), f"{dev.name.strip()}'s global memory (CL_DEVICE_GLOBAL_MEM_SIZE)"),
                "max_alloc": (int(dev.max_mem_alloc_size), "its largest allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE)"),
                "host_memory": bool(dev.type & cl.device_type.CPU)}  # PoCL: its buffers are host memory

    def device_info(self) -> dict:
        return {"device": self.device.name.strip(),
                "driver": f"{self.platform.version.strip()}; driver {self.device.driver_version.strip()}"}

    stream_source = "OpenCL kernels (backends/opencl/stream.cl)"

    def _stream(self, kernel, arrays, n, scalar):
        knl = self.kernel("stream.cl", f"stream_{kernel}", (f"CHUNK={CHUNK}",))
        handles = [b.handle for b in arrays]
        handles += handles[:1] * (3 - len(handles))  # the inputs a kernel does not read
        knl.set_args(*handles, np.int32(n), np.float32(scalar))
        runs = -(-n // CHUNK)
        local = min(MAX_LOCAL, pow2_at_least(runs))
        gsize, lsize = (-(-runs // local) * local,), (local,)
        return lambda: cl.enqueue_nd_range_kernel(self.queue, knl, gsize, lsize)

    def last_level_cache_bytes(self) -> int | None:
        if self.device.type & cl.device_type.CPU:  # PoCL: the host's cores and caches
            return super().last_level_cache_bytes()
        return int(self.device.global_mem_cache_size) or None


class OpenCLReplay(Replay):
    """The prepared launches enqueued back to back (kernel objects with their arguments set at compile time), one
    wait at the end; profile() reads each launch's profiling event."""

    timer = "OpenCL profiling events"

    def patch(self, index: int, node) -> None:
        """Same kernel and grid (a decode step's new cache offset): only its arguments are set again (creating a
        cl.Kernel costs pyopencl about 0.5 ms)."""
        old, new = self.launches[index], self.backend.launch(node)
        same = getattr(old, "launch", None) and new and old.launch[0] == new[0] and old.launch[2:] == new[2:]
        if not same:
            return super().patch(index, node)
        self.nodes[index] = node
        old.kernel.set_args(*new[1])
        old.launch = new

    def profile(self, writes) -> list[int]:
        for buf, data in writes.items():
            self.backend.write(buf, data)
        events = [launch() for launch in self.launches]
        self.backend.synchronize()
        return [0 if ev is None else ev.profile.end - ev.profile.start for ev in events]


def create() -> OpenCLBackend:
    return OpenCLBackend()
