"""Compile every CUDA kernel file through NVRTC without a GPU: proof on CPU machines that the kernels build.

    python -m backends.cuda.compile_check      # one line per file; exit status 1 when any file fails

CuPy's own compile paths query the device first and fail without one; NVRTC itself needs no device. A compiler
warning counts as a failure (the log is reported).
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from pathlib import Path

from .source import NVRTC_OPTIONS, kernel_files, kernel_source


@dataclass
class CompileResult:
    file: str
    ok: bool
    log: str


def _nvrtc():
    """cupy's NVRTC binding, usable. If CuPy cannot locate libnvrtc by itself, load it from the pip wheel
    (site-packages/nvidia/cuda_nvrtc/lib) first."""
    from cupy.cuda import nvrtc
    try:
        nvrtc.getVersion()
    except Exception:
        import nvidia.cuda_nvrtc
        lib_dir = Path(list(nvidia.cuda_nvrtc.__path__)[0]) / "lib"
        for lib in sorted(lib_dir.glob("libnvrtc.so*")):
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            break
        nvrtc.getVersion()
    return nvrtc


def compile_source(source: str, name: str, arch: str = "compute_80") -> CompileResult:
    """Compile CUDA C++ source text to PTX; ok only when it compiles with an empty log (no warnings)."""
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [f"-arch={arch}", *NVRTC_OPTIONS])
            compiled = bool(nvrtc.getPTX(prog))
        except nvrtc.NVRTCError as err:
            compiled = False
            error = str(err)
        log = nvrtc.getProgramLog(prog).strip(" \n\x00")
        if not compiled and not log:
            log = error
        return CompileResult(name, compiled and not log, log)
    finally:
        nvrtc.destroyProgram(prog)


def compile_all(arch: str = "compute_80") -> list[CompileResult]:
    """Every .cu file of the backend, its headers inlined as the runtime does."""
    return [compile_source(kernel_source(name), name, arch) for name in kernel_files()]


def main() -> int:
    results = compile_all()
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.file}")
        if r.log:
            print("\n".join("    " + line for line in r.log.splitlines()))
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
