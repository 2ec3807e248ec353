# Two entry points: `make demo` (set up, then the demo migration) and `make test` (set up, then
# lint, type-check and the whole suite). Python packages go into .venv, Azurite into node_modules.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit lint bench ui clean lock

# Every Python package comes from requirements.lock, hash-pinned: a new release anywhere changes
# nothing here until scripts/lock.sh is run and its output committed.
$(STAMP): pyproject.toml requirements.lock package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	npm ci --no-audit --no-fund --loglevel=error   # Azurite, the Azure Blob emulator for tests
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/migrator demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m migrator.plan.schema --check

test: lint
	bash scripts/ensure-chromium.sh   # headless Chromium for the Dagster UI test (Debian package)
	bash scripts/ensure-postgres.sh   # PostgreSQL server binaries; the tests run a private server
	$(BIN)/python -m pytest -q -n auto   # one test process per core

# The fast tier alone: no server, no subprocess (tests/unit).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -n auto tests/unit

# The Dagster UI on http://127.0.0.1:3000 with the demo plan's assets (data generated once).
ui: $(STAMP)
	$(BIN)/python -m migrator.demo.prepare manifests/demo.yaml
	MIGRATOR_PLAN=manifests/demo.yaml $(BIN)/dagster dev -m pipelines -h 127.0.0.1 -p 3000

bench: $(STAMP)
	$(BIN)/python bench/bench.py

# Re-resolve the locks from pyproject.toml (needs the package index); commit both files.
lock:
	bash scripts/lock.sh

clean:
	rm -rf $(VENV) demo-work .pytest_cache .mypy_cache .ruff_cache
