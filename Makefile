# One command per job, the same for people and for CI.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: eval-answers eval-offtopic setup setup-dev system-deps serve worker test lint format bench eval fuzz clean

# `setup` is what serving needs; `setup-dev` adds the tools and test libraries (Playwright,
# mypy, ruff, ...). PyTorch's CPU build goes in first: see scripts/install-torch.sh.
setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	scripts/install-torch.sh $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Debian packages: Tesseract OCR for serving; more OCR languages, Chromium, nginx and
# docker-compose for the tests. Says in one line what it installs, or that all are present.
system-deps:
	@scripts/system-deps.sh test

serve: setup
	@scripts/system-deps.sh serve
	$(VENV)/bin/docqa serve

worker: setup
	@scripts/system-deps.sh serve
	$(VENV)/bin/docqa worker

lint: setup-dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: setup-dev
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

test: setup-dev system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup-dev
	$(PY) benchmarks/bench_upload.py
	$(PY) benchmarks/bench_ingest.py
	$(PY) benchmarks/bench_ask.py

EVAL_DATASET ?= ../shared/data/mmlongbench
EVAL_ARGS ?=

# Retrieval quality (lexical, vector, hybrid) through the real pipeline; about 5 minutes for the
# 43 mmlongbench PDFs. Another set: `make eval EVAL_DATASET=path/to/beir EVAL_ARGS=--json`.
eval: setup
	$(VENV)/bin/docqa eval $(EVAL_DATASET) $(EVAL_ARGS)

# The answers on MMLongBench, its 60 unanswerable questions included (answer hit, refusals,
# citation precision), with the configured answerer.
eval-answers: setup
	$(PY) scripts/mmlongbench_questions.py $(EVAL_DATASET) > .eval-questions.jsonl
	$(VENV)/bin/docqa eval --answers $(EVAL_DATASET) --questions .eval-questions.jsonl $(EVAL_ARGS)

# Off-topic questions (general knowledge, how-to, gibberish) asked of the same documents: the
# refusal rate is how often docqa says "not in your documents" instead of quoting them.
eval-offtopic: setup
	$(PY) scripts/offtopic_questions.py $(EVAL_DATASET) > .eval-offtopic.jsonl
	$(VENV)/bin/docqa eval --answers $(EVAL_DATASET) --questions .eval-offtopic.jsonl $(EVAL_ARGS)

FUZZ_EXAMPLES ?= 200

# Property-based fuzzing of the API from its OpenAPI schema (schemathesis) against a real server,
# with FUZZ_EXAMPLES examples per operation (`make test` runs 10); see docs/hardening.md.
fuzz: setup
	DOCQA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py -s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .docqa .pytest_cache .mypy_cache .ruff_cache test-output
