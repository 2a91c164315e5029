"""How CUDA kernels are built, shared by the runtime and the compile check: the .cu source with its local
`#include "..."` headers inlined, compiled by NVRTC with the options below.

Inlining makes the text the whole compiler input, so no include path is needed (NVRTC's pip wheels ship no CUDA
headers for it to find); `#line` markers keep compiler messages pointing at the real file and line.

The runtime compiles through NVRTC itself rather than cupy.RawModule because RawModule always appends -ftz=true
(denormals flushed to zero): SCALE by a denormal s, or any output in the denormal range, would then come out as 0
where the float64 reference does not.

Any CuPy 13 or 14 for CUDA 12 or 13 will do (cupy-cuda12x, cupy-cuda13x, a conda CuPy). CuPy's NVRTC binding loads
a libnvrtc by itself (CuPy 14 through cuda-pathfinder); where it finds none, nvrtc() loads one from the pip wheels'
layouts (CUDA 13: site-packages/nvidia/cu13/lib, CUDA 12: nvidia/cuda_nvrtc/lib) or a toolkit (CUDA_PATH, CUDA_HOME,
/usr/local/cuda), CuPy's own CUDA major first. The target is chosen from the NVRTC actually loaded (select_arch).
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
import site
import sys
from pathlib import Path
from typing import Iterable

from ..base import kernel_text

KERNEL_DIR = Path(__file__).parent
# IEEE float32 throughout: denormals kept, correctly rounded division and sqrt, no fast-math approximations.
NVRTC_OPTIONS = ("-std=c++17", "-ftz=false", "-prec-div=true", "-prec-sqrt=true")
# The compile check's default target: PTX for Ampere, which every NVRTC from CUDA 11.0 to 13.x accepts (CUDA 13
# dropped sm_50..sm_72 as targets); `sm_90` (the H100/H200) also runs ptxas.
CHECK_ARCH = "compute_80"
CUDA_MAJORS = (13, 12)  # the NVRTC majors nvrtc() looks for when CuPy finds none, after CuPy's own

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\s*$")


def kernel_files() -> list[str]:
    """Every kernel file of the backend, by name."""
    return sorted(p.name for p in KERNEL_DIR.glob("*.cu"))


def program_source(file: str) -> str:
    """A kernel file's source as the runtime compiles it: the file with its includes inlined (and the active mutant's
    edit, kernel_text)."""
    return kernel_source(file)


def kernel_source(name: str, text: str | None = None, _seen: set | None = None) -> str:
    """`name` (a file in KERNEL_DIR, or any label when `text` is given) with local includes inlined once each."""
    seen = set() if _seen is None else _seen
    if text is None:
        text = kernel_text("cuda", KERNEL_DIR / name)
    out = [f'#line 1 "{name}"']
    for number, line in enumerate(text.splitlines(), start=1):
        include = _INCLUDE.match(line)
        if include:
            header = include.group(1)
            if header not in seen:
                seen.add(header)
                out.append(kernel_source(header, _seen=seen))
            out.append(f'#line {number + 1} "{name}"')
        elif not _PRAGMA_ONCE.match(line):  # inclusion is deduplicated above; NVRTC warns on it in a main file
            out.append(line)
    return "\n".join(out) + "\n"


# ---- finding NVRTC --------------------------------------------------------------------------------------------------
def nvrtc_library_candidates(majors: Iterable[int], site_dirs: Iterable[str | Path],
                             cuda_roots: Iterable[str | Path]) -> list[Path]:
    """libnvrtc.so.<major> files that exist, best first: for each major in order, the pip wheels' layouts in each
    site directory (CUDA 13 and later: nvidia/cu<major>/lib; CUDA 12: nvidia/cuda_nvrtc/lib), then the toolkits.
    NVRTC's helper libraries (libnvrtc-builtins, libnvrtc.alt) are not candidates."""
    found: list[Path] = []
    for major in majors:
        dirs = [Path(s) / "nvidia" / sub / "lib" for s in site_dirs for sub in (f"cu{major}", "cuda_nvrtc")]
        dirs += [Path(r) / sub for r in cuda_roots for sub in ("lib64", "lib", "targets/x86_64-linux/lib")]
        for d in dirs:
            for lib in sorted(d.glob(f"libnvrtc.so.{major}*")):
                if lib.is_file() and lib not in found:
                    found.append(lib)
    return found


