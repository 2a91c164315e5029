"""The CUDA backend without a GPU: every kernel file compiles cleanly (no errors, no warnings) through NVRTC, and
every op's kernel computes the upstream cases (and a few tiling edge cases) right when emulated on the host, the
quantized ones (quants.cuh, every type on every path) included.

CUDA kernels only run on an NVIDIA GPU. Compilation is checked for the PTX target (compute_80) and through ptxas for
Hopper (sm_90), which also checks the inline PTX of the f16 conversions; broken sources must be reported with their
compiler log. The emulated runs go through the real runtime's kernel table and launch shapes. Any CuPy for CUDA 12 or
13 must do: the target and the NVRTC library are chosen by pure functions, checked here for both.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.base import MUTANT_ENV
from backends.cuda import GDN_COLUMNS, IN_PLACE, KERNELS, MAT_VEC, QUANTIZE_TO, QUANTIZED_SRC0, quant_define
from backends.cuda.compile_check import compile_all, compile_source
from backends.cuda.build import (CHECK_ARCH, compile_program, kernel_files, kernel_source, nvrtc,
                                 nvrtc_library_candidates, nvrtc_options, program_source, select_arch)
from reference.case import Case, Input, Layout
from reference.node import Node, make_node
from reference.ops import REGISTRY, get_op
from reference.quants import quantize
from reference.tensor import QUANTIZED, DType, Tensor

from .harness import run_case

FILES = kernel_files()
F16, I32 = DType.F16, DType.I32


def _nvrtc_or_skip():
    try:
        return nvrtc()
    except Exception as err:  # CuPy or NVRTC missing (the cuda extra) is a missing runtime: a skip with the reason
        pytest.skip(f"NVRTC through CuPy not usable here: {err!r}")


@pytest.mark.parametrize("file", FILES, ids=[f"cuda-compile-{f}" for f in FILES])
def test_kernel_file_compiles(file):
    _nvrtc_or_skip()
    result = compile_source(program_source(file), file, "compute_80")
    assert result.ok, f"{file} (compute_80):\n{result.log}"


@pytest.mark.parametrize("file", FILES, ids=[f"cuda-sm90-{f}" for f in FILES])
def test_kernel_file_assembles_for_hopper(file):
    _nvrtc_or_skip()
    result = compile_source(program_source(file), file, "sm_90")
    assert result.ok, f"{file} (sm_90, through ptxas):\n{result.log}"


def test_cuda_compile_all_covers_every_program():
    _nvrtc_or_skip()
    results = compile_all()
    assert [r.file for r in results] == FILES
    assert all(r.ok for r in results), "\n".join(f"{r.file}: {r.log}" for r in results if not r.ok)


def test_cuda_kernel_table_names_existing_entry_points():
    """Every op's entry point (and in-place entry) is in its family's file; every file is some family's, but
    stream.cu (the bandwidth ceiling's kernels, not an op's)."""
    assert {f"{op.family}.cu" for op in REGISTRY.values()} == set(FILES) - {"stream.cu"}
    for op, entry in [*KERNELS.items(), *IN_PLACE.items()]:
        file = f"{REGISTRY[op].family}.cu"
        names = [entry.format(src=s, dst=d, cols=c)
                 for s in ("f32", "f16") for d in ("f32", "f16") for c in GDN_COLUMNS]
        text = kernel_source(file)
        assert any(f"void {n}(" in text for n in names), f"{entry} is not an entry point of {file}"


def _entry_points(file: str, defines=()) -> set[str]:
    """The extern "C" entry points of a kernel file as the compiler sees it (macros expanded, by NVRTC's PTX)."""
    code, log = compile_program(program_source(file), file, "compute_80", defines)
    assert code is not None and not log, log
    return set(re.findall(r"\.entry (\w+)\(", code.decode()))


def test_cuda_quantized_entry_points_exist():
    """Every quantized type the registry lets reach a kernel has each entry point the runtime may pick: the tiled and
    mat-vec matmuls (MUL_MAT, MUL_MAT_ID) and GET_ROWS for every type of reference.tensor.QUANTIZED, and CPY's
    quantizing copies. Read from the compiled PTX, so a type missing from FOR_EACH_QUANT fails here."""
    _nvrtc_or_skip()
    for op in QUANTIZED_SRC0:
        assert set(get_op(op).src_dtypes[0]) - {DType.F32, DType.F16} <= set(QUANTIZED), op
        entries = _entry_points(f"{REGISTRY[op].family}.cu")
        for t in QUANTIZED:
            wanted = {KERNELS[op].format(src=t.label)} | ({MAT_VEC[op].format(src=t.label)} if op in MAT_VEC else set())
            assert wanted <= entries, f"{op} {t.label}: missing {sorted(wanted - entries)}"
    assert {f"cpy_f32_{t.label}" for t in QUANTIZE_TO} <= _entry_points("cpy.cu")


def test_cuda_module_per_quantized_type():
    """The runtime builds matmul.cu and get_rows.cu once per quantized type its nodes use (quant_define), with that
    type's entry points beside the plain ones, and with none for plain nodes; the file alone has every type."""
    _nvrtc_or_skip()
    plain = {"mul_mat_f32", "mul_mat_f16", "mul_mat_id_f32", "mul_mat_id_f16"}
    assert _entry_points("matmul.cu", [quant_define(None)]) == plain
    assert _entry_points("matmul.cu", [quant_define("q4_K")]) == plain | {
        "mul_mat_q4_K", "mul_mat_vec_q4_K", "mul_mat_id_q4_K", "mul_mat_id_vec_q4_K"}
    assert _entry_points("get_rows.cu", [quant_define("q5_1")]) == {"get_rows_f32", "get_rows_f16", "get_rows_q5_1"}


@pytest.mark.parametrize("source, needle", [
    ('extern "C" __global__ void k(float* x) { x[0] = 1.0f }', "error"),  # syntax error
    ('extern "C" __global__ void k(float* x) { int unused; x[0] = 1.0f; }', "warning"),  # a warning fails too
    ('#include "common.cuh"\nextern "C" __global__ void k(float* x) { x[0] = undefined_helper(); }', "error"),
], ids=["cuda-reports-syntax-error", "cuda-reports-warning", "cuda-reports-error-after-header"])
def test_cuda_compile_check_reports_bad_source(source, needle):
    _nvrtc_or_skip()
    result = compile_source(kernel_source("bad.cu", text=source), "bad.cu")
    assert not result.ok
    assert needle in result.log and "bad.cu" in result.log, result.log


def test_cuda_compile_check_accepts_good_source():
    _nvrtc_or_skip()
    result = compile_source(kernel_source("good.cu", text='#include "common.cuh"\n'
                                          'extern "C" __global__ void k(float* x, const int* p) '
                                          '{ x[0] = op_float(p, 0); }'), "good.cu")
    assert result.ok, result.log


# ---- CUDA 12 and 13 alike: which target and which libnvrtc, as pure functions (no GPU, no NVRTC needed) ----------
# The targets NVRTC reports (nvrtcGetSupportedArchs): 12.9 and 13.0 as read from their pip wheels' libraries; and an
# NVRTC from before Blackwell (CUDA 12.0-12.6 end at sm_90).
NVRTC_12_4 = (50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90)
NVRTC_12_9 = (50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 120, 121)
NVRTC_13_0 = (75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121)


@pytest.mark.parametrize("supported, version", [(NVRTC_12_9, (12, 9)), (NVRTC_13_0, (13, 0)), (NVRTC_13_0, (13, 5))],
                         ids=["cuda-arch-h200-nvrtc-12.9", "cuda-arch-h200-nvrtc-13.0", "cuda-arch-h200-nvrtc-13.5"])
def test_cuda_arch_h200_gets_its_own_cubin(supported, version):
    # The H200 (and H100) is compute capability 9.0: its own cubin, whatever CUDA 12 or 13 NVRTC CuPy brings, also
    # when NVRTC is newer than the driver (the 13.0 driver 580), where PTX would not load.
    assert select_arch(90, supported, version, driver_version=13000) == "sm_90"
    assert select_arch(90, supported, version, driver_version=None) == "sm_90"


def test_cuda_arch_chip_newer_than_nvrtc_gets_ptx():
    # A Blackwell chip (12.0) with NVRTC 12.4: PTX of the newest target NVRTC knows, which the driver compiles ...
    assert select_arch(120, NVRTC_12_4, (12, 4), driver_version=12080) == "compute_90"
    assert select_arch(89, NVRTC_12_4, (12, 4)) == "sm_89"
    # ... unless that PTX is newer than the driver can read: refused with the reason, not a CUDA error at load time
    with pytest.raises(ValueError, match=r"driver for CUDA 12\.4 or newer; this driver is for CUDA 12\.2"):
        select_arch(120, NVRTC_12_4, (12, 4), driver_version=12020)


def test_cuda_arch_chip_older_than_nvrtc_is_refused_by_name():
    # CUDA 13 dropped sm_50..sm_72: a V100 (7.0) with cupy-cuda13x is refused, saying what would work
    with pytest.raises(ValueError, match=r"sm_70: its oldest target is sm_75.*cupy-cuda12x"):
        select_arch(70, NVRTC_13_0, (13, 0), driver_version=13000)
    assert select_arch(70, NVRTC_12_9, (12, 9), driver_version=13000) == "sm_70"
    with pytest.raises(ValueError, match="no supported targets"):
        select_arch(90, ())


def test_cuda_arch_nvrtc_of_a_newer_cuda_major_than_the_driver_is_refused():
    # NVRTC 13's code is for CUDA 13 drivers (580 and later): on a CUDA 12.8 driver, say so instead of failing to load
    with pytest.raises(ValueError, match=r"CUDA 13 drivers; this driver is for CUDA 12\.8"):
        select_arch(90, NVRTC_13_0, (13, 0), driver_version=12080)
    assert select_arch(90, NVRTC_12_9, (12, 9), driver_version=(13, 0)) == "sm_90"  # an older NVRTC is fine


def test_cuda_check_arch_is_a_target_of_every_nvrtc():
    # The compile check's default target and the Hopper check must exist in CUDA 12.x and 13.x alike
    for supported in (NVRTC_12_4, NVRTC_12_9, NVRTC_13_0):
        assert int(CHECK_ARCH.split("_")[1]) in supported and 90 in supported


def test_cuda_nvrtc_options():
    assert nvrtc_options("sm_90") == ["-arch=sm_90", "-std=c++17", "-ftz=false", "-prec-div=true", "-prec-sqrt=true"]
    assert nvrtc_options("compute_80")[0] == "-arch=compute_80" and nvrtc_options("sm_90a")[0] == "-arch=sm_90a"
    for bad in ("sm90", "-arch=sm_90", "compute_", "native", "sm_90 -G"):
        with pytest.raises(ValueError, match="not an NVRTC target"):
            nvrtc_options(bad)


def test_cuda_nvrtc_library_candidates(tmp_path):
    """The pip wheels' layouts of CUDA 13 (nvidia/cu13/lib) and CUDA 12 (nvidia/cuda_nvrtc/lib) and a toolkit's
    lib64, CuPy's own major first; NVRTC's helper libraries are never candidates."""
    def touch(rel):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
        return tmp_path / rel
    cu13 = touch("site-packages/nvidia/cu13/lib/libnvrtc.so.13")
    cu12 = touch("site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12")
    for helper in ("nvidia/cu13/lib/libnvrtc-builtins.so.13.0", "nvidia/cu13/lib/libnvrtc.alt.so.13",
                   "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9", "nvidia/cuda_nvrtc/lib/libnvrtc.alt.so.12"):
        touch("site-packages/" + helper)
    toolkit = touch("cuda-13.0/lib64/libnvrtc.so.13.0.88")
    sites, roots = [tmp_path / "site-packages", tmp_path / "missing"], [tmp_path / "cuda-13.0"]
    assert nvrtc_library_candidates([13, 12], sites, roots) == [cu13, toolkit, cu12]
    assert nvrtc_library_candidates([12, 13], sites, roots) == [cu12, cu13, toolkit]
    assert nvrtc_library_candidates([12], sites, []) == [cu12]
    assert nvrtc_library_candidates([11], sites, roots) == []


def test_cuda_loaded_nvrtc_builds_for_hopper():
    # Whichever NVRTC CuPy loaded here (12.x on CI, 13.x on the GPU machine) knows the default check target and the
    # H200, so the runtime gives the H200 its own cubin.
    rtc = _nvrtc_or_skip()
    supported = rtc.getSupportedArchs()
    assert int(CHECK_ARCH.split("_")[1]) in supported
    assert select_arch(90, supported, tuple(rtc.getVersion())) == "sm_90"


def test_cuda_probe_gives_a_reason():
    # Without a usable GPU the cuda backend is a skip whose reason says what is missing (CuPy, the device, NVRTC)
    from backends import availability
    reason = availability("cuda")
    if reason is None:
        pytest.skip("a CUDA device and NVRTC are usable here")
    assert reason.startswith("cuda runtime not usable here: "), reason
    assert any(s in reason for s in ("no CUDA device", "No module named 'cupy'", "NVRTC", "cannot build")), reason


# ---- kernel logic on the CPU: the real runtime (kernel table, launch shapes) with kernels built by the host C++
# compiler against host_emulation.h. Not a GPU run: it checks indexing, views, tiling and carries, not warps or ptxas.
def _extra_cases(op):
    """Shapes the pinned cases leave out but the kernels' tiling depends on: GATED_DELTA_NET head sizes that are not
    a block width (1, 48, 100: idle columns and zero-held keys) with shared and permuted q/k heads; MUL_MAT tails
    (K, N, M not multiples of the tiles), an f16 a transposed, a strided b, and batch broadcast in ne2 and ne3;
    MUL_MAT_ID with more (e, t) pairs than one window and more than one column tile per expert, transposed and
    strided experts and b; rows past the shared-memory sort (the rank count); GET_ROWS from a permuted f16 a; masks
    broadcast in ne2 or ne3, with spare rows and padding. Quantized weights: the mat-vec paths with broadcast, a
    transposed or padded b and their most columns (8), the tiles with tails and 9 columns, a permuted quantized
    table, quantizing copies from transposed and padded sources."""
    from reference.ops.gated_delta_net import gdn_inputs
    if op == "GATED_DELTA_NET":
        return [Case.of(op, *gdn_inputs(S, H, T, n, kda, h_k, permuted), seed=S)
                for S, H, T, n, kda, h_k, permuted in ((1, 3, 5, 2, True, 1, False), (48, 4, 5, 2, True, 2, True),
                                                       (100, 2, 4, 1, False, 1, False))]
    if op == "MUL_MAT":
        t, strided = Layout(permute=(1, 0, 2, 3)), Layout(pad=(3, 1, 0, 0), offset=5)
        return [Case.of(op, Input((100, 70, 2, 1), F16, t), Input((100, 65, 4, 3), layout=strided)),
                Case.of(op, Input((257, 30, 1, 2), layout=Layout(permute=(0, 2, 1, 3))),
                        Input((257, 3, 2, 2), layout=t)),
                # quantized mat-vec: broadcast in ne2 and ne3, b transposed (k not unit stride), more warp rows than
                # the emulation's blocks hold (grid-stride), and the most columns it takes (8)
                Case.of(op, Input((256, 20, 2, 1), DType.Q4_K), Input((256, 5, 4, 3), layout=t)),
                Case.of(op, Input((64, 9, 1, 2), DType.Q5_0), Input((64, 8, 3, 2), layout=strided)),
                # quantized tiles: n and m tails past one tile, a padded b at an offset, broadcast; 9 columns
                Case.of(op, Input((64, 70, 1, 2), DType.Q4_1, Layout(pad=(32, 0, 0, 0), offset=32)),
                        Input((64, 65, 3, 2), layout=strided)),
                Case.of(op, Input((256, 16), DType.Q3_K), Input((256, 9), layout=t))]
    if op == "MUL_MAT_ID":
        t = Layout(permute=(1, 0, 2, 3))
        return [Case.of(op, Input((33, 70, 3), F16, t), Input((33, 2, 600), layout=Layout(pad=(1, 0, 0, 0), offset=3)),
                        Input((4, 600), DType.I32)),
                Case.of(op, Input((20, 9, 5), layout=Layout(pad=(0, 2, 0, 0), offset=1)), Input((20, 3, 7), layout=t),
                        Input((3, 7), DType.I32, t)),
                *_quantized_mat_vec_id_cases()]
    if op in ("ARGSORT", "TOP_K"):
        return [Case.of(op, Input((5000, 2)), **({"order": "DESC"} if op == "ARGSORT" else {"k": 9}))]
    if op == "GET_ROWS":
        return [Case.of(op, Input((5, 17, 2, 3), F16, Layout(permute=(0, 2, 1, 3))),
                        Input((6, 2, 3), DType.I32, Layout(permute=(1, 0, 2, 3)))),
                # a quantized table's planes swapped (row and plane strides not in order), ids transposed
                Case.of(op, Input((64, 5, 3, 2), DType.Q5_1, Layout(permute=(0, 2, 1, 3))),
                        Input((6, 3, 2), DType.I32, Layout(permute=(1, 0, 2, 3))))]
    if op == "CPY":  # quantizing a transposed source into rows of another length, and a padded one at an offset
        return [Case.of(op, Input((32, 64), layout=Layout(permute=(1, 0, 2, 3))), dtype="q4_0", ne=[64, 32]),
                Case.of(op, Input((96, 3, 2), layout=Layout(pad=(1, 0, 0, 0), offset=3)), dtype="q8_0")]
    if op == "SOFT_MAX_EXT":
        return [Case.of(op, Input((37, 3, 2, 3)), Input(mask, layout=Layout(pad=(2, 0, 0, 0), offset=1)), scale=0.3)
                for mask in ((37, 6, 1, 3), (37, 3, 2, 1))]
    return []


def _quantized_mat_vec_id_cases():
    """MUL_MAT_ID's quantized mat-vec (few tokens): b broadcast over the slots (n_b1 = 1) with a padded expert stack,
    and b per slot, transposed, at the most tokens it takes (8) with transposed ids."""
    t = Layout(permute=(1, 0, 2, 3))
    return [Case.of("MUL_MAT_ID", Input((512, 20, 6), DType.Q4_K, Layout(pad=(256, 0, 0, 0), offset=256)),
                    Input((512, 1, 3)), Input((4, 3), I32)),
            Case.of("MUL_MAT_ID", Input((64, 12, 5), DType.Q5_0), Input((64, 2, 8), layout=t), Input((2, 8), I32, t))]


def _emulated_cases(op):
    # Block-wide scans, sums, sorts and tiles are slow to emulate (OS threads and barriers), so some ops run a part
    # of their pinned cases.
    if op == "MUL_MAT_ID":  # the upstream experts are 256 x 512: one of those (b columns per slot), the quantized
        # ones, then small ones
        return [c for c in get_op(op).pinned()
                if c.inputs[1].ne[1:3] == (4, 1) or c.inputs[0].dtype.quantized] + _extra_cases(op)
    cases = get_op(op).pinned() + _extra_cases(op)
    if op in ("ARGSORT", "TOP_K"):  # rows of 2^n and not, of one block's comparators and past them, the widest
        # upstream row, Kimi's router, and the rank count past the shared-memory sort
        return [c for c in cases if c.inputs[0].ne[0] in (7, 8, 1024, 1025, 2049, 256, 5000)]
    if op not in ("CUMSUM", "L2_NORM", "RMS_NORM", "SUM_ROWS"):
        return cases
    # Every case of the shortest row (all views and eps values) and the longest affordable row (multi-tile carries).
    shortest = min(c.inputs[0].ne[0] for c in cases)
    longest = max((c for c in cases if np.prod(c.inputs[0].ne) <= 100_000), key=lambda c: c.inputs[0].ne[0])
    return [c for c in cases if c.inputs[0].ne[0] == shortest] + [longest]


@pytest.fixture(scope="module")
def emulated():
    from backends.cuda.host_emulation import EmulatedCudaBackend, compiler
    if compiler() is None:
        pytest.skip("no host C++ compiler (g++ or clang++) to emulate CUDA kernels with")
    return EmulatedCudaBackend()


@pytest.mark.parametrize("op", sorted(REGISTRY), ids=[f"cuda-emulated-{op}" for op in sorted(REGISTRY)])
def test_kernels_on_host_emulation(emulated, op):
    for case in _emulated_cases(op):
        outcome = run_case(emulated, case)
        assert outcome.passed, outcome.report()


def test_cuda_emulated_acc_nb3_mutant_is_caught(emulated):
    """llama.cpp #19426's bug planted in acc_set.cu (the mutant acc_nb3_ignored_cuda), run on the host emulation in a
    fresh process: the 4-D case catches it; like the real bug it is right in 3-D."""
    code = ("from backends.cuda.host_emulation import EmulatedCudaBackend; from cases.harness import run_case; "
            "from reference.ops import get_op; acc = get_op('ACC').pinned(); backend = EmulatedCudaBackend(); "
            "four_d = next(c for c in acc if c.inputs[0].ne[2:] == (3, 2)); "
            "print(run_case(backend, four_d).passed, run_case(backend, acc[0]).passed)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, text=True,
                          capture_output=True, env={**os.environ, MUTANT_ENV: "acc_nb3_ignored_cuda"})
    assert done.stdout.split() == ["False", "True"], done.stdout + done.stderr


@pytest.mark.parametrize("op", ["SILU", "SIGMOID", "SOFTPLUS", "EXP"], ids=lambda op: f"cuda-emulated-denormal-{op}")
def test_cuda_emulated_denormal_results(emulated, op):
    # One element, so nothing else hides its error. With the +-150 domain these seeds draw x in (-104, -87), where
    # the result is a float32 denormal and the plain float formulas return -0 (SILU) or lose most bits.
    for seed in (25, 36, 88, 116, 273):
        outcome = run_case(emulated, Case.of(op, Input((1,)), seed=seed))
        assert outcome.passed, outcome.report()


def test_cuda_quantized_paths(emulated):
    """Quantized weights with up to 8 columns of b (MUL_MAT's M, MUL_MAT_ID's tokens) take the mat-vec entry points,
    more take the tiles; plain weights keep their tiles whatever the columns."""
    from cases.coverage import case_path
    for m, path in ((1, "mul_mat_vec_q4_K"), (8, "mul_mat_vec_q4_K"), (9, "mul_mat_q4_K")):
        assert case_path(emulated, Case.of("MUL_MAT", Input((256, 4), DType.Q4_K), Input((256, m)))) == path
    assert case_path(emulated, Case.of("MUL_MAT", Input((256, 4)), Input((256, 1)))) == "mul_mat_f32"
    for tokens, path in ((8, "mul_mat_id_vec_q8_0"), (9, "mul_mat_id_q8_0")):
        case = Case.of("MUL_MAT_ID", Input((32, 4, 3), DType.Q8_0), Input((32, 2, tokens)), Input((2, tokens), I32))
        assert case_path(emulated, case) == path


def _quantize_on(backend, x: np.ndarray, dtype: DType) -> np.ndarray:
    """x (float32 rows) copied into `dtype` by the backend's CPY; the destination's bytes."""
    src = Tensor.new(DType.F32, x.shape[::-1], backend.upload(x.view(np.uint8)))
    dst = make_node("CPY", [src], {"dtype": dtype.label}).dst
    dst = dst.with_buffer(backend.alloc(dst.nbytes()))
    backend.compute(make_node("CPY", [src], {"dtype": dtype.label}, dst=dst))
    return backend.read(dst.buffer)[:dst.nbytes()]


@pytest.mark.parametrize("dtype", QUANTIZE_TO, ids=lambda t: f"cuda-emulated-quantize-{t.label}")
def test_cuda_emulated_quantize_is_ggmls_bit_for_bit(emulated, dtype):
    """CPY f32 -> q8_0/q4_0 writes the very bytes of ggml's quantizer (reference.quants.quantize), ties included:
    blocks whose scale is 1 put x / d exactly halfway between two steps (q8_0 rounds those away from zero; q4_0
    truncates x / d + 8.5), an all-zero block has scale 0, the rest are random."""
    rng = np.random.default_rng(7)
    ties = {DType.Q8_0: np.concatenate([[127.0, -127.0], np.arange(30) - 14.5]),
            DType.Q4_0: np.concatenate([[-8.0], np.arange(31) / 2 - 7.5])}[dtype].astype(np.float32)
    x = np.concatenate([ties, np.zeros(32, np.float32), rng.standard_normal(32 * 14).astype(np.float32)])
    x = x.reshape(4, 128)
    assert np.array_equal(_quantize_on(emulated, x, dtype), quantize(x, dtype.qtype).reshape(-1))


def test_cuda_refuses_types_without_kernels(emulated):
    """A node whose types no CUDA kernel reads (bf16 weights, a quantized source to CPY, a quantizing CPY from f16)
    is unsupported with the reason, not launched on an entry point that does not exist. The registry refuses these
    nodes itself today; hand-built ones reach supports() directly."""
    def node(op, srcs, dst):
        return Node(get_op(op), srcs, dst, {})
    f32 = Tensor.new(DType.F32, (64, 4))
    refusals = [node("MUL_MAT", [Tensor.new(DType.BF16, (64, 4)), f32], Tensor.new(DType.F32, (4, 4))),
                node("CPY", [Tensor.new(DType.Q8_0, (64, 4))], f32),
                node("CPY", [Tensor.new(F16, (64, 4))], Tensor.new(DType.Q8_0, (64, 4))),
                node("CPY", [f32], Tensor.new(DType.Q4_K, (256, 1)))]
    for n in refusals:
        reason = emulated.supports(n)
        assert reason and any(t.dtype.label in reason for t in n.tensors if t.dtype != DType.F32), reason
    assert emulated.supports(node("CPY", [f32], Tensor.new(DType.Q4_0, (64, 4)))) is None


def test_cuda_sanitizer_cases():
    """The cases scripts/device-check.sh runs under compute-sanitizer (python -m backends.cuda.sanitize): up to three
    pinned cases of each reduction and scan op, smallest first (their results are checked by the emulated tests)."""
    from backends.cuda.sanitize import OPS, picked_cases

    cases = picked_cases()
    assert sorted({c.op for c in cases}) == sorted(OPS)
    assert all(sum(c.op == op for c in cases) <= 3 for op in OPS)
    sizes = [int(np.prod(c.inputs[0].ne)) for c in cases]
    assert sizes == sorted(sizes)
