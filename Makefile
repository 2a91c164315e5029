# The README's two commands. Both set everything up first (apt packages, venv, kp build); a second run rebuilds nothing.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup test bench support

setup:
	bash scripts/setup.sh

# OpenCL (PoCL) and Vulkan (lavapipe) must run, never skip: KBO_REQUIRE turns a missing runtime into a failure.
test: setup
	KBO_REQUIRE=opencl,vulkan,ggml $(PY) -m pytest -n auto -q --hypothesis-seed=0 $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench ops

support: setup
	$(PY) -m bench support
