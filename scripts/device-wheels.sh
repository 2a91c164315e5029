#!/usr/bin/env bash
# Gathers here, once, what scripts/device-check.sh needs on the lent GPU machine and cannot fetch there (it reaches
# no network; its python3 is 3.12 with its own numpy, pandas, matplotlib, pytest, pytest-xdist, tabulate, hypothesis
# and CuPy for CUDA 13, but not our .venv, which cannot travel):
#
#   .whl/*.whl    Python packages it lacks or has at another version (pip download for cp312 manylinux):
#                 gguf (reference/gguf_io.py and cases/test_gguf.py import it, so without it pytest collects nothing)
#                 and hypothesis at our pin (the same --hypothesis-seed=0 then draws the same examples as CI);
#                 and kp, built here from its sdist for Python 3.12 as scripts/setup.sh builds it (patched)
#   .whl/debs/    Debian packages unpacked there into /tmp, not /: glslc and libshaderc1 (the Vulkan backend compiles
#                 GLSL with glslc) and libfmt9 (kp's library)
#   .gl/          the Vulkan loader and GL dispatch packages, as the device README lists them (unpacked into / there)
#
# Not carried: CuPy and NVRTC (the machine has cupy-cuda13x and nvidia-cuda-nvrtc 13; backends/cuda/build.py takes
# CUDA 12 or 13), pyopencl (no OpenCL step there), ggml-python and llama-cpp-python (CPU second opinions; CI runs them).
#
#   bash scripts/device-wheels.sh       # 3-6 min the first time (the kp build), seconds later (wheel cache)
#   then the device call: command 'bash scripts/device-check.sh "$OUT"', carry [".whl", ".gl"]
#
# .whl/ and .gl/ are ignored through .git/info/exclude, which this script writes: they are this checkout's download
# cache for the device, not project content, and a clone that has not run this script has no such folders to ignore.
# The device call carries at most 64 MiB (the tree that travels plus the carried folders): printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

WHL=.whl
GL=.gl
CACHE=${KBO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kimi-backend-ops}
PY312=${KBO_PY312:-}
if [ -z "$PY312" ]; then
  for p in /root/.pyenv/versions/3.12.*/bin/python3.12 "$(command -v python3.12 || true)"; do
    if [ -x "$p" ] && "$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then PY312=$p; break; fi
  done
fi
PIP_PY=.venv/bin/python; [ -x "$PIP_PY" ] || PIP_PY=python3   # any pip downloads for another Python
LIMIT_MIB=64
pin() { grep -oP "\"$1==\\K[^\"]+" pyproject.toml; }   # the version pyproject.toml pins

# 1. this checkout ignores the carried folders
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for d in "/$WHL/" "/$GL/"; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >>"$exclude"; done

# 2. wheels for CPython 3.12 on manylinux x86-64 (the device README's flags; hypothesis's is compiled); one of each
mkdir -p "$WHL"
WHEELS="gguf==$(pin gguf) hypothesis==$(pin hypothesis)"
rm -f "$WHL"/gguf-*.whl "$WHL"/hypothesis-*.whl
echo "device-wheels: downloading $WHEELS"
"$PIP_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHL" $WHEELS
for w in "$WHL"/gguf-*.whl "$WHL"/hypothesis-*.whl; do   # what they need, all of it on the device's list (KINDS.md)
  echo "  $(basename "$w") needs: $(unzip -p "$w" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' \
    | sed 's/^Requires-Dist: //' | tr '\n' ';' | sed 's/;$//')"
done

