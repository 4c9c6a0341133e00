# One command sets up and runs: `make run` (the main job) and `make test` (the test suite).
# Both create .venv and install the project the first time (and again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install run test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install  ## the default experiment: DCGAN on real digits, offline (ARGS="..." for overrides)
	$(PY) -m src.run $(ARGS)

test: install  ## the whole suite, as CI runs it
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

test-fast: install  ## skip the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install  ## the benchmarks recorded in experiments/README.md
	$(PY) benchmarks/framework_overhead.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
