#!/usr/bin/env bash
# Sets up everything the suite needs on a fresh Debian machine: the OpenCL (PoCL) and Vulkan (lavapipe) CPU drivers,
# the shader compiler, a venv with the pinned packages, and kp (vulkan-kompute) built from its sdist.
# Idempotent: a second run checks stamps and rebuilds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${KBO_VENV:-.venv}
CACHE=${KBO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kimi-backend-ops}
KP_VERSION=0.9.0
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

stamp="$VENV/.kbo-deps-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -e ".[cuda]"

  # kp: an sdist whose default build downloads headers; point it at Debian's Vulkan headers and fmt and at pip's
  # pybind11 (Debian's pybind11 2.10 corrupts numpy-2 arrays). --no-deps: it declares numpy<2 but works with 2.
  mkdir -p "$CACHE/wheels"
  wheel=$(ls "$CACHE"/wheels/kp-$KP_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "setup: building kp $KP_VERSION from source (about 2 minutes)"
    export pybind11_ROOT=$("$PY" -m pybind11 --cmakedir) KOMPUTE_OPT_INSTALL=OFF \
      KOMPUTE_OPT_USE_BUILT_IN_VULKAN_HEADER=OFF KOMPUTE_OPT_USE_BUILT_IN_FMT=OFF \
      KOMPUTE_OPT_USE_BUILT_IN_PYBIND11=OFF CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
    "$PY" -m pip wheel -q --no-deps --no-binary kp -w "$CACHE/wheels" "kp==$KP_VERSION"
    wheel=$(ls "$CACHE"/wheels/kp-$KP_VERSION-*.whl | head -n1)
  fi
  "$PY" -m pip install -q --no-deps --force-reinstall "$wheel"
  rm -f "$VENV"/.kbo-deps-*
  touch "$stamp"
fi
echo "setup: ready ($VENV)"
