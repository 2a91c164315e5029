"""Kernel path coverage: which code paths of each backend (kernel entries and compile-time specialisations,
Backend.kernel_path) the pinned cases of an op reach, and which only drawn cases reach - a path that only a lucky draw
reaches is one whose bugs the default run catches by chance. Also the support tables behind `pytest --list-ops` and
`pytest --show-coverage` (test-backend-ops' list and support modes) and `python -m bench support`.

    python -m cases.coverage [--backend opencl,vulkan] [--op MUL_MAT,ACC] [--draws 40]

Prints op | backend | paths the pinned cases reach (with their count) | paths only the drawn cases reach (with one
example); exits 1 when a drawn case reaches a path no pinned case does (cases/test_coverage.py holds OpenCL and Vulkan
to that), 2 on a bad request.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

import pandas as pd

from backends import BACKENDS, KERNEL_BACKENDS, availability, check_name, get_backend
from reference.case import Case
from reference.node import make_node
from reference.ops import REGISTRY, get_op

from .harness import bound_node, host_buffers
from .strategies import cases_for, examples

DRAWS = 40
RUNTIME_MISSING = "n/a: runtime missing"


def case_path(backend, case) -> str | None:
    """The path `backend` runs `case` through, None when it does not run it."""
    with bound_node(backend, case) as node:
        return None if backend.supports(node) else backend.kernel_path(node)


def pinned_paths(backend, op: str) -> Counter:
    """How many pinned cases of `op` run through each path of `backend`."""
    return Counter(p for p in (case_path(backend, c) for c in get_op(op).pinned()) if p is not None)


def coverage(backend, op: str, draws: int = DRAWS) -> tuple[Counter, dict[str, str]]:
    """(pinned cases per path, {path only drawn cases reach: the first such case's label})."""
    pinned = pinned_paths(backend, op)
    drawn_only: dict[str, str] = {}
    for case in examples(cases_for(op, backend), draws):
        path = case_path(backend, case)
        if path is not None and path not in pinned:
            drawn_only.setdefault(path, case.label())
    return pinned, drawn_only


# ---- support, test-backend-ops' list and support modes (pytest --list-ops, --show-coverage; bench support) --------
def case_node(case: Case):
    """The node the harness builds for `case` on host buffers: what a backend's supports() is asked about."""
    srcs, dst, _, params = host_buffers(case)
    return make_node(case.op, [s.tensor for s in srcs], params, dst=None if dst is None else dst.tensor)


def support_verdict(backend, nodes: list) -> str:
    """'yes', 'partial (k/n cases): first reason' or 'no: first reason': whether `backend` runs `nodes`."""
    refusals = [why for why in map(backend.supports, nodes) if why]
    if not refusals:
        return "yes"
    first = refusals[0] if len(refusals[0]) <= 90 else refusals[0][:87] + "..."
    kind = "no" if len(refusals) == len(nodes) else f"partial ({len(nodes) - len(refusals)}/{len(nodes)} cases)"
    return f"{kind}: {first}"


def source_types(case: Case) -> str:
    """The distinct types of the case's sources in order, e.g. 'f16,f32' for an f16 weight times f32 activations."""
    return ",".join(dict.fromkeys(inp.dtype.label for inp in case.inputs))


def judges(names: list[str]) -> dict:
    """name -> the backend that answers support and path questions, None when its runtime is missing here. A CUDA
    without a device is still judged, as 'cuda-emulated': the CUDA runtime's own supports() and kernel table over
    the host emulation, which needs no device (its kernels are compile-checked by cases/test_cuda_compile.py)."""
    found = {}
    for name in names:
        found[name] = None if availability(name) else get_backend(name)
        if name == "cuda" and found[name] is None:
            from backends.cuda.host_emulation import EmulatedCudaBackend
            found[EmulatedCudaBackend.name] = EmulatedCudaBackend()
    return found


def _missing_note(names: list[str]) -> str:
    """One line per backend whose runtime is missing here, and what stands in for CUDA."""
    lines = [f"runtime missing: {availability(name)}" for name in names if availability(name)]
    if "cuda" in names and availability("cuda"):
        lines.append("cuda-emulated: the CUDA runtime's own supports() and kernel paths, judged without a device")
    return "\n".join(lines)


def op_table(names: list[str] = tuple(BACKENDS)) -> pd.DataFrame:
    """Every registered op: family, pinned cases, the backends that run its pinned and perf cases (all, or some:
    'partial'), summary."""
    backends = {name: b for name, b in judges(list(names)).items() if b is not None}
    rows = []
    for op in sorted(REGISTRY):
        spec = REGISTRY[op]
        pinned = spec.pinned()
        nodes = [case_node(c) for c in pinned + [spec.perf]]
        verdicts = {name: support_verdict(b, nodes) for name, b in backends.items()}
        rows.append({"op": op, "family": spec.family, "pinned cases": len(pinned),
                     "backends": ", ".join(name if v == "yes" else f"{name} (partial)"
                                           for name, v in verdicts.items() if not v.startswith("no")),
                     "summary": spec.summary.replace("|", "\\|")})  # a norm's |x| must not split the markdown row
    return pd.DataFrame(rows)


def support_table(names: list[str] = tuple(BACKENDS)) -> pd.DataFrame:
    """op x source types x backend, test-backend-ops' support mode: each op's pinned and perf cases grouped by their
    source types, a support_verdict per backend, 'n/a: runtime missing' where it cannot run here."""
    backends = judges(list(names))
    rows = []
    for op in sorted(REGISTRY):
        by_types: dict[str, list] = {}
        for case in REGISTRY[op].pinned() + [REGISTRY[op].perf]:
            by_types.setdefault(source_types(case), []).append(case_node(case))
        for types, nodes in by_types.items():
            rows.append({"op": op, "types": types, **{name: RUNTIME_MISSING if b is None else support_verdict(b, nodes)
                                                      for name, b in backends.items()}})
    return pd.DataFrame(rows)


def path_table(names: list[str] = tuple(KERNEL_BACKENDS)) -> pd.DataFrame:
    """One row per (op, backend, kernel path) the op's pinned cases reach, with how many reach it."""
    backends = {name: b for name, b in judges(list(names)).items() if b is not None}
    return pd.DataFrame([{"op": op, "backend": name, "kernel path": path, "pinned cases": n}
                         for op in sorted(REGISTRY) for name, b in backends.items()
                         for path, n in sorted(pinned_paths(b, op).items())])


def list_ops_report() -> str:
    """What `pytest --list-ops` prints."""
    note = _missing_note(list(BACKENDS))
    return "\n".join([op_table().to_markdown(index=False), "", f"{len(REGISTRY)} ops"] + ([note] if note else []))


def show_coverage_report() -> str:
    """What `pytest --show-coverage` prints: the support table, then the kernel paths of the pinned cases."""
    note = _missing_note(list(BACKENDS))
    return "\n\n".join(["Support: op x source types x backend (pinned and perf cases)",
                         support_table().to_markdown(index=False),
                         "Kernel paths the pinned cases reach (python -m cases.coverage adds the drawn cases)",
                         path_table().to_markdown(index=False)] + ([note] if note else []))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cases.coverage", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="opencl,vulkan", help="comma-separated backends (default opencl,vulkan)")
    p.add_argument("--op", help="comma-separated op names (default all)")
    p.add_argument("--draws", type=int, default=DRAWS, help=f"drawn cases per op (default {DRAWS})")
    args = p.parse_args(argv)
    try:
        backends = [check_name(b.strip()) for b in args.backend.split(",") if b.strip()]
        ops = [get_op(o).name for o in args.op.split(",")] if args.op else sorted(REGISTRY)
        if args.draws < 0:
            raise ValueError(f"--draws must be >= 0, got {args.draws}")
        for name in backends:
            reason = availability(name)
            if reason:
                raise ValueError(f"--backend {name}: {reason}")
    except ValueError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    rows = []
    for name in backends:
        backend = get_backend(name)
        for op in ops:
            pinned, drawn_only = coverage(backend, op, args.draws)
            rows.append({"op": op, "backend": name,
                         "pinned cases reach": "; ".join(f"{path} ({n})" for path, n in sorted(pinned.items())),
                         "only drawn cases reach": "; ".join(f"{path}: {label}" for path, label in drawn_only.items())})
    print(pd.DataFrame(rows).to_markdown(index=False))
    gaps = [r for r in rows if r["only drawn cases reach"]]
    print(f"\n{len(gaps)} of {len(rows)} (op, backend) pairs have paths only drawn cases reach", file=sys.stderr)
    return 1 if gaps else 0


if __name__ == "__main__":
    sys.exit(main())