# 3. kp for Python 3.12: scripts/setup.sh's build (sdist, scripts/patches/kp-*.patch, Debian's Vulkan headers and fmt,
#    pip's pybind11), in a build venv of its own; the wheel is cached by the patch's hash like setup.sh's
KP_VERSION=0.9.0
# (These functions run as `f || warn`, where bash ignores set -e inside them: each step checks itself.)
build_kp() {
  local patch tag wheels wheel work src venv so
  patch="scripts/patches/kp-$KP_VERSION.patch"
  tag=plain; [ -f "$patch" ] && tag=$(sha256sum "$patch" | cut -c1-12)
  wheels="$CACHE/wheels/kp-$KP_VERSION-$tag-cp312"   # not setup.sh's folder: it installs the first wheel it finds
  wheel=$(ls "$wheels"/kp-*-cp312-*.whl 2>/dev/null | head -n1)
  if [ -z "$wheel" ]; then
    [ -n "$PY312" ] || { echo "device-wheels: no Python 3.12 here (set KBO_PY312)"; return 1; }
    [ -f /usr/include/vulkan/vulkan.h ] && [ -d /usr/include/fmt ] \
      || { echo "device-wheels: Vulkan headers or fmt missing: run scripts/setup.sh first"; return 1; }
    echo "device-wheels: building kp $KP_VERSION for $("$PY312" --version) (about 2 minutes)"
    venv="$CACHE/py312-build"
    { [ -x "$venv/bin/python" ] || "$PY312" -m venv "$venv"; } || return 1
    "$venv/bin/python" -m pip install -q "pybind11==$(pin pybind11)" || return 1
    work=$(mktemp -d)
    "$venv/bin/python" -m pip download -q --no-deps --no-binary :all: -d "$work" "kp==$KP_VERSION" || return 1
    mkdir "$work/src" && tar -xzf "$work"/*.tar.gz -C "$work/src" || return 1
    src=$(echo "$work"/src/*)
    if [ -f "$patch" ]; then patch -s -p1 -d "$src" <"$patch" || return 1; fi
    mkdir -p "$wheels"
    env pybind11_ROOT="$("$venv/bin/python" -m pybind11 --cmakedir)" KOMPUTE_OPT_INSTALL=OFF \
      KOMPUTE_OPT_USE_BUILT_IN_VULKAN_HEADER=OFF KOMPUTE_OPT_USE_BUILT_IN_FMT=OFF \
      KOMPUTE_OPT_USE_BUILT_IN_PYBIND11=OFF \
      CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
      "$venv/bin/python" -m pip wheel -q --no-deps -w "$wheels" "$src" || return 1
    rm -rf "$work"
    wheel=$(ls "$wheels"/kp-*-cp312-*.whl 2>/dev/null | head -n1)
    [ -n "$wheel" ] || return 1
  fi
  rm -f "$WHL"/kp-*.whl
  cp "$wheel" "$WHL/" || return 1
  so=$(mktemp -d)
  unzip -q -o "$wheel" 'kp*.so' -d "$so" && echo "device-wheels: $(basename "$wheel"), which loads:" \
    $(ldd "$so"/kp*.so | awk '/=>/ {print $1}')
  rm -rf "$so"
}
build_kp || echo "device-wheels: WARNING: no kp wheel: device-check.sh will skip the Vulkan tests"

# 4. Debian packages (amd64, this machine's release) through a private package list, as the device README does:
#    the loader into .gl (unpacked into / there), glslc + libshaderc1 + libfmt9 into .whl/debs (unpacked into /tmp)
fetch_debs() {
  local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  o+=' -oAPT::Sandbox::User=root'   # root downloads into the checkout, which apt's own user may not reach
  mkdir -p "$GL" "$WHL/debs" /tmp/amd64/partial
  apt-get $o update -qq >/dev/null || return 1
  rm -f "$GL"/*.deb "$WHL"/debs/*.deb
  (cd "$GL" && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2) || return 1
  (cd "$WHL/debs" && apt-get $o download -qq glslc libshaderc1 libfmt9) || return 1
}
fetch_debs || echo "device-wheels: WARNING: Debian packages not fetched: the Vulkan step will lack the loader or glslc"

# 5. what the device call carries: the tree that travels (tracked and untracked-not-ignored files) plus .whl and .gl
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
tree=$(git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
  | du -cb --files0-from=- | tail -n1 | cut -f1)
carried=$(du -sb "$WHL" "$GL" 2>/dev/null | awk '{s += $1} END {print s + 0}')
total=$((tree + carried))
echo "device-wheels: carried:"
find "$WHL" "$GL" -type f -printf '  %10s B  %p\n' | sort -k3
echo "device-wheels: carried size: tree $(mib "$tree") MiB + $WHL and $GL $(mib "$carried") MiB = $(mib "$total") MiB" \
  "of the device call's $LIMIT_MIB MiB"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "device-wheels: ERROR: over the device call's limit"
  exit 1
fi
