# Two commands matter: `make train` and `make test`. Both create .venv on first use.
SHELL  := /bin/bash
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
SYMBOL ?= AAPL

.PHONY: install train test test-fast bench calibrate check-lock readme-output clean-store

install: $(STAMP)

# torch first, at the version requirements.lock pins (a public version: any index has it).
# pip takes a CPU build where its configuration offers one (a local wheel directory); elsewhere
# the package index's default build, unless TORCH_INDEX names another wheel index, e.g.
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu      (the CPU build, ~200 MB)
# Installing torch first keeps stable-baselines3 from choosing one. Everything else is pinned by
# requirements.lock. Extras: test (pytest, psycopg for tests/team's PostgreSQL) and ray.
TORCH_INDEX   ?=
TORCH_VERSION := $(shell sed -n 's/^torch==//p' requirements.lock)
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(PIP) install -q -c requirements.lock -e ".[test,ray]"
	touch $(STAMP)

train: install
	$(VENV)/bin/trainkit train --symbols $(SYMBOL) --train-start 2020-01-01 --train-end 2022-12-31

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) bench/run.py

calibrate: install
	$(PY) bench/calibrate.py

# the README's output blocks, from real runs: the suite (as make test runs it) and make train twice
readme-output: install
	TRAINKIT_README_OUTPUT=1 $(PY) -m pytest 2>&1 | tee .pytest-output.log; test $${PIPESTATUS[0]} -eq 0
	$(PY) tools/readme_output.py test .pytest-output.log
	$(PY) tools/readme_output.py train
	rm -f .pytest-output.log

# every pin of requirements.lock resolves with pip's stock configuration (as on a user's machine)
check-lock:
	tools/check-lock

clean-store:
	rm -rf mlruns mlflow.db mlflow.db.lock
