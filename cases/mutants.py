"""Mutation testing: how many realistic kernel bugs the conformance tests catch.

    python -m cases.mutants [--backend opencl,vulkan] [--op ACC,SET] [--mutant NAME] [--seed 0] [--list]
                            [--no-record]

A mutant (reference/ops/spec.py Mutant, registered beside its op in reference/ops/<family>.py) is one text edit of one
kernel source, made in memory in a fresh process through KBO_MUTANT (backends/base.py kernel_text). Each mutant runs
its op's narrow tests on its backend - the pinned upstream cases and the drawn ones of cases/test_ops.py, or for CUDA
the host emulation of cases/test_cuda_compile.py - under the default Hypothesis profile with a fixed seed, and is
caught when they fail. The table says how: NMSE, relative error, NaN, guard bytes (a write outside the output),
wrong indices (a verify check), a crash or a timeout. One record per mutant goes to the history (kind "mutants");
the exit status is 1 when any mutant survives, 2 on a bad request.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from backends import availability
from backends.base import MUTANT_ENV
from reference.ops import get_op
from reference.ops.spec import SLOWDOWN, mutants

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300
# What the harness prints for each kind of failure (cases/harness.py), most specific first.
HOW = [("outside the output changed", "guard bytes"), ("NaN in the output", "NaN"), ("inf where", "inf"),
       ("relative error", "relative error"), ("NMSE", "NMSE"),
       ("not a permutation", "wrong indices"), ("out of order", "wrong indices"), ("chose a value", "wrong indices"),
       ("chosen twice", "wrong indices"), ("out of range", "wrong indices")]


# A run that failed for one of these says nothing about the tests: the mutant is broken, not caught.
NOT_A_MUTANT = ("not once", "host compiler failed", "glslc failed", "BUILD_PROGRAM_FAILURE", "NVRTC failed")


def narrow_tests(op: str, backend: str) -> list[str]:
    """The pytest node ids that must catch a mutant of `op` on `backend`."""
    if backend == "cuda":
        return [f"cases/test_cuda_compile.py::test_kernels_on_host_emulation[cuda-emulated-{op}]"]
    pinned = [f"cases/test_ops.py::test_upstream[{backend}-{case.label()}]" for case in get_op(op).pinned()]
    return pinned + [f"cases/test_ops.py::test_drawn[{backend}-{op}]"]


def how_caught(output: str, returncode: int) -> str:
    """How the failing run failed, from its output."""
    if returncode < 0 or "Fatal Python error" in output or "Segmentation fault" in output:
        return "crash"
    # The harness lists what went wrong as "  - ..." lines under its "FAIL (NMSE ...)" header: the first one says how.
    problems = [line.split("- ", 1)[1] for line in output.splitlines() if line.lstrip(" E").startswith("- ")]
    for text in problems[:1] + [output]:
        for needle, how in HOW:
            if needle in text:
                return how
    return "error"


def run_mutant(name: str, seed: int) -> dict:
    """Run one mutant's narrow tests in a fresh process; the record of what happened."""
    op, m = mutants()[name]
    env = {**os.environ, MUTANT_ENV: name, "KBO_REQUIRE": m.backend if m.backend != "cuda" else ""}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", f"--hypothesis-seed={seed}",
           *narrow_tests(op.name, m.backend)]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, output = None, f"timed out after {TIMEOUT_S} s: {err}"
    seconds = time.perf_counter() - start
    if code is None:
        caught, how = True, "timeout"
    elif code == 0:
        caught, how = False, "-"
    elif code in (1,) or code < 0:
        caught, how = True, how_caught(output, code)
    else:  # 2-5: interrupted, internal error, usage error, nothing collected: the run says nothing about the mutant
        raise RuntimeError(f"mutant {name}: pytest exited {code} without running its tests:\n{output[-2000:]}")
    if caught and how == "error" and any(sign in output for sign in NOT_A_MUTANT):
        raise RuntimeError(f"mutant {name} does not apply or does not compile, so it tests nothing:\n{output[-2000:]}")
    return {"kind": "mutants", "mutant": name, "backend": m.backend, "op": op.name, "class": m.kind, "bug": m.bug,
            "caught": caught, "how": how, "seed": seed, "seconds": round(seconds, 1)}


