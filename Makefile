# The same commands as the README and .ci/run. `make test` is the one command that installs
# everything and runs every check; `make run` is the quickstart (demo + two host instances).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install services lint test run bench-pipeline bench-e2e

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

services:
	scripts/ensure-services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install services lint
	scripts/run-tests.sh

run: install services
	$(BIN)/python scripts/quickstart.py $(ARGS)

bench-pipeline: install
	$(BIN)/python -m bench.pipeline $(ARGS)

bench-e2e: install services
	$(BIN)/python -m bench.e2e $(ARGS)