def cupy_cuda_major() -> int | None:
    """The CUDA major CuPy was built for (12 for cupy-cuda12x, 13 for cupy-cuda13x); no GPU needed."""
    try:
        from cupy_backends.cuda.api import runtime
        return runtime.runtimeGetVersion() // 1000
    except Exception:  # a CuPy without its runtime library: read the distribution's name instead
        from importlib import metadata
        for dist in metadata.distributions():
            match = re.fullmatch(r"cupy-cuda(\d+)x", (dist.metadata["Name"] or "").lower())
            if match:
                return int(match.group(1))
        return None


def _site_dirs() -> list[str]:
    dirs = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    try:
        dirs += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:  # some embedded interpreters lack these
        pass
    return list(dict.fromkeys(dirs))


def _cuda_roots() -> list[str]:
    return list(dict.fromkeys(r for r in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda")
                              if r))


@functools.lru_cache(maxsize=None)
def nvrtc():
    """CuPy's NVRTC binding, usable without a GPU. If CuPy cannot locate a libnvrtc by itself, load one first (see
    the module's docstring); a library already loaded is what CuPy's binding then uses."""
    from cupy.cuda import nvrtc as binding
    try:
        binding.getVersion()
        return binding
    except Exception as err:
        first = err
    own = cupy_cuda_major()
    majors = ([own] if own else []) + [m for m in CUDA_MAJORS if m != own]
    tried = nvrtc_library_candidates(majors, _site_dirs(), _cuda_roots())
    for lib in tried:
        try:
            # NVRTC opens its builtins library by name at compile time: load it from the same folder first
            for builtins in sorted(lib.parent.glob("libnvrtc-builtins.so.*")):
                ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            binding.getVersion()
            return binding
        except Exception:
            continue
    wheel = {12: "nvidia-cuda-nvrtc-cu12"}.get(own, "nvidia-cuda-nvrtc")
    raise RuntimeError(f"CuPy (for CUDA {own}) finds no NVRTC ({first!r}); tried {[str(p) for p in tried]}: "
                       f"install {wheel} or point CUDA_PATH at a CUDA toolkit") from first


# ---- compiling ------------------------------------------------------------------------------------------------------
def nvrtc_options(arch: str) -> list[str]:
    """The whole NVRTC command line for a target: -arch=compute_XX (PTX) or -arch=sm_XX (a cubin, through ptxas)."""
    if not re.fullmatch(r"(compute|sm)_\d+[af]?", arch):
        raise ValueError(f"not an NVRTC target: {arch!r} (compute_XX for PTX, sm_XX for a cubin)")
    return [f"-arch={arch}", *NVRTC_OPTIONS]


def compile_program(source: str, name: str, arch: str, defines: Iterable[str] = ()) -> tuple[bytes | None, str]:
    """(code, compiler log); code is None when compilation failed. A virtual arch (compute_XX) gives PTX; a real
    one (sm_XX) gives a cubin, so ptxas also runs (it checks inline PTX). `defines` are -D macro definitions."""
    options = nvrtc_options(arch) + [f"-D{d}" for d in defines]
    rtc = nvrtc()
    prog = rtc.createProgram(source, name, [], [])
    failure = "the compiler returned no code"
    try:
        try:
            rtc.compileProgram(prog, options)
            code = rtc.getCUBIN(prog) if arch.startswith("sm_") else rtc.getPTX(prog)
            code = code.encode() if isinstance(code, str) else code
            if code and not arch.startswith("sm_") and not code.endswith(b"\0"):
                code += b"\0"  # the driver reads PTX as a C string
        except rtc.NVRTCError as err:
            code, failure = None, str(err)
        log = rtc.getProgramLog(prog)
        log = (log.decode() if isinstance(log, bytes) else log).strip(" \n\x00")
        return code or None, log or ("" if code else failure)
    finally:
        rtc.destroyProgram(prog)


