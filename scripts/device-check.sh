#!/usr/bin/env bash
# The GPU checks, as one prepared run on the lent NVIDIA machine (one H200; its own python3 3.12 with CuPy for CUDA 13,
# numpy, pytest, hypothesis, pandas, matplotlib; no network), within 8 minutes:
#
#   bash scripts/device-wheels.sh                  # here, once: wheels and packages into .whl/ and .gl/
#   device run: command 'bash scripts/device-check.sh "$OUT"', carry [".whl", ".gl"], timeout_s 600
#
#   bash scripts/device-check.sh OUT_DIR           # anywhere: without a GPU the CUDA tests skip with their reason,
#                                                  # the benches refuse cuda, the GPU-only steps say why they skip
#
# Each step is time-boxed (timeout, then KILL 5 s later); a failing step does not stop the next; the summary lists
# every step's exit code (124/137: its time ran out) and the script exits 1 when any step failed. The budget:
#
#   step           limit  what
#   setup            40 s  carried wheels into $SITE (PYTHONPATH), loader packages, versions, nvidia-smi, and
#                          every kernel compiled by NVRTC for the device's own target (compile_check device)
#   cuda-tests      140 s  pytest -k "cuda and not emulated" -n 8 (the emulated kernels are CPU work CI does)
#   bench-ops        70 s  python -m bench ops --backend cuda (35 ops, 0.5 s of timed runs each)
#   bench-pptg       40 s  python -m bench pp64 tg16 --backend cuda --model tiny -r 2
#   racecheck        50 s  compute-sanitizer --tool racecheck on the reduction and scan kernels (norms, softmax,
#                          cumsum, argsort/top_k, sum_rows, the delta net), three pinned cases each, smallest first
#   memcheck         35 s  the same cases under --tool memcheck, CuPy's memory pool off (a cudaMalloc per buffer)
#   vulkan-tests     70 s  pytest -k vulkan on NVIDIA's Vulkan driver (lavapipe, in CI, hides missing barriers)
#                          These two steps are where races can show: PoCL runs a work group's items in order and
#                          lavapipe subgroup-only kernels in lockstep, so the CPU runs of CI and of python -m
#                          cases.mutants cannot catch a missing barrier (README, mutation testing).
#                  -----
#                  445 s of limits + 7 x 5 s of kill grace = 480 s = 8 minutes (a device call may take 10)
#
# OUT_DIR gets exactly 8 files, as many as a device call brings back: summary.txt, history.jsonl (the records the
# benches and pytest --record-history append; the per-user default history is left alone) and one log per step or pair.
# KBO_PYTHON (default python3), KBO_SITE (default /tmp/kbo-site), KBO_DEVICE_BUDGET (seconds, default 480),
# KBO_WORKERS (pytest-xdist workers, default 8) and KBO_VK_ICD (default NVIDIA's ICD file) change the interpreter,
# the wheels' install folder, the budget, the parallelism and the Vulkan driver offered.
set -uo pipefail   # no -e: a failing step must not stop the run

if [ $# -lt 1 ]; then
  echo "usage: bash scripts/device-check.sh OUT_DIR" >&2
  exit 2
fi
mkdir -p "$1" && OUT=$(cd "$1" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PY=${KBO_PYTHON:-python3}
SITE=${KBO_SITE:-/tmp/kbo-site}
BUDGET=${KBO_DEVICE_BUDGET:-480}
GRACE=5
HIST="$OUT/history.jsonl"
SUMMARY="$OUT/summary.txt"
export PYTHONUNBUFFERED=1 KBO_HISTORY="$HIST"
LOGS="00-setup.log 10-cuda-tests.log 20-bench-ops.log 30-bench-pptg.log 40-sanitizer.log 50-vulkan-tests.log"
SECONDS=0
FAILED=0
FAILED_LOGS=""
(cd "$OUT" && rm -f $LOGS)
echo "device-check: started $(date -u +%FT%TZ), budget ${BUDGET}s, commit $(git rev-parse --short=12 HEAD 2>/dev/null \
  || echo unknown)" >"$SUMMARY"

say() { printf '[%3ds] %s\n' "$SECONDS" "$*"; }

# record NAME RC SECONDS LOG [NOTE]: one summary line per step
record() {
  local name=$1 rc=$2 secs=$3 log=$4 note=${5:-} verdict
  case "$rc" in
    0) verdict=ok ;;
    skip) verdict=skipped ;;
    2) if [ "${REFUSAL_OK:-0}" = 1 ]; then verdict=refused; else verdict=FAILED; fi ;;
    124|137) verdict="out of time" ;;
    *) verdict=FAILED ;;
  esac
  case "$verdict" in FAILED|"out of time") FAILED=1; FAILED_LOGS+=" $log" ;; esac
  printf '%-13s rc=%-4s %-11s %4ss  %-18s %s\n' "$name" "$rc" "$verdict" "$secs" "$log" "$note" >>"$SUMMARY"
  say "$name: $verdict (rc=$rc, ${secs}s)${note:+ - $note}"
}

