"""CUDA backend through CuPy. Kernels are the *.cu files beside this module (one per op family, sharing common.cuh);
each file is compiled once per process by NVRTC (build.py says why not cupy.RawModule), loaded as a CuPy module,
and its extern "C" entry points are launched with (dst, src0, ..., params): the raw buffers plus the 75-word
parameter block of backends/base.py on the device.

CuPy is imported only when the backend is created, so importing this module never fails on a machine without a GPU;
there, `python -m backends.cuda.compile_check` proves every kernel compiles.
"""
from __future__ import annotations

import numpy as np

from reference.node import Node
from reference.ops import REGISTRY
from reference.tensor import DType

from ..base import Backend, Replay, param_block, pow2_at_least
from .build import compile_program, device_arch, nvrtc, program_source

# op -> entry point in its family's file (backends/cuda/<family>.cu). {src}/{dst} in an entry point are the operand
# types (f32, f16, or a quantized type of quants.cuh: q8_0, q4_K, ...); {cols} is GATED_DELTA_NET's block width
# (GDN_COLUMNS).
KERNELS = {
    "ACC": "acc_f32",
    "SET": "set_b32",  # f32 and i32 alike: raw 32-bit words
    "CUMSUM": "cumsum_f32",
    "TRI": "tri_f32",
    "FILL": "fill_f32",
    "DIAG": "diag_f32",
    "SOLVE_TRI": "solve_tri_f32",
    "SSM_CONV": "ssm_conv_f32",
    "L2_NORM": "l2_norm_f32",
    "RMS_NORM": "rms_norm_f32",
    "SOFTPLUS": "softplus_f32",
    "SIGMOID": "sigmoid_f32",
    "SILU": "silu_f32",
    "EXP": "exp_f32",
    "NEG": "neg_f32",
    "SCALE": "scale_f32",
    "ADD": "add_f32",
    "SUB": "sub_f32",
    "MUL": "mul_f32",
    "DIV": "div_f32",
    "CPY": "cpy_{src}_{dst}",
    "CONT": "cpy_{src}_{dst}",
    "MUL_MAT": "mul_mat_{src}",  # a f32, f16 or quantized; b, dst f32
    "REPEAT": "repeat_b32",
    "PAD": "pad_b32",
    "GATED_DELTA_NET": "gated_delta_net_c{cols}",
    "MUL_MAT_ID": "mul_mat_id_{src}",  # experts f32, f16 or quantized; b, dst f32; ids i32
    "GET_ROWS": "get_rows_{src}",  # a f32, f16 or quantized; ids i32; dst f32
    "ARGSORT": "argsort_f32",
    "TOP_K": "top_k_f32",
    "SOFT_MAX_EXT": "soft_max_f32",
    "CONCAT": "concat_b32",
    "SUM_ROWS": "sum_rows_f32",
    "CLAMP": "clamp_f32",
}
# ACC/SET in place (dst is a itself): entry points that walk b's elements alone, as nothing else changes.
IN_PLACE = {"ACC": "acc_f32_in_place", "SET": "set_b32_in_place"}
# Quantized weights times at most MMV_COLUMNS columns of b (MUL_MAT's M, MUL_MAT_ID's tokens; matmul.cu MMV_COLS):
# the mat-vec entry points, one warp per weight row, which stream the blocks once (decode). More columns: the tiles.
MAT_VEC = {"MUL_MAT": "mul_mat_vec_{src}", "MUL_MAT_ID": "mul_mat_id_vec_{src}"}
MMV_COLUMNS = 8
QCHUNK = 8  # quants.cuh: elements a quantized GET_ROWS thread dequantizes together
# The quantized types each op's kernels read or write (quants.cuh has every type of reference.tensor.QUANTIZED):
# src0 of the matmuls and GET_ROWS, and CPY's f32 -> q8_0 / q4_0 (cpy.cu).
QUANTIZED_SRC0 = ("MUL_MAT", "MUL_MAT_ID", "GET_ROWS")
QUANTIZE_TO = (DType.Q8_0, DType.Q4_0)
PLAIN_TYPES = (DType.F32, DType.F16, DType.I32)
assert set(KERNELS) == set(REGISTRY), f"CUDA kernels missing for {sorted(set(REGISTRY) - set(KERNELS))}"
# Entry points that run one block per row of src0's ne0 (a block-wide scan, sum or sort) -> elements a thread takes
# per pass (cumsum.cu ITEMS; a sort comparator takes 2). MUL_MAT runs one block per dst tile, MUL_MAT_ID one per
# (dst tile of n, expert), their mat-vec entry points (MAT_VEC) one warp per weight row of each batch (MUL_MAT) or per
# dst element (MUL_MAT_ID), GATED_DELTA_NET one block per (head, seq); all other entry points run one thread per item
# (a quantized GET_ROWS one per QCHUNK elements, a quantizing CPY one per block).
# Every kernel loops grid-stride over its items, so the grid may be capped.
ROW_KERNELS = {"cumsum_f32": 4, "l2_norm_f32": 1, "rms_norm_f32": 1, "sum_rows_f32": 1, "soft_max_f32": 1,
               "argsort_f32": 2, "top_k_f32": 2}
