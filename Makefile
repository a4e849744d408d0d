# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-lowest lint typecheck bench clean

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

# the suite on the lowest version of each dependency that pyproject.toml allows (uv's
# lowest-direct resolution; the test tools at their newest), in its own .venv-lowest: the lower
# bounds are claims, and this is how they are checked (about as long as `make test`)
LOWEST := .venv-lowest
test-lowest: $(STAMP)
	$(BIN)/uv venv --quiet --allow-existing --python $(PYTHON) $(LOWEST)
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct \
		-e ".[postgres,images,dask,s3,mlflow,ui]"
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python pytest pytest-xdist hypothesis schemathesis playwright
	OMP_NUM_THREADS=1 $(LOWEST)/bin/python -m pytest -q -n auto

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/drift_speed.py

clean:
	rm -rf $(VENV) $(LOWEST) demo-run .pytest_cache .mypy_cache .ruff_cache
