# rayline — the README's commands. Each creates .venv if missing and installs the pinned set
# (a no-op when already installed), then runs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rayline-installed
PYTEST_ARGS ?=

.PHONY: install demo notebook test test-slow bench lint clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) flows/churn.py

# JupyterLab from this environment (its kernel imports this rayline), on loopback only, with
# Jupyter's login token; extra options: make notebook NOTEBOOK_ARGS="--no-browser --port 8899".
# As root (a container), JupyterLab refuses to start without --allow-root: given then.
NOTEBOOK_ARGS ?=
notebook: install
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) \
		$(NOTEBOOK_ARGS) notebooks/quickstart.ipynb

lint: install
	$(VENV)/bin/ruff check --no-cache src tests flows benchmarks configs

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-slow: lint
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf .rayline .pytest_cache .ruff_cache

# Optional petastorm side environment (.petastorm-venv/: pyarrow 14, numpy<2, petastorm 0.13.1
# with --no-deps, no pyspark) for read_petastorm(..., engine="bridge"). Cached; rebuilt only when
# its pinned set changes. The pins live in rayline.connectors.petastorm_bridge.
PETASTORM_VENV ?= .petastorm-venv

.PHONY: petastorm-env
petastorm-env: install
	$(PY) -m rayline.connectors.petastorm_bridge build-env $(PETASTORM_VENV)
