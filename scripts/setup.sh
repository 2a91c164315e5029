#!/usr/bin/env bash
# Sets up everything the suite needs on a fresh Debian machine: the OpenCL (PoCL) and Vulkan (lavapipe) CPU drivers,
# the shader compiler, a venv with the pinned packages, and kp (vulkan-kompute) and llama-cpp-python built from their
# sdists.
# Idempotent: a second run checks stamps and rebuilds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KBO_VENV:-.venv}
CACHE=${KBO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kimi-backend-ops}
KP_VERSION=0.9.0
LLAMA_CPP_PYTHON_VERSION=0.3.36
APT_PACKAGES="pocl-opencl-icd ocl-icd-libopencl1 clinfo mesa-vulkan-drivers libvulkan1 libvulkan-dev vulkan-tools
  glslc glslang-tools spirv-tools libfmt-dev cmake"

missing=$(for p in $APT_PACKAGES; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:" $missing
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

# install_sdist_wheel NAME VERSION DURATION [VAR=value ...]: install NAME==VERSION (--no-deps) from the wheel cache,
# first building its wheel when the cache has none: the sdist is downloaded, unpacked, patched with
# scripts/patches/NAME-VERSION.patch where one exists, and built with the given build environment. The cache folder is
# keyed by the patch's hash, so a changed patch never reuses a wheel built without it.
install_sdist_wheel() {
  local name=$1 version=$2 duration=$3 patch tag wheels wheel work src
  shift 3
  patch="scripts/patches/$name-$version.patch"
  tag=plain; [ -f "$patch" ] && tag=$(sha256sum "$patch" | cut -c1-12)
  wheels="$CACHE/wheels/$name-$version-$tag"
  mkdir -p "$wheels"
  wheel=$(ls "$wheels"/*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "setup: building $name $version from source ($duration)"
    work=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$work" "$name==$version"
    mkdir "$work/src"
    tar -xzf "$work"/*.tar.gz -C "$work/src"
    src=$(echo "$work"/src/*)
    if [ -f "$patch" ]; then patch -s -p1 -d "$src" < "$patch"; fi
    env "$@" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
      "$PY" -m pip wheel -q --no-deps -w "$wheels" "$src"
    rm -rf "$work"
    wheel=$(ls "$wheels"/*.whl | head -n1)
  fi
  "$PY" -m pip install -q --no-deps --force-reinstall "$wheel"
}

stamp="$VENV/.kbo-deps-$(cat pyproject.toml scripts/setup.sh scripts/patches/* | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -e ".[cuda,test,build]"

  # kp: an sdist whose default build downloads headers; point it at Debian's Vulkan headers and fmt and at pip's
  # pybind11 (Debian's pybind11 2.10 corrupts numpy-2 arrays). --no-deps: it declares numpy<2 but works with 2.
  install_sdist_wheel kp $KP_VERSION "about 2 minutes" pybind11_ROOT="$("$PY" -m pybind11 --cmakedir)" \
    KOMPUTE_OPT_INSTALL=OFF KOMPUTE_OPT_USE_BUILT_IN_VULKAN_HEADER=OFF KOMPUTE_OPT_USE_BUILT_IN_FMT=OFF \
    KOMPUTE_OPT_USE_BUILT_IN_PYBIND11=OFF
  # llama.cpp for CPU, library only; portable code (no -march=native) so the cached wheel runs on any x86-64 host.
  # Its runtime dependencies are pinned in pyproject.toml.
  llama_flags="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF"
  llama_flags+=" -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
  install_sdist_wheel llama-cpp-python $LLAMA_CPP_PYTHON_VERSION "about 9 minutes" CMAKE_ARGS="$llama_flags"
  rm -f "$VENV"/.kbo-deps-*
  touch "$stamp"
fi
echo "setup: ready ($VENV)"
