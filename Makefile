# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the package metadata changes.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ibau demo

# two workers, one torch thread each (two threads each would oversubscribe 2 cores); a test file stays on one
# worker (--dist loadfile), so module fixtures such as the smoke grid run once; files go out in collection order,
# which tests/conftest.py starts with the long ones (LONG_FILES)
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=40

# the same suite without the tests marked slow (models trained or defended for more than a few seconds)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/round_time.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info
