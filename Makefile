# The front door. `make quickstart` and `make test` each install what they need into .venv first.
# torch is installed before the package on purpose: a bare `torch` requirement can pull a multi-GB
# CUDA build. Override TORCH for your hardware, e.g. `make install TORCH="torch==2.13.0 --index-url ..."`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# llama.cpp's Python bindings are built from source (6-9 minutes on 2 cores the first time; pip caches
# the wheel). GGML_NATIVE=OFF: the cached wheel must not depend on this machine's CPU features.
LLAMA_CPP ?= llama-cpp-python[server]>=0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
PY := $(VENV)/bin/python
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev

.PHONY: install install-dev quickstart test test-fast eval lint bench clean

install: $(CORE)

$(CORE): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $(CORE)

# Everything the test suite exercises: lm-eval, gguf + llama.cpp, the server stack, the openai client.
install-dev: $(DEV)

$(DEV): $(CORE)
	$(PY) -m pip install -q -e ".[test,eval,gguf,serve]"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q "$(LLAMA_CPP)"
	touch $(DEV)

quickstart: install
	$(VENV)/bin/minimind-hf quickstart --out runs/quickstart

test: install-dev
	$(PY) -m pytest -q

# the tests not marked slow (no llama.cpp, no subprocess runs of the recipes and the CLI)
test-fast: install-dev
	$(PY) -m pytest -q -m "not slow"

# C-Eval + CMMLU (0-shot) on the quickstart model; DATA is a folder holding ceval/ and cmmlu/ CSVs.
MODEL ?= runs/quickstart/pretrain
DATA ?= ../shared/data
eval: install-dev
	$(VENV)/bin/minimind-hf eval run $(MODEL) --data-dir $(DATA) --out runs/eval

bench: install-dev
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/time_to_loss.py
	$(PY) benchmarks/sft_backends.py
	$(PY) benchmarks/decode_throughput.py
	$(PY) benchmarks/serve_throughput.py

LINT_PATHS := minimind_hf eval convert recipes tests benchmarks
lint: install-dev
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

clean:
	rm -rf $(VENV) runs .pytest_cache
