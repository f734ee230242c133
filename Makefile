# Multi-KG4Rec — the two commands a new user needs:
#   make run  [DATASET=ml-1m] [CONFIG=configs/offline.yaml]   set up, then run the main job
#             (CONFIG may list several files; later ones override earlier ones)
#   make test                                                  set up, then run the test suite
# and `make ui` for the Dagster UI on 127.0.0.1.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATASET ?= ml-1m
CONFIG ?=
JOB ?= main
PORT ?= 3000

# One persistent data directory: the Parquet lake, the warehouse, caches and Dagster's run
# history (DAGSTER_HOME), so metadata survives between commands and shows in the UI.
export KG4REC_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(KG4REC_DATA_DIR)/dagster_home

STAMP := $(VENV)/.installed

.PHONY: run test ui ui-check lint install dagster-home bench-ingest clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: a CPU wheel on the project machines.
	$(BIN)/python -m pip install --quiet -e '.[dev,text]'
	touch $(STAMP)

install: $(STAMP)

dagster-home:
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || printf 'telemetry:\n  enabled: false\n' > "$(DAGSTER_HOME)/dagster.yaml"

# CONFIG files are merged and cut to the ops of JOB (pipeline/run_config.py), so one shared file
# (configs/offline.yaml) drives every stage job as well as main.
RUN_CONFIG := $(KG4REC_DATA_DIR)/run_config.$(JOB).yaml

# The run's output is kept in $(RUN_LOG); when it failed because an upstream host could not be
# reached, that one line (with the way out: offline config or a mirror) is repeated last, below
# Dagster's traceback.
RUN_LOG := $(KG4REC_DATA_DIR)/last_run.$(JOB).log

run: $(STAMP) dagster-home
	$(BIN)/python -m pipeline.run_config --job $(JOB) $(CONFIG) > $(RUN_CONFIG)
	@set -o pipefail; $(BIN)/dagster job execute -m pipeline -j $(JOB) \
		--tags '{"dagster/partition": "$(DATASET)"}' -c $(RUN_CONFIG) 2>&1 | tee $(RUN_LOG) || { \
		status=$$?; grep -m1 -o 'UpstreamUnreachableError: .*' $(RUN_LOG) | sed 's/^/\nmake run: /'; exit $$status; }

test: $(STAMP)
	$(BIN)/python -m pytest -q

ui: $(STAMP) dagster-home
	$(BIN)/dagster dev -m pipeline -h 127.0.0.1 -p $(PORT)

# Headless Chromium screenshot of the asset graph (needs Debian's chromium: apt-get install chromium).
ui-check: $(STAMP)
	$(BIN)/python bench/ui_screenshot.py

lint: $(STAMP)
	$(BIN)/ruff check .

bench-ingest: $(STAMP)
	$(BIN)/python bench/ingest.py

clean-venv:
	rm -rf $(VENV)