# ---- choosing the target -----------------------------------------------------------------------------------------
def _version(v: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """(major, minor) from a tuple, or from CUDA's integer form (12090 = 12.9, 13000 = 13.0)."""
    if v is None or isinstance(v, tuple):
        return v
    return v // 1000, v % 1000 // 10


def select_arch(cc: int, supported: Iterable[int], nvrtc_version: tuple[int, int] | None = None,
                driver_version: int | tuple[int, int] | None = None) -> str:
    """The -arch for a device of compute capability `cc` (10 * major + minor; the H200 is 90), given the targets the
    loaded NVRTC knows:

    - the device's own cubin (sm_XX) when NVRTC knows the chip. A cubin also loads on a driver older than NVRTC
      within one CUDA major (CuPy may bring NVRTC 13.5 to a 13.0 driver), where PTX would not; across majors
      (NVRTC 13 on a CUDA 12 driver) it is refused with the reason;
    - else PTX of the newest target below the chip (a chip newer than NVRTC); the driver compiles that, so NVRTC
      must not be newer than the driver (CUDA_ERROR_UNSUPPORTED_PTX_VERSION): refused with the reason if it is;
    - a chip older than NVRTC's oldest target is refused by name (CUDA 13 dropped sm_50..sm_72).
    """
    supported = sorted(set(int(a) for a in supported))
    nvrtc_name = "NVRTC" + (" %d.%d" % nvrtc_version if nvrtc_version else "")
    if not supported:
        raise ValueError(f"{nvrtc_name} reports no supported targets")
    driver = _version(driver_version)
    if nvrtc_version and driver and nvrtc_version[0] > driver[0]:
        raise ValueError(f"{nvrtc_name} builds code for CUDA {nvrtc_version[0]} drivers; this driver is for CUDA "
                         f"{driver[0]}.{driver[1]}: use a CuPy and NVRTC for CUDA {driver[0]}, or a newer driver")
    if cc in supported:
        return f"sm_{cc}"
    older = [a for a in supported if a <= cc]
    if not older:
        raise ValueError(f"{nvrtc_name} cannot build for sm_{cc}: its oldest target is sm_{supported[0]}; use a CuPy "
                         f"and NVRTC for an older CUDA (cupy-cuda12x with nvidia-cuda-nvrtc-cu12 still targets sm_50+)")
    if nvrtc_version and driver and tuple(nvrtc_version) > driver:
        raise ValueError(f"{nvrtc_name} does not know sm_{cc}, and its PTX (compute_{older[-1]}) needs a driver for "
                         f"CUDA {nvrtc_version[0]}.{nvrtc_version[1]} or newer; this driver is for CUDA "
                         f"{driver[0]}.{driver[1]}: use an NVRTC that knows sm_{cc}, or one no newer than the driver")
    return f"compute_{older[-1]}"


def device_arch(major: int, minor: int, driver_version: int | None = None) -> str:
    """The -arch for a device of compute capability major.minor with the NVRTC loaded here (select_arch). The
    driver's version (cudaDriverGetVersion) is read from CuPy when not given."""
    rtc = nvrtc()
    if driver_version is None:
        try:
            from cupy.cuda import runtime
            driver_version = runtime.driverGetVersion()
        except Exception:  # no driver: the caller has no device to load code on anyway
            driver_version = None
    return select_arch(10 * major + minor, rtc.getSupportedArchs(), tuple(rtc.getVersion()), driver_version)


def describe_nvrtc() -> str:
    """One line: NVRTC's version and targets, and the CuPy that loaded it."""
    import cupy
    rtc = nvrtc()
    major, minor = rtc.getVersion()
    archs = rtc.getSupportedArchs()
    return (f"NVRTC {major}.{minor} (targets sm_{min(archs)}..sm_{max(archs)}) through CuPy {cupy.__version__} "
            f"for CUDA {cupy_cuda_major()}")


def probe() -> None:
    """The cuda backend's availability probe (backends/__init__.py runs it in a subprocess): returns when a CUDA
    device is here and the loaded NVRTC can build for it, else raises with the reason as the last line."""
    import cupy
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # no driver, no device, or a driver too old for this CuPy's CUDA
        raise RuntimeError(f"no CUDA device (cupy.cuda.is_available() is False: {err})") from None
    if count < 1:
        raise RuntimeError("no CUDA device (cupy.cuda.is_available() is False)")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    device_arch(props["major"], props["minor"])
