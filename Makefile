# Two commands matter: `make train` and `make test`. Both create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed
SYMBOL ?= AAPL

.PHONY: install train test test-fast bench calibrate clean-store

install: $(STAMP)

# torch first, pinned to the CPU wheel on this disk: letting stable-baselines3 pull it in
# would download a multi-GB CUDA build. Everything else is pinned by requirements.lock.
# Extras: test (pytest, psycopg for the PostgreSQL-backed mlflow server of tests/team) and ray.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
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

clean-store:
	rm -rf mlruns mlflow.db mlflow.db.lock
