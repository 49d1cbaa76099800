# The same commands as the README and .ci/run. `make test` is the one command that installs
# everything and runs every check; `make run` is the quickstart (demo + two host instances).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install lock services lint test run bench-pipeline bench-e2e bench-cpu bench-memory bench-latency bench-aiormq-patch

# Reproducible: exactly the locked versions, each file checked against its hash (requirements/lock-dev.txt:
# runtime + dev + the build backend), then sendpipe itself, editable, without dependencies. A changed lock
# (or pyproject.toml, or the C line-cutter worker/smime/_crlf.c) reinstalls. `make lock` refreshes the locks after a dependency change in pyproject.toml
# (keeping the other pins); `make lock ARGS=--upgrade` moves every pin to the newest release.
LOCKS := requirements/lock.txt requirements/lock-dev.txt
UV_VERSION := 0.13.8

$(BIN)/.installed: pyproject.toml $(LOCKS) worker/smime/_crlf.c
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/lock-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(BIN)/.installed

# uv resolves for Python 3.11 on linux x86_64 from PyPI only (it does not read this machine's pip.conf).
lock:
	python3 -m venv $(VENV)/lock-tools
	$(VENV)/lock-tools/bin/pip install --quiet uv==$(UV_VERSION)
	for extra in "" dev; do \
	  $(VENV)/lock-tools/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	    --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock" \
	    pyproject.toml requirements/build.in $${extra:+--extra $$extra} $(ARGS) \
	    -o requirements/lock$${extra:+-$$extra}.txt || exit 1; \
	done

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

bench-cpu: install services
	$(BIN)/python -m bench.cpu $(ARGS)

bench-memory: install services
	$(BIN)/python -m bench.memory $(ARGS)

# Target 5's cause: the project's 4.3 node against a bench-only 4.3 node on tmpfs (root: mount, chroot).
bench-latency: install services
	$(BIN)/python -m bench.latency $(ARGS)

# Target 4's patch to upstream standards: aiormq 7.2.4's own suite (PyPI sdist) unpatched and patched, plus
# the patch's tests (bench/patches/README.md); ARGS="--broker 4.3", ARGS="-k stream_publish".
bench-aiormq-patch: install
	$(BIN)/python -m bench.aiormq_patch $(ARGS)
