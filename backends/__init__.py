"""Backend names, availability probes, per-process instances, and which backends a run uses (select, usable).

A runtime that is missing is a skip with a reason, decided by a probe that cannot crash the caller: kp aborts the
whole process when no Vulkan driver exists, so the Vulkan and CUDA probes run in a subprocess.
"""
from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository, for the cuda probe's imports

# name -> (module, probe code run in a fresh interpreter; exit 0 = usable)
BACKENDS = {
    "numpy": ("backends.numpy_backend", None),
    "opencl": ("backends.opencl", "import pyopencl as cl; assert any(p.get_devices() for p in cl.get_platforms())"),
    "vulkan": ("backends.vulkan", "import kp; kp.Manager()"),
    # a device, and an NVRTC (CUDA 12 or 13, whichever CuPy brings) that can build for it; the reason otherwise
    "cuda": ("backends.cuda", f"import sys; sys.path.insert(0, {_ROOT!r}); "
                              "from backends.cuda.build import probe; probe()"),
    "ggml": ("backends.ggml", "import ggml"),
}
KERNEL_BACKENDS = ["opencl", "vulkan", "cuda"]  # the runtimes whose kernels this project writes
# Everything the conformance tests compare with the NumPy reference: our kernels, and the real ggml CPU code as a
# second opinion on the references themselves.
TESTED_BACKENDS = KERNEL_BACKENDS + ["ggml"]


def check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return name


@functools.lru_cache(maxsize=None)
def availability(name: str) -> str | None:
    """None when the backend can run here, else why not."""
    check_name(name)
    probe = BACKENDS[name][1]
    if probe is None:
        return None
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    except subprocess.TimeoutExpired:
        return f"{name} probe timed out"
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return f"{name} runtime not usable here: {last}"


@functools.lru_cache(maxsize=None)
def get_backend(name: str):
    """The process-wide instance (one kp.Manager / cl.Context / CUDA context per process)."""
    reason = availability(name)
    if reason:
        raise RuntimeError(reason)
    return importlib.import_module(BACKENDS[name][0]).create()


def select(named: list[str], every: bool) -> list[str]:
    """Those of `named` that can run here. With `every` (the user asked for all backends) those that cannot are
    skipped with one line each on stderr (stdout may carry csv or json); one named explicitly that cannot is a
    ValueError with the probe's reason. ValueError when none can."""
    runnable = []
    for name in named:
        reason = availability(name)  # a module global, looked up at call time: tests replace it
        if reason is None:
            runnable.append(name)
        elif not every:
            raise ValueError(f"--backend {name}: it cannot run here: {reason}")
        else:
            print(f"{name}: skipped ({reason})", file=sys.stderr, flush=True)
    if not runnable:
        raise ValueError(f"--backend all: none of {', '.join(named)} can run here")
    return runnable


def usable(backends: list[str]):
    """(name, backend, device info) for each of `backends` that can run here; says why for the others, one line each
    on stderr. `select` has already refused a backend named explicitly that cannot run."""
    for name in backends:
        reason = availability(name)
        if reason:
            print(f"{name}: skipped ({reason})", file=sys.stderr, flush=True)
            continue
        backend = get_backend(name)
        yield name, backend, backend.device_info()
