# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo-run
	$(BIN)/driftloop demo --out demo-run

# the suite runs on every core: most tests wait on servers and subprocesses, not the CPU. One
# OpenMP thread per process: with a worker per core, scikit-learn's second thread only fights
# the other worker (a retrain test took 33 s with it and 25 s without, beside a busy core)
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/drift_speed.py

clean:
	rm -rf $(VENV) demo-run .pytest_cache .mypy_cache .ruff_cache
