# Every target is one line a reader can copy. The venv is created on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fmt bench bench-upload bench-list bench-edge clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/filecdn run

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: bench-upload bench-list bench-edge

bench-upload: $(STAMP)
	$(BIN)/python bench/upload.py

bench-list: $(STAMP)
	$(BIN)/python bench/list.py

bench-edge: $(STAMP)
	bash bench/edge.sh

clean:
	rm -rf $(VENV) .filecdn .pytest_cache .mypy_cache .ruff_cache
