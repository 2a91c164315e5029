"""Compile every CUDA kernel file through NVRTC without a GPU: proof on CPU machines that the kernels build.

    python -m backends.cuda.compile_check [ARCH ...]   # default compute_80 (PTX); sm_90 also runs ptxas;
                                                       # `device`: the target the runtime picks for GPU 0
                                                       # one line per file; exit status 1 when any file fails

CuPy's own compile paths query the device first and fail without one; NVRTC itself needs no device. The sources and
options are exactly those the runtime compiles, with whichever NVRTC CuPy loads (CUDA 12 or 13, see build.py).
A compiler warning counts as a failure (the log is reported).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from .build import CHECK_ARCH, compile_program, describe_nvrtc, device_arch, kernel_files, program_source


@dataclass
class CompileResult:
    file: str
    ok: bool
    log: str


def compile_source(source: str, name: str, arch: str = CHECK_ARCH) -> CompileResult:
    """ok only when the source compiles with an empty log (no warnings)."""
    code, log = compile_program(source, name, arch)
    return CompileResult(name, code is not None and not log, log)


def compile_all(arch: str = CHECK_ARCH) -> list[CompileResult]:
    """Every kernel file of the backend, as the runtime compiles it."""
    return [compile_source(program_source(file), file, arch) for file in kernel_files()]


def resolve_arch(arch: str) -> str:
    """An NVRTC target as given, or `device`: the one the runtime picks for GPU 0 (needs a GPU)."""
    if arch != "device":
        return arch
    from cupy.cuda import runtime
    props = runtime.getDeviceProperties(0)
    return device_arch(props["major"], props["minor"])


def main(archs: list[str]) -> int:
    print(describe_nvrtc())
    results = []
    for arch in [resolve_arch(a) for a in archs or [CHECK_ARCH]]:
        for r in compile_all(arch):
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.file} ({arch})")
            if r.log:
                print("\n".join("    " + line for line in r.log.splitlines()))
            results.append(r)
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