# step NAME LIMIT LOG CMD...: CMD under timeout, its output appended to OUT/LOG; the limit shrinks to what is left of
# the budget, and a step with under 10 s left is skipped
step() {
  local name=$1 limit=$2 log=$3 left start rc shown
  shift 3
  shown="$*"
  left=$((BUDGET - SECONDS - GRACE))
  [ "$limit" -le "$left" ] || limit=$left
  if [ "$limit" -lt 10 ]; then
    record "$name" skip 0 "$log" "the ${BUDGET}s budget is spent"
    return
  fi
  say "$name: $shown (limit ${limit}s)"
  echo "== $name: $shown (limit ${limit}s, at ${SECONDS}s)" >>"$OUT/$log"
  start=$SECONDS
  timeout -k "$GRACE" "$limit" "$@" >>"$OUT/$log" 2>&1 </dev/null
  rc=$?
  echo "== $name: exit code $rc after $((SECONDS - start))s" >>"$OUT/$log"
  record "$name" "$rc" "$((SECONDS - start))" "$log"
}

skip() {  # skip NAME LOG REASON
  echo "== $1: skipped: $3" >>"$OUT/$2"
  record "$1" skip 0 "$2" "$3"
}

# ---- setup (40 s): wheels, packages, environment report, the kernels compiled for this device --------------------
# Typically 15-30 s; each command has its own timeout, and the steps after it shrink if setup ran long.
setup_log="$OUT/00-setup.log"
setup_start=$SECONDS
setup_rc=0
wheels=0
{
  echo "== setup at $(date -u +%FT%TZ) in $ROOT (commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown))"
  if ls .whl/*.whl >/dev/null 2>&1; then
    echo "== carried wheels -> $SITE: $(cd .whl && ls *.whl | tr '\n' ' ')"
    timeout 30 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      .whl/*.whl || setup_rc=1
    wheels=1
  else
    echo "== no .whl/*.whl (scripts/device-wheels.sh makes them): using $PY's own packages"
  fi
} >>"$setup_log" 2>&1
if [ "$wheels" = 1 ]; then export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"; fi

# The Vulkan loader (.gl, README of the device tool) only where none is installed; glslc, libshaderc and libfmt
# (.whl/debs) into /tmp, used by the Vulkan step alone.
VK_ROOT=/tmp/kbo-vk
{
  if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' && ls .gl/*.deb >/dev/null 2>&1; then
    echo "== no Vulkan loader here: unpacking .gl/*.deb into /"
    for f in .gl/*.deb; do dpkg -x "$f" / || setup_rc=1; done
    ldconfig
  fi
  if ls .whl/debs/*.deb >/dev/null 2>&1; then
    mkdir -p "$VK_ROOT"
    for f in .whl/debs/*.deb; do dpkg -x "$f" "$VK_ROOT" || setup_rc=1; done
  fi
} >>"$setup_log" 2>&1
VK_PATH="$PATH"; command -v glslc >/dev/null || VK_PATH="$VK_ROOT/usr/bin:$PATH"
GLSLC=$(command -v glslc || echo "$VK_ROOT/usr/bin/glslc")
VK_LD="$VK_ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
NV_ICD=${KBO_VK_ICD:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}   # the driver the Vulkan step offers
NV_EGL=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json

HAVE_GPU=0
if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then HAVE_GPU=1; fi
HAVE_SANITIZER=0
command -v compute-sanitizer >/dev/null && HAVE_SANITIZER=1

{
  echo "== machine"
  uname -a; nproc; (ldd --version | head -n1) 2>&1
  "$PY" -c 'import sys; print("python", sys.version.split()[0], sys.executable)'
  if [ "$HAVE_GPU" = 1 ]; then timeout 10 nvidia-smi; else echo "no NVIDIA GPU (nvidia-smi -L lists none)"; fi
  [ "$HAVE_SANITIZER" = 1 ] && compute-sanitizer --version | tail -n1
  echo "== packages ($PY, PYTHONPATH=${PYTHONPATH:-})"
  timeout 20 "$PY" - <<'EOF'
from importlib import import_module, metadata
for dist, module in [("numpy", "numpy"), ("pandas", "pandas"), ("matplotlib", "matplotlib"), ("pytest", "pytest"),
                     ("pytest-xdist", "xdist"), ("pytest-timeout", "pytest_timeout"), ("hypothesis", "hypothesis"),
                     ("tabulate", "tabulate"), ("gguf", "gguf"), ("kp", "kp"), ("cuda-pathfinder", "cuda.pathfinder")]:
    try:
        where = import_module(module).__file__
        print(f"  {dist:16} {metadata.version(dist):12} {where}")
    except Exception as err:
        print(f"  {dist:16} MISSING      {err!r}")
cupy = [d.metadata["Name"] + " " + d.version for d in metadata.distributions()
        if (d.metadata["Name"] or "").lower().startswith(("cupy", "nvidia-cuda-nvrtc"))]
print("  cupy/nvrtc      ", ", ".join(sorted(set(cupy))) or "none")
EOF
  echo "== cuda backend: availability and NVRTC"
  timeout 30 "$PY" -c 'from backends import availability; print("cuda:", availability("cuda") or "usable")'
  if [ "$HAVE_GPU" = 1 ]; then
    timeout 40 "$PY" -m backends.cuda.compile_check device || setup_rc=1
  else
    timeout 40 "$PY" -m backends.cuda.compile_check sm_90 || setup_rc=1
  fi
  echo "== setup: exit code $setup_rc after $((SECONDS - setup_start))s"
} >>"$setup_log" 2>&1
record setup "$setup_rc" "$((SECONDS - setup_start))" 00-setup.log

# ---- CUDA conformance (140 s) -------------------------------------------------------------------------------------
# KBO_REQUIRE=cuda on a GPU machine: a CUDA runtime that does not come up fails instead of skipping every test.
# pytest-timeout (when there) dumps the stacks of a test hung in a kernel instead of losing the step.
require=(); [ "$HAVE_GPU" = 1 ] && require=(env KBO_REQUIRE=cuda)
per_test=(); "$PY" -c 'import pytest_timeout' 2>/dev/null && per_test=(--timeout 60 --timeout-method thread)
workers=(); "$PY" -c 'import xdist' 2>/dev/null && workers=(-n "${KBO_WORKERS:-8}")
step cuda-tests 140 10-cuda-tests.log "${require[@]}" "$PY" -m pytest -q \
  -k "cuda and not emulated" "${workers[@]}" "${per_test[@]}" --hypothesis-seed=0 --record-history --durations=15

# ---- benches (70 s + 40 s) ----------------------------------------------------------------------------------------
# Without a GPU both refuse --backend cuda with exit code 2 and the reason: recorded as "refused", not a failure.
[ "$HAVE_GPU" = 1 ] || REFUSAL_OK=1
step bench-ops 70 20-bench-ops.log "$PY" -m bench ops --backend cuda
step bench-pptg 40 30-bench-pptg.log "$PY" -m bench pp64 tg16 --backend cuda --model tiny -r 2
REFUSAL_OK=0

# ---- compute-sanitizer on the reduction and scan kernels (50 s + 35 s) -------------------------------------------
# backends/cuda/sanitize.py picks the cases (three pinned cases of each op, smallest first).
if [ "$HAVE_GPU" = 1 ] && [ "$HAVE_SANITIZER" = 1 ]; then
  # --error-exitcode: a hazard or bad access fails the step even when every case's values came out right
  step racecheck 50 40-sanitizer.log compute-sanitizer --tool racecheck --error-exitcode 86 --print-limit 20 \
    "$PY" -m backends.cuda.sanitize
  step memcheck 35 40-sanitizer.log compute-sanitizer --tool memcheck --error-exitcode 86 --print-limit 20 \
    "$PY" -m backends.cuda.sanitize --no-pool
else
  why="no GPU"; [ "$HAVE_GPU" = 1 ] && why="no compute-sanitizer on PATH"
  skip racecheck 40-sanitizer.log "$why"
  skip memcheck 40-sanitizer.log "$why"
fi

# ---- Vulkan conformance on NVIDIA's driver (70 s) -----------------------------------------------------------------
# Only NVIDIA's ICD is offered (VK_DRIVER_FILES), so the tests cannot fall back to a CPU driver; KBO_REQUIRE=vulkan
# turns a driver or loader that does not come up into a failure. On a machine without it, CI's lavapipe runs these.
# First the driver alone (a subprocess probe: kp aborts the process without one), so that a driver that does not come
# up is one failure with its reason rather than 425 failing tests.
vk_log=50-vulkan-tests.log
if [ "$HAVE_GPU" != 1 ] || [ ! -f "$NV_ICD" ]; then
  why="no GPU"; [ "$HAVE_GPU" = 1 ] && why="no NVIDIA Vulkan driver ($NV_ICD)"
  skip vulkan-tests "$vk_log" "$why"
elif ! "$PY" -c 'import kp' >>"$OUT/$vk_log" 2>&1; then
  skip vulkan-tests "$vk_log" "kp does not import (scripts/device-wheels.sh builds its wheel)"
else
  vk_env=(env VK_DRIVER_FILES="$NV_ICD" VK_ICD_FILENAMES="$NV_ICD" PATH="$VK_PATH" LD_LIBRARY_PATH="$VK_LD"
          KBO_REQUIRE=vulkan KBO_CACHE=/tmp/kbo-cache)
  [ -f "$NV_EGL" ] && vk_env+=(__EGL_VENDOR_LIBRARY_FILENAMES="$NV_EGL")
  echo "== vulkan: $GLSLC: $(LD_LIBRARY_PATH="$VK_LD" "$GLSLC" --version 2>&1 | head -n1)" >>"$OUT/$vk_log"
  if timeout 30 "${vk_env[@]}" "$PY" -c 'import sys
from backends import availability, get_backend
reason = availability("vulkan")
print("vulkan:", reason or get_backend("vulkan").device_info())
sys.exit(3 if reason else 0)' >>"$OUT/$vk_log" 2>&1; then
    step vulkan-tests 70 "$vk_log" "${vk_env[@]}" "$PY" -m pytest -q -k vulkan \
      "${workers[@]}" "${per_test[@]}" --hypothesis-seed=0 --record-history --durations=10
  else
    record vulkan-tests 3 0 "$vk_log" "NVIDIA's Vulkan driver did not come up (the log says why)"
  fi
fi

# ---- summary --------------------------------------------------------------------------------------------------------
gpu="no GPU"
[ "$HAVE_GPU" = 1 ] && gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n1)
echo "device-check: done in ${SECONDS}s of ${BUDGET}s on $gpu; $(cat "$HIST" 2>/dev/null | wc -l) records in" \
  "history.jsonl; exit code $FAILED" >>"$SUMMARY"
echo
cat "$SUMMARY"
# the end of each failed step's log, so that the device call's output shows why
for log in $(printf '%s\n' $FAILED_LOGS | sort -u); do
  echo; echo "---- tail of $log"; grep -v '^$' "$OUT/$log" | tail -n 25
done
exit "$FAILED"
