# rayline — the README's commands. Each creates .venv if missing and installs the pinned set
# (a no-op when already installed), then runs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rayline-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-slow bench lint clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/rayline run flows/hello.py

lint: install
	$(VENV)/bin/ruff check src tests flows benchmarks configs

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-slow: lint
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf .rayline .pytest_cache .ruff_cache
