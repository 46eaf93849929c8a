# Every target is one line a reader can copy. The venv is created on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# check-deploy's and lock's tools (checkov, kubernetes-validate, yamllint, hadolint, uv).
TOOLS := $(VENV)/tools
TOOLS_STAMP := $(TOOLS)/.installed
# Installs read PyPI only: this machine's pip config adds local indexes and find-links whose
# files the locks' hashes need not match. The locks are resolved from PyPI by `make lock`.
PYPI := PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS=
UV_COMPILE := $(TOOLS)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock'

.PHONY: run test chaos lint fmt lock check-deploy rehearsal bench bench-upload bench-stalled bench-list bench-edge bench-tokens bench-outages scan-logs bench-idle clean

$(STAMP): pyproject.toml requirements/dev.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PYPI) $(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(PYPI) $(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check || { echo 'pyproject.toml needs what requirements/ lacks: run make lock' >&2; exit 1; }
	touch $(STAMP)

$(TOOLS_STAMP): requirements/tools.lock
	test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(PYPI) $(TOOLS)/bin/python -m pip install --quiet --require-hashes -r requirements/tools.lock
	touch $(TOOLS_STAMP)

run: $(STAMP)
	$(BIN)/filecdn run

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# A private stack under load, each part killed or frozen in turn (~2 min); see README "Chaos".
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# After changing dependencies in pyproject.toml (or requirements/tools.in). Keeps the pins it
# can; `make lock UV_FLAGS=--upgrade` moves everything to the newest releases.
lock: $(TOOLS_STAMP)
	$(UV_COMPILE) $(UV_FLAGS) pyproject.toml -o requirements/runtime.lock
	$(UV_COMPILE) $(UV_FLAGS) pyproject.toml --extra local --extra dev -c requirements/runtime.lock -o requirements/dev.lock
	$(UV_COMPILE) $(UV_FLAGS) requirements/tools.in -o requirements/tools.lock

check-deploy: $(STAMP) $(TOOLS_STAMP)
	bash deploy/check.sh

# Three edges behind HAProxy, rolled and scaled under load the way deploy/ has Kubernetes do it.
rehearsal: $(STAMP)
	$(BIN)/python bench/rehearsal.py $(REHEARSAL_ARGS)

bench: bench-upload bench-stalled bench-list bench-edge bench-tokens bench-outages bench-idle

bench-upload: $(STAMP)
	$(BIN)/python bench/upload.py

bench-stalled: $(STAMP)
	$(BIN)/python bench/stalled_uploads.py

bench-list: $(STAMP)
	$(BIN)/python bench/list.py

bench-edge: $(STAMP)
	bash bench/edge.sh

bench-tokens: $(STAMP)
	$(BIN)/python bench/token_cache.py

bench-outages: $(STAMP)
	$(BIN)/python bench/outages.py

# Tracebacks and secrets in the logs of the last `make test` (or LOGS=/tmp/filecdn-test-*/logs).
scan-logs: $(STAMP)
	$(BIN)/python bench/scan_logs.py $(LOGS)

bench-idle: $(STAMP)
	$(BIN)/python bench/idle_connections.py

clean:
	rm -rf $(VENV) .filecdn .pytest_cache .mypy_cache .ruff_cache .hypothesis .schemathesis
