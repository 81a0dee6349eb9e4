# medsearch: `make demo` runs the main job, `make test` runs lint + the docs site + every test (CI);
# `make test-fast` is the inner loop (lint + unit and stage tests, no peers). All of them install what they need.
PYTHON ?= python3
VENV ?= .venv
# CPU machines: torch 2.13.0 CPU build. GPU machines: `make demo TORCH_SPEC=torch` (or install torch first).
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.medsearch-installed

.PHONY: install demo serve-demo test test-fast lint docs docs-serve peers bench-ingest bench-encoder bench-api bench-summary bench-search clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/medsearch demo

# the demo, then the web page on its collection (http://127.0.0.1:8000/)
serve-demo: install
	$(BIN)/medsearch demo --serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The Debian peers the tests start (Chromium, Orthanc, PostgreSQL, DCMTK): installed when missing, as .ci/run does.
peers:
	bash tests/install-peers.sh

# The documentation site (mkdocs.yml, docs/): strict, so a broken link, a missing page or a page outside the nav fails.
SITE_DIR ?= site
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(SITE_DIR)

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

# Everything, as CI runs it (.ci/run): about 40-42 minutes on 2 cores (docs/testing.md).
test: lint docs peers
	sh tests/isolated.sh $(BIN)/pytest $(PYTEST_ARGS)

# The inner loop: lint + the unit and stage tests, without the tests marked slow, e2e or peers (no Debian peers needed);
# meant to take under 3 minutes on an idle 2-core machine (what was measured: docs/testing.md).
test-fast: lint
	sh tests/isolated.sh $(BIN)/pytest -q -m "not slow and not e2e and not peers" $(PYTEST_ARGS)

bench-ingest: install
	$(BIN)/python bench/ingest.py

bench-encoder: install
	nice -n 10 $(BIN)/python bench/encoder.py --rounds 3

bench-api: install
	$(BIN)/python bench/api_load.py

bench-summary: install
	$(BIN)/python bench/summary_latency.py

# FAISS index types vs hnswlib at 100k and 1M synthetic vectors (~45 min on 2 cores, ~10 GB in /tmp)
bench-search: install
	$(BIN)/pip install --quiet -e ".[bench]"
	nice -n 10 $(BIN)/python bench/search.py --sizes 100000 1000000 --json /tmp/bench-search.json

clean:
	rm -rf $(VENV) $(SITE_DIR) medsearch-data .pytest_cache .mypy_cache .ruff_cache
