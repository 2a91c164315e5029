"""How CUDA kernels are built, shared by the runtime and the compile check: the .cu source with its local
`#include "..."` headers inlined, compiled by NVRTC with the options below.

Inlining makes the text the whole compiler input, so no include path is needed (NVRTC's pip wheel ships no CUDA
headers); `#line` markers keep compiler messages pointing at the real file and line.

The runtime compiles through NVRTC itself rather than cupy.RawModule because RawModule always appends -ftz=true
(denormals flushed to zero): SCALE by a denormal s, or any output in the denormal range, would then come out as 0
where the float64 reference does not.
"""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

KERNEL_DIR = Path(__file__).parent
# IEEE float32 throughout: denormals kept, correctly rounded division and sqrt, no fast-math approximations.
NVRTC_OPTIONS = ("-std=c++17", "-ftz=false", "-prec-div=true", "-prec-sqrt=true")

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_PRAGMA_ONCE = re.compile(r"^\s*#\s*pragma\s+once\s*$")


def kernel_files() -> list[str]:
    """Every kernel file of the backend, by name."""
    return sorted(p.name for p in KERNEL_DIR.glob("*.cu"))


def kernel_source(name: str, text: str | None = None, _seen: set | None = None) -> str:
    """`name` (a file in KERNEL_DIR, or any label when `text` is given) with local includes inlined once each."""
    seen = set() if _seen is None else _seen
    if text is None:
        text = (KERNEL_DIR / name).read_text()
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


def nvrtc():
    """CuPy's NVRTC binding, usable without a GPU. If CuPy cannot locate libnvrtc by itself, load it from the pip
    wheel (site-packages/nvidia/cuda_nvrtc/lib) first."""
    from cupy.cuda import nvrtc as binding
    try:
        binding.getVersion()
    except Exception:
        import nvidia.cuda_nvrtc
        lib_dir = Path(list(nvidia.cuda_nvrtc.__path__)[0]) / "lib"
        for lib in sorted(lib_dir.glob("libnvrtc.so*")):
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            break
        binding.getVersion()
    return binding


def compile_program(source: str, name: str, arch: str) -> tuple[bytes | None, str]:
    """(code, compiler log); code is None when compilation failed. A virtual arch (compute_XX) gives PTX; a real
    one (sm_XX) gives a cubin, so ptxas also runs (it checks inline PTX)."""
    rtc = nvrtc()
    prog = rtc.createProgram(source, name, [], [])
    failure = "the compiler returned no code"
    try:
        try:
            rtc.compileProgram(prog, [f"-arch={arch}", *NVRTC_OPTIONS])
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


def device_arch(major: int, minor: int) -> str:
    """The -arch for a device: its own cubin when NVRTC knows the chip, else PTX of the newest arch NVRTC knows
    below it (the driver compiles that)."""
    cc = 10 * major + minor
    supported = nvrtc().getSupportedArchs()
    if cc in supported:
        return f"sm_{cc}"
    return f"compute_{max(a for a in supported if a <= cc)}"
