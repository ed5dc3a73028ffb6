# The front door. `make quickstart` and `make test` each install what they need into .venv first.
# torch is installed before the package on purpose: a bare `torch` requirement can pull a multi-GB
# CUDA build. Override TORCH for your hardware, e.g. `make install TORCH="torch --index-url ..."`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install quickstart test lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

quickstart: install
	$(VENV)/bin/minimind-hf quickstart --out runs/quickstart

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check minimind_hf tests

clean:
	rm -rf $(VENV) runs .pytest_cache
