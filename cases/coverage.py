"""Kernel path coverage: which code paths of each backend (kernel entries and compile-time specialisations,
Backend.kernel_path) the pinned cases of an op reach, and which only drawn cases reach - a path that only a lucky draw
reaches is one whose bugs the default run catches by chance.

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

from backends import availability, check_name, get_backend
from reference.ops import REGISTRY, get_op

from .harness import bound_node
from .strategies import cases_for, examples

DRAWS = 40


def case_path(backend, case) -> str | None:
    """The path `backend` runs `case` through, None when it does not run it."""
    with bound_node(backend, case) as node:
        return None if backend.supports(node) else backend.kernel_path(node)


def coverage(backend, op: str, draws: int = DRAWS) -> tuple[Counter, dict[str, str]]:
    """(pinned cases per path, {path only drawn cases reach: the first such case's label})."""
    pinned = Counter(p for p in (case_path(backend, c) for c in get_op(op).pinned()) if p is not None)
    drawn_only: dict[str, str] = {}
    for case in examples(cases_for(op, backend), draws):
        path = case_path(backend, case)
        if path is not None and path not in pinned:
            drawn_only.setdefault(path, case.label())
    return pinned, drawn_only


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
