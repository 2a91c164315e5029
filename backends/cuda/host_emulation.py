"""The CUDA backend with its kernels run on the CPU: each .cu file is compiled by the host C++ compiler against
host_emulation.h (one OS thread per CUDA thread) and launched through the real runtime's prepare(), kernel table and
launch shapes. It checks kernel logic (views, strides, tiling, carries, in place, guards) on machines without a GPU;
it cannot check what only a GPU does (warp scheduling, the memory model, ptxas): compile_check covers the build.

    from backends.cuda.host_emulation import EmulatedCudaBackend
    run_case(EmulatedCudaBackend(), case)
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..base import Backend
from . import CudaBackend
from .build import KERNEL_DIR, program_source

CACHE_DIR = Path(tempfile.gettempdir()) / "kbo-cuda-host-emulation"
# -ffp-contract=off: __fmul_rn / __fadd_rn (host_emulation.h) must stay unfused, as on the GPU
CXX_FLAGS = ["-O1", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas",
             "-Werror"]


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("clang++")


def build(file: str) -> ctypes.CDLL:
    """The kernel file as a shared library (cached by a hash of its full source and the compiler flags)."""
    source = '#include "host_emulation.h"\n' + program_source(file)
    header = (KERNEL_DIR / "host_emulation.h").read_bytes()
    digest = hashlib.sha256(source.encode() + header + " ".join(CXX_FLAGS).encode()).hexdigest()[:16]
    lib = CACHE_DIR / f"{Path(file).stem}-{digest}.so"
    if not lib.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        cpp = CACHE_DIR / f"{Path(file).stem}-{digest}.{os.getpid()}.cpp"
        cpp.write_text(source)
        tmp = cpp.with_suffix(".so.tmp")
        done = subprocess.run([compiler(), *CXX_FLAGS, "-I", str(KERNEL_DIR), str(cpp), "-o", str(tmp)],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"host compiler failed on {file}:\n{done.stderr}")
        tmp.replace(lib)  # atomic: parallel test workers may build the same file
    return ctypes.CDLL(str(lib))


class EmulatedKernel:
    def __init__(self, lib: ctypes.CDLL, entry: str):
        self.lib = lib
        self.address = ctypes.cast(getattr(lib, entry), ctypes.c_void_p).value

    def __call__(self, grid, block, args):
        pointers = (ctypes.c_void_p * len(args))(*[a.ctypes.data for a in args])
        self.lib.emulate_launch(ctypes.c_void_p(self.address), len(args), pointers, grid[0], block[0])


class _HostArrays:
    asarray = staticmethod(np.asarray)


class EmulatedCudaBackend(CudaBackend):
    """Buffers are host arrays; few blocks per launch so the kernels' grid-stride loops are exercised too."""

    name = "cuda-emulated"

    def __init__(self, max_blocks: int = 3):
        Backend.__init__(self)
        self.cp = _HostArrays()
        self.max_blocks = max_blocks
        self.libs: dict[str, ctypes.CDLL] = {}

    def _alloc(self, nbytes):
        return np.zeros(nbytes, dtype=np.uint8)

    def write(self, buf, data):
        buf.handle[:] = data.view(np.uint8).reshape(-1)

    def read(self, buf):
        return buf.handle.copy()

    def _function(self, file, entry, quant=None):
        # every quantized type in one library: the program the compile check builds
        if file not in self.libs:
            self.libs[file] = build(file)
        return EmulatedKernel(self.libs[file], entry)

    def synchronize(self):
        pass

    def device_info(self):
        return {"device": "host CPU emulating CUDA kernels", "driver": compiler() or "no C++ compiler"}

    def last_level_cache_bytes(self):
        return Backend.last_level_cache_bytes(self)  # the host's: these kernels run on its cores
