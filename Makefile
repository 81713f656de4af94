# One command per job, the same for people and for CI.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup system-deps serve worker test lint format bench eval clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of PyTorch first: any other resolution pulls gigabytes of CUDA wheels.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

serve: setup
	$(VENV)/bin/docqa serve

worker: setup
	$(VENV)/bin/docqa worker

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

test: setup system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/bench_upload.py
	$(PY) benchmarks/bench_ingest.py
	$(PY) benchmarks/bench_ask.py

EVAL_DATASET ?= ../shared/data/mmlongbench
EVAL_ARGS ?=

# Retrieval quality (lexical, vector, hybrid) through the real pipeline; about 5 minutes for the
# 43 mmlongbench PDFs. Another set: `make eval EVAL_DATASET=path/to/beir EVAL_ARGS=--json`.
eval: setup
	$(VENV)/bin/docqa eval $(EVAL_DATASET) $(EVAL_ARGS)

clean:
	rm -rf $(VENV) .docqa .pytest_cache .mypy_cache .ruff_cache test-output
