# One command sets up and runs the demo; one sets up and runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest binaries bench bench-peers bench-peers-quick bench-peers-venvs clean

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

# Conveyor and its peers, one virtualenv each (pinned in bench/peers/requirements/), one Redis.
# PEERS_ARGS passes options: make bench-peers PEERS_ARGS='--systems conveyor,huey --rounds 3'
PEERS       := conveyor celery rq arq dramatiq saq taskiq huey streaq
PEERS_VENVS := bench/peers/.venvs
PEERS_REQS  := bench/peers/requirements

bench-peers-venvs: $(PEERS_VENVS)/_harness/.installed $(PEERS:%=$(PEERS_VENVS)/%/.installed)

# Conveyor is installed from this checkout as users get it (not editable), again when it changes.
$(PEERS_VENVS)/conveyor/.installed: pyproject.toml $(PEERS_REQS)/conveyor.txt $(shell find src/conveyor -type f -not -name '*.pyc')
	test -x $(@D)/bin/python || $(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet -c $(PEERS_REQS)/conveyor.txt '.[redis]'
	$(@D)/bin/python -m pip install --quiet --force-reinstall --no-deps .
	touch $@

$(PEERS_VENVS)/%/.installed: $(PEERS_REQS)/%.txt
	rm -rf $(@D) && $(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install --quiet -r $<
	touch $@

bench-peers: bench-peers-venvs binaries
	$(PEERS_VENVS)/_harness/bin/python -m bench.peers.run $(PEERS_ARGS)

bench-peers-quick: bench-peers-venvs binaries
	$(PEERS_VENVS)/_harness/bin/python -m bench.peers.run --quick --json bench/results/peers-quick.json --no-report $(PEERS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache conveyor.db*
