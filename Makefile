# The README's two commands. Both set everything up first (apt packages, venv, kp build); a second run rebuilds nothing.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup test mutants bench bench-ops support

setup:
	bash scripts/setup.sh

# OpenCL (PoCL) and Vulkan (lavapipe) must run, never skip: KBO_REQUIRE turns a missing runtime into a failure.
test: setup
	KBO_REQUIRE=opencl,vulkan,ggml $(PY) -m pytest -n auto -q --hypothesis-seed=0 $(PYTEST_ARGS)

# Every registered kernel mutant run against its op's tests, Hypothesis seed 0 (the CI step after `make test`).
mutants: setup
	KBO_REQUIRE=opencl,vulkan $(PY) -m cases.mutants --no-record

# llama-bench's pp512 and tg128 after 8192 tokens of context, tiny model, every available backend. Three repetitions
# (the command's default is llama-bench's five) keep it within 5 minutes on 2 cores, where lavapipe's tg128 dominates.
bench: setup
	$(PY) -m bench pp512 tg128 --depth 8192 --model tiny --backend all -r 3

bench-ops: setup
	$(PY) -m bench ops

support: setup
	$(PY) -m bench support