MATMUL_TILE, MATMUL_THREADS = 64, 256  # matmul.cu: one block of 256 threads per 64 x 64 tile of dst
GDN_COLUMNS = (32, 64, 128)  # gated_delta_net.cu entry points: threads per block, one per state column (S <= cols)

BLOCK = 256
INT_LIMIT = 2**31  # kernels index elements with int (offsets with 64-bit)

# (file, quantized type or None, arch) -> cupy.cuda.function.Module, shared by every backend instance of the process
_MODULES: dict = {}


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def _mat_vec(node: Node) -> bool:
    """Whether a matmul node runs on the mat-vec entry points: quantized weights and few columns of b."""
    if node.op.name not in MAT_VEC or not node.srcs[0].dtype.quantized:
        return False
    columns = node.srcs[1].ne[1] if node.op.name == "MUL_MAT" else node.srcs[1].ne[2]
    return columns <= MMV_COLUMNS


def _quant_type(node: Node) -> str | None:
    """The quantized type whose entry points the node's module is built with (src0's, for the ops that read one),
    None for plain types."""
    src0 = node.srcs[0].dtype
    return src0.label if node.op.name in QUANTIZED_SRC0 and src0.quantized else None


def quant_define(label: str | None) -> str:
    """The macro definition that gives a module the entry points of one quantized type (quants.cuh FOR_EACH_QUANT),
    or of none: a process compiles the ten types' 40 matmul kernels only for the types its nodes use."""
    return f"FOR_EACH_QUANT(X)={f'X({label})' if label else ''}"


def _unsupported_types(node: Node) -> str | None:
    """Why the node's types have no kernel here, None when they have one."""
    if any(t.dtype not in PLAIN_TYPES and not t.dtype.quantized for t in node.tensors):
        return f"{', '.join(t.dtype.label for t in node.tensors)}: CUDA kernels read f32, f16, i32 and quantized types"
    quantized = [t for t in node.tensors if t.dtype.quantized]
    if not quantized:
        return None
    if node.op.name in QUANTIZED_SRC0 and quantized == [node.srcs[0]]:
        return None
    if node.op.name == "CPY" and node.dst.dtype in QUANTIZE_TO and node.srcs[0].dtype == DType.F32:
        return None
    return (f"{node.op.name} {' -> '.join(t.dtype.label for t in [*node.srcs, node.dst])}: quantized kernels are "
            f"{'/'.join(QUANTIZED_SRC0)} with quantized src0 and CPY f32 -> "
            f"{'/'.join(t.label for t in QUANTIZE_TO)}")


