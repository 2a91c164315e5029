"""Compile every CUDA kernel file through NVRTC without a GPU: proof on CPU machines that the kernels build.

    python -m backends.cuda.compile_check [ARCH ...]   # default compute_80 (PTX); sm_90 also runs ptxas
                                                       # one line per file; exit status 1 when any file fails

CuPy's own compile paths query the device first and fail without one; NVRTC itself needs no device. The sources and
options are exactly those the runtime compiles. A compiler warning counts as a failure (the log is reported).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from .build import compile_program, kernel_files, kernel_source


@dataclass
class CompileResult:
    file: str
    ok: bool
    log: str


def compile_source(source: str, name: str, arch: str = "compute_80") -> CompileResult:
    """ok only when the source compiles with an empty log (no warnings)."""
    code, log = compile_program(source, name, arch)
    return CompileResult(name, code is not None and not log, log)


def compile_all(arch: str = "compute_80") -> list[CompileResult]:
    """Every .cu file of the backend, its headers inlined as the runtime does."""
    return [compile_source(kernel_source(name), name, arch) for name in kernel_files()]


def main(archs: list[str]) -> int:
    results = []
    for arch in archs or ["compute_80"]:
        for r in compile_all(arch):
            print(f"{'ok  ' if r.ok else 'FAIL'} {r.file} ({arch})")
            if r.log:
                print("\n".join("    " + line for line in r.log.splitlines()))
            results.append(r)
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
