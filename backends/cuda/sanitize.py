"""A few pinned cases of each reduction and scan kernel through the real harness (guards, poison, NMSE), for
compute-sanitizer (scripts/device-check.sh runs this module under racecheck and memcheck on a GPU):

    python -m backends.cuda.sanitize [--no-pool]     # --no-pool: a cudaMalloc per buffer, so memcheck knows bounds

Per op the smallest, a middle and the largest pinned case of at most 2^17 elements, all run smallest first so a run
cut short by its time limit still covered every op. Exit 1 when a case fails."""
from __future__ import annotations

import sys
import time

import numpy as np

from reference.case import Case
from reference.ops import get_op

OPS = ["L2_NORM", "RMS_NORM", "SOFT_MAX_EXT", "CUMSUM", "ARGSORT", "TOP_K", "SUM_ROWS", "GATED_DELTA_NET"]
LIMIT = 1 << 17


def _size(case: Case) -> int:
    return int(np.prod(case.inputs[0].ne))


def picked_cases() -> list[Case]:
    picked = []
    for op in OPS:
        cases = sorted(get_op(op).pinned(), key=lambda c: (_size(c), c.label()))
        fit = [c for c in cases if _size(c) <= LIMIT] or cases[:1]
        picked += list(dict.fromkeys((fit[0], fit[len(fit) // 2], fit[-1])))
    return sorted(picked, key=_size)


def main(argv: list[str]) -> int:
    import cupy

    from cases.harness import run_case

    from . import create

    if "--no-pool" in argv:
        cupy.cuda.set_allocator(None)
    backend = create()
    picked = picked_cases()
    print(f"{len(picked)} cases on {backend.device_info()['device']}, target {backend.arch}", flush=True)
    failed = 0
    for case in picked:
        t0 = time.perf_counter()
        outcome = run_case(backend, case)
        failed += not outcome.passed
        print(f"{'ok  ' if outcome.passed else 'FAIL'} {time.perf_counter() - t0:6.2f}s {case.label()}", flush=True)
        if not outcome.passed:
            print(outcome.report(), flush=True)
    print(f"{len(picked) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