def _gdn_columns(node: Node) -> int | None:
    """GATED_DELTA_NET's block width: the narrowest entry point whose threads cover the S value columns."""
    if node.op.name != "GATED_DELTA_NET":
        return None
    return next((c for c in GDN_COLUMNS if c >= node.srcs[2].ne[0]), None)


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self):
        super().__init__()
        import cupy  # only here: a CPU machine can import this module
        self.cp = cupy
        self.props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        self.max_blocks = 64 * self.props["multiProcessorCount"]  # grid-stride loops cover the rest
        self.arch = device_arch(self.props["major"], self.props["minor"])

    # ---- buffers ------------------------------------------------------------------------------------------------
    def _alloc(self, nbytes):
        return self.cp.empty(nbytes, dtype=self.cp.uint8)

    def _free(self, buf):
        buf.handle = None  # back to CuPy's memory pool

    def write(self, buf, data):
        buf.handle.set(np.ascontiguousarray(data).view(np.uint8).reshape(-1))

    def read(self, buf):
        return buf.handle.get()

    # ---- ops ----------------------------------------------------------------------------------------------------
    def _kernel(self, node: Node) -> tuple[str, str]:
        """(kernel file, entry point) of the node."""
        entry = IN_PLACE[node.op.name] if _in_place(node) else MAT_VEC[node.op.name] if _mat_vec(node) \
            else KERNELS[node.op.name]
        return f"{node.op.family}.cu", entry.format(src=node.srcs[0].dtype.label, dst=node.dst.dtype.label,
                                                    cols=_gdn_columns(node))

    def kernel_path(self, node: Node) -> str:
        return self._kernel(node)[1]

    def supports(self, node):
        for t in node.tensors:
            if t.nelements >= INT_LIMIT:
                return f"{t.describe()} has {t.nelements} elements; kernels index elements with 32-bit ints"
        if node.op.name == "GATED_DELTA_NET" and node.srcs[2].ne[0] > GDN_COLUMNS[-1]:
            return f"head size S={node.srcs[2].ne[0]}: a thread holds one state column of at most {GDN_COLUMNS[-1]}"
        return _unsupported_types(node)

    def _function(self, file: str, entry: str, quant: str | None = None):
        key = (file, quant, self.arch)
        if key not in _MODULES:
            code, log = compile_program(program_source(file), file, self.arch, [quant_define(quant)])
            if code is None:
                raise RuntimeError(f"NVRTC failed on {file} for {self.arch}:\n{log}")
            module = self.cp.cuda.function.Module()
            module.load(code)  # a cubin, or PTX the driver compiles
            _MODULES[key] = module
        return _MODULES[key].get_function(entry)

    def _launch_shape(self, node: Node, entry: str) -> tuple[int, int]:
        """(blocks, threads per block); blocks == 0 when there is nothing to do."""
        dst = node.dst
        if entry in ROW_KERNELS:
            src = node.srcs[0]
            rows = src.ne[1] * src.ne[2] * src.ne[3]
            per_thread = -(-src.ne[0] // ROW_KERNELS[entry])
            threads = min(BLOCK, max(32, pow2_at_least(per_thread)))  # whole warps: the block scan needs them
            return (min(rows, self.max_blocks) if dst.nelements else 0), threads
        if _mat_vec(node):
            warps = dst.ne[0] * dst.ne[2] * dst.ne[3] if node.op.name == "MUL_MAT" else dst.nelements
            return (min(_ceil_div(warps, MATMUL_THREADS // 32), self.max_blocks) if dst.nelements else 0), \
                MATMUL_THREADS
        if node.op.name == "MUL_MAT":
            tiles = _ceil_div(dst.ne[0], MATMUL_TILE) * _ceil_div(dst.ne[1], MATMUL_TILE) * dst.ne[2] * dst.ne[3]
            return min(tiles, self.max_blocks), MATMUL_THREADS
        if node.op.name == "MUL_MAT_ID":
            items = _ceil_div(dst.ne[0], MATMUL_TILE) * node.srcs[0].ne[2]  # (n tile, expert)
            return (min(items, self.max_blocks) if dst.nelements else 0), MATMUL_THREADS
        if node.op.name == "GATED_DELTA_NET":
            v = node.srcs[2]
            return min(v.ne[1] * v.ne[3], self.max_blocks), _gdn_columns(node)  # (head, seq) pairs
        items = dst.ne[0] * dst.ne[2] * dst.ne[3] if node.op.name == "SOLVE_TRI" else dst.nelements  # (col, batch)
        if entry in IN_PLACE.values():
            items = node.srcs[1].nelements
        elif node.op.name == "GET_ROWS" and node.srcs[0].dtype.quantized:
            items = dst.nelements // QCHUNK
        elif dst.dtype.quantized:  # CPY quantizing: a thread per block
            items = dst.nelements // dst.dtype.block
        return min(_ceil_div(items, BLOCK), self.max_blocks), BLOCK

    def _prepare(self, node):
        file, entry = self._kernel(node)
        function = self._function(file, entry, _quant_type(node))
        params = self.cp.asarray(param_block(node))
        args = tuple(t.buffer.handle for t in node.tensors) + (params,)
        blocks, threads = self._launch_shape(node, entry)
        if blocks == 0:
            return lambda: None

        def run():
            function((blocks,), (threads,), args)
        return run

    def synchronize(self):
        self.cp.cuda.get_current_stream().synchronize()

    def record(self, nodes, inputs, outputs):
        return CudaReplay(self, nodes)

    def memory_limits(self) -> dict:
        return {"device": (int(self.props["totalGlobalMem"]), "the GPU's memory (totalGlobalMem)"), "max_alloc": None,
                "host_memory": False}

    def device_info(self):
        runtime = self.cp.cuda.runtime
        driver, rt = runtime.driverGetVersion(), runtime.runtimeGetVersion()
        name = self.props["name"]
        return {
            "device": (name.decode() if isinstance(name, bytes) else str(name))
            + f" (sm_{self.props['major']}{self.props['minor']}, {self.props['multiProcessorCount']} SMs)",
            "driver": f"CUDA driver {driver // 1000}.{driver % 1000 // 10}, runtime {rt // 1000}.{rt % 1000 // 10}, "
                      f"CuPy {self.cp.__version__}, NVRTC {'.'.join(map(str, nvrtc().getVersion()))} {self.arch}",
        }

    def library_matmul(self, m, n, k):
        """cuBLAS (through cupy.matmul) on the same shape: the GFLOPS ceiling for MUL_MAT figures."""
        a = self.cp.random.random((m, k), dtype=self.cp.float32)
        b = self.cp.random.random((k, n), dtype=self.cp.float32)
        out = self.cp.empty((m, n), dtype=self.cp.float32)
        return lambda: self.cp.matmul(a, b, out=out)

    stream_source = "CUDA kernels (backends/cuda/stream.cu)"

    def _stream(self, kernel, arrays, n, scalar):
        function = self._function("stream.cu", f"stream_{kernel}")
        params = self.cp.asarray(np.array([n, np.float32(scalar).view(np.int32)], dtype=np.int32))
        handles = [b.handle for b in arrays]
        args = (*handles, *handles[:1] * (3 - len(handles)), params)  # inputs a kernel does not read: out
        blocks = min(_ceil_div(n, BLOCK), self.max_blocks)

        def run():
            function((blocks,), (BLOCK,), args)
        return run

    def last_level_cache_bytes(self) -> int | None:
        return int(self.props["l2CacheSize"]) or None


def _in_place(node: Node) -> bool:
    return node.op.name in IN_PLACE and node.inplace


class CudaReplay(Replay):
    """The prepared launches back to back on the current stream (arguments and parameter blocks on the device since
    compile time); profile() brackets each with CUDA events. Not yet captured as a CUDA graph."""

    timer = "CUDA events"

    def profile(self, writes) -> list[int]:
        cuda = self.backend.cp.cuda
        for buf, data in writes.items():
            self.backend.write(buf, data)
        marks = [cuda.Event() for _ in range(len(self.launches) + 1)]
        marks[0].record()
        for launch, mark in zip(self.launches, marks[1:]):
            launch()
            mark.record()
        marks[-1].synchronize()
        return [int(1e6 * cuda.get_elapsed_time(a, b)) for a, b in zip(marks, marks[1:])]


def create() -> CudaBackend:
    return CudaBackend()
