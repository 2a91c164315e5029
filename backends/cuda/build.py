"""The CUDA kernel sources as they are compiled: a .cu file with its local `#include "..."` headers inlined.

Inlining makes the text the whole compiler input, so no include path is needed (NVRTC's pip wheel ships no CUDA
headers) and CuPy's on-disk cache, keyed by a hash of the source text, sees every header edit. `#line` markers keep
compiler messages pointing at the real file and line.
"""
from __future__ import annotations

import re
from pathlib import Path

KERNEL_DIR = Path(__file__).parent
NVRTC_OPTIONS = ("-std=c++17",)  # no fast-math: precise expf/log1pf/sqrtf and IEEE division

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
