# One command sets up and runs the demo; one sets up and runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest binaries bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,redis]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/conveyor demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# redis-server and chromium: installed with apt-get when run as root, else named.
binaries:
	@sh scripts/require-binaries.sh

pytest: $(STAMP) binaries
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/conveyor --log-level warning bench --jobs 20000 --concurrency 200 --delayed 100000 --json bench/results/latest.json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache conveyor.db*
