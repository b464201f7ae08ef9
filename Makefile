# campus-bridge — the two commands: `make demo` (the main job on local defaults) and `make test`.
# Both create .venv/ on first use; nothing else needs installing by hand (see README "Requirements").

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck docs unit bench venv kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The main job on local defaults: local Kafka + simulated gateway + sample events; Ctrl-C stops it all.
demo: $(STAMP)
	$(BIN)/bridge demo -c config/demo.yaml

## Everything CI runs: lint, types, the docs site, and the whole test suite against a real broker.
test: $(STAMP)
	scripts/install-test-deps
	$(BIN)/ruff check bridge tests bench scripts
	$(BIN)/ruff format --check bridge tests bench
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench scripts
	$(BIN)/ruff format --check bridge tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## The documentation site (docs/ -> site/); fails on broken links, anchors or pages missing from the nav.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

## Only the tests that need no broker (fast).
unit: $(STAMP)
	$(BIN)/python -m pytest -m "not kafka"

## The benchmark suite (real broker, simulator in its own process); prints a table and writes JSON.
bench: $(STAMP)
	$(BIN)/python -m bench.run_all

kafka-start:
	scripts/kafka-local start

kafka-stop:
	scripts/kafka-local stop

clean:
	-scripts/kafka-local stop
	rm -rf .kafka-local .run site
