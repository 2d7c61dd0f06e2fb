# The two commands that matter: `make demo` runs the main job, `make test` the whole test suite.
# Both set the project up first when needed (scripts/setup.sh is idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
OMNIR1 := $(VENV)/bin/omnir1

.PHONY: setup demo test test-fast lint bench lock clean

setup:
	@bash scripts/setup.sh

# ARGS go to dvc repro: `make demo ARGS=-f` reruns every stage, GRPO from scratch
demo: setup
	@bash scripts/demo.sh $(ARGS)

# Two test workers on two cores, one torch thread each: two processes with two threads apiece
# slow each other down several-fold (oversubscription).
THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: setup
	$(THREADS) $(PY) -m pytest -m "not gpu" -n 2 --dist loadgroup

test-fast: setup
	$(THREADS) $(PY) -m pytest -m "not gpu and not slow" -n 2 --dist loadgroup

# Every benchmark (docs/benchmarks.md): a table, and reports/bench.json written atomically; 6-9
# minutes here. One torch thread per process; the evaluation figure starts its own 2 workers.
bench: setup
	$(THREADS) $(PY) bench/run_all.py

lint: setup
	$(VENV)/bin/ruff check src tests scripts bench research components pipelines dags
	$(VENV)/bin/ruff format --check src tests scripts bench research components pipelines dags

# Re-resolve the locks from the *.in files (needs network access to the package index).
lock:
	@bash scripts/lock.sh

clean:
	rm -rf data models runs reports metrics mlruns mlruns.db dvc.lock .pytest_cache