def select(backends: list[str] | None, ops: list[str] | None, names: list[str] | None) -> list[str]:
    """The registered mutants matching the filters (all when none), refused when a filter names nothing known.
    Slowdowns are correct kernels, not bugs to catch: they are left out (python -m bench calibrate runs them)."""
    known = {n: (op, m) for n, (op, m) in mutants().items() if m.kind != SLOWDOWN}
    for name in names or ():
        if name not in known:
            slowdown = name in mutants()
            raise ValueError(f"mutant {name!r} is a slowdown: python -m bench calibrate --slowdown {name} measures it"
                             if slowdown else f"no mutant {name!r}; --list shows them")
    for op in ops or ():
        get_op(op)
    chosen = [n for n, (op, m) in sorted(known.items(), key=lambda kv: (kv[1][1].backend, kv[1][0].name, kv[0]))
              if (not backends or m.backend in backends) and (not ops or op.name in [o.upper() for o in ops])
              and (not names or n in names)]
    if not chosen:
        raise ValueError("no registered mutant matches the filters")
    return chosen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cases.mutants", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", help="comma-separated: opencl, vulkan, cuda (its host emulation)")
    p.add_argument("--op", help="comma-separated op names")
    p.add_argument("--mutant", help="comma-separated mutant names")
    p.add_argument("--seed", type=int, default=0, help="the Hypothesis seed of every run (default 0)")
    p.add_argument("--list", action="store_true", help="print the registered mutants and exit")
    p.add_argument("--no-record", action="store_true", help="do not append the results to the history")
    args = p.parse_args(argv)
    split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
    try:
        names = select(split(args.backend), split(args.op), split(args.mutant))
        for backend in sorted({mutants()[n][1].backend for n in names}):
            if backend == "cuda":  # CUDA mutants run on the host emulation of the kernels
                from backends.cuda.host_emulation import compiler
                reason = None if compiler() else "no host C++ compiler (g++ or clang++) to emulate CUDA kernels with"
            else:
                reason = availability(backend)
            if reason:
                raise ValueError(f"mutants of {backend} cannot run here: {reason}")
    except ValueError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    if args.list:
        rows = [{"mutant": n, "backend": m.backend, "op": op.name, "class": m.kind, "bug": m.bug}
                for n, (op, m) in ((n, mutants()[n]) for n in names)]
        print(pd.DataFrame(rows).to_markdown(index=False))
        return 0
    records = []
    for i, name in enumerate(names, 1):
        rec = run_mutant(name, args.seed)
        records.append(rec)
        print(f"[{i}/{len(names)}] {name}: {'caught by ' + rec['how'] if rec['caught'] else 'SURVIVED'} "
              f"({rec['seconds']} s)", file=sys.stderr, flush=True)
    table = pd.DataFrame(records)
    table["caught by"] = [f"{op} tests" if c else "-" for op, c in zip(table.op, table.caught)]
    print(table[["mutant", "backend", "op", "class", "caught by", "how", "seconds"]].to_markdown(index=False))
    killed = int(table.caught.sum())
    print(f"\nkill rate: {killed}/{len(table)} ({100 * killed / len(table):.0f}%), Hypothesis seed {args.seed}")
    survivors = table[~table.caught]
    for _, row in survivors.iterrows():
        print(f"SURVIVED: {row.mutant} ({row.backend} {row.op}, {row['class']}): {row.bug}")
    if not args.no_record:
        from reports import history
        history.append(records)
    return 1 if len(survivors) else 0


if __name__ == "__main__":
    sys.exit(main())
