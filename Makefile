# llmqueue: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-litellm chaos chaos-test lint typecheck services browser clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "llmqueue needs Python >= 3.11" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

## demo: the sample documents as one batch routed by balanced over five providers (one failing
## part-way, rate limits paced), then cost per strategy; embedded: no services, no keys
demo: $(STAMP)
	$(VENV)/bin/llmqueue demo

## test: the whole suite on real Postgres, Redis and Celery workers (started if not running),
## in TEST_PROCS pytest processes (each with its own database, Redis prefix, stack and emulator),
## the console's pages in Debian's Chromium (installed with apt if missing)
TEST_PROCS ?= 2
test: $(STAMP) services browser
	$(PY) -m pytest -q --durations=25 -n $(TEST_PROCS) --dist loadfile

## bench: the pipeline against a bare AsyncOpenAI client, 3 runs, medians (see bench/README.md);
## more flags with BENCH_ARGS, e.g. make bench BENCH_ARGS="--jobs 500 --latency-ms 200"
BENCH_ARGS ?=
bench: $(STAMP) services
	$(PY) -m bench.pipeline --repeat 3 $(BENCH_ARGS)

## bench-litellm: the pipeline benchmark with LiteLLM's Router as a second baseline; LiteLLM
## goes into its own environment (bench/.venv-litellm), never into llmqueue's
LITELLM_VENV := bench/.venv-litellm
$(LITELLM_VENV)/bin/litellm-installed:
	python3 -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install -q litellm
	touch $@

bench-litellm: $(STAMP) services $(LITELLM_VENV)/bin/litellm-installed
	$(PY) -m bench.pipeline --repeat 3 --litellm $(BENCH_ARGS)

## lint: ruff, and the floor plan's import contracts (pyproject.toml [tool.importlinter])
## chaos: the real stack broken on purpose (kill -9 of workers, Redis and Postgres restarts)
## with private Postgres and Redis servers; CHAOS_ARGS="--quick" for small batches
CHAOS_ARGS ?=
chaos: $(STAMP) services
	$(PY) -m bench.chaos $(CHAOS_ARGS)

## chaos-test: the chaos suite's worker kill on a 200-document batch, as a test (about 2 min)
chaos-test: $(STAMP) services
	LLMQUEUE_CHAOS_TEST=1 $(PY) -m pytest -q tests/chaos

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## services: start Postgres and Redis when they are not already answering
services:
	@bash scripts/ensure-services.sh

## browser: Debian's Chromium for the console's browser tests (Playwright never downloads one)
browser:
	@bash scripts/ensure-chromium.sh

clean:
	rm -rf $(VENV) .llmqueue .pytest_cache .mypy_cache .ruff_cache
