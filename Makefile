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

# llama-bench's pp512 and tg128 after 8192 tokens of context, tiny model, every available backend. Five repetitions
# (llama-bench's default): with 3 a side no rank test can reach p < 0.05 (3 vs 3: 0.1), so `bench compare` could never
# flag a regression; 5 vs 5 reaches 0.008. lavapipe's tg128 dominates the run time on 2 cores.
bench: setup
	$(PY) -m bench pp512 tg128 --depth 8192 --model tiny --backend all -r 5

bench-ops: setup
	$(PY) -m bench ops

support: setup
	$(PY) -m bench support
