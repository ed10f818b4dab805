# repro: the targets users and CI rely on. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
DEV_LOCK := requirements-dev.lock
STAMP  := $(VENV)/.repro-installed
IMAGE  ?= repro:0.1.0
GPUS   ?= all
DATA   ?= $(CURDIR)/data
RUNS   ?= $(CURDIR)/runs
# `make reproduce` / `make run-image`: the profile run in the image, the uid:gid it runs as (yours, so
# that ./data and ./runs stay yours), extra `docker run` options and extra `repro reproduce` options.
PROFILE ?= paper
RUN_AS  ?= $(shell id -u):$(shell id -g)
DOCKER_RUN_ARGS ?=
REPRO_ARGS ?=
# `make image`: an extra CA for a TLS-intercepting proxy (docker/ca/README.md), and build arguments
# that replace the Dockerfile's pinned defaults (a mirror of the base, another CPython source URL).
CA_CERT ?=
IMAGE_BUILD_ARGS ?=
# Installs come from PyPI and are checked against the lock's hashes; a machine's own pip config
# (extra indexes, local wheel folders) is kept out of it.
PIP_ENV := PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS=
PIP_COMPILE := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --index-url https://pypi.org/simple --no-emit-index-url --no-emit-find-links

.PHONY: help setup smoke test example test-slurm lint rehearse lock pin-base image image-rehearse image-clean run-image reproduce bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv from the runtime and dev locks (hash-checked) and install the kit

$(STAMP): $(LOCK) $(DEV_LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "requirements.lock is compiled for CPython 3.11; run with PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PIP_ENV) $(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK) -r $(DEV_LOCK)
	$(PIP_ENV) $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/repro env check --lock $(LOCK) --dev-lock $(DEV_LOCK)
	@touch $(STAMP)

smoke: setup ## the whole pipeline on the smoke profile: generated data, tiny models, CPU
	$(BIN)/repro reproduce --profile smoke

test: setup ## the test suite, on every core (6 to 9 minutes on 2 cores: 7:16 in CI on an AMD EPYC, 9:06 on an Intel Xeon; the worked examples: make example)
	$(BIN)/python -m pytest -q -n auto --dist loadgroup -m "not slurm and not example"

# The example's command is `python train.py ...`, as a user writes it: the kit's environment comes first
# on PATH, as when it is activated.
example: setup ## the worked examples: the example paper's task file (repro reproduce --seeds 2, repro ablate --seeds 3), ablate's planted causes, the longer end-to-end checks (12 to 19 minutes on 2 cores beside CI's image build)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n auto -m example

test-slurm: setup ## sweeps on a real one-node Slurm started by the tests (root, slurm-wlm and munge; about 4 minutes)
	$(BIN)/python -m pytest -q -m slurm tests/test_slurm.py

# On a CPU each paper-shape step takes about two minutes: esconv-sft's --resume is skipped, because its
# classifier loop is resumed at the paper's size in esc50-sft's rehearsal (`repro rehearse` resumes every task).
rehearse: setup ## the paper profile offline at the paper's shapes: 1 step per task, a --resume for esc50-sft and gpt2-shapley (CPU: about 17 min)
	$(BIN)/repro rehearse --steps 1 --device cpu --skip-resume esconv-sft

lint: setup ## ruff on the Python (pyproject.toml [tool.ruff]), hadolint on the Dockerfile (.hadolint.yaml)
	$(BIN)/ruff check repro tests examples docker/pin_base.py
	$(BIN)/hadolint Dockerfile

lock: setup ## recompile requirements.lock and requirements-dev.lock from their .in files (PyPI only, hashes on every line)
	@$(BIN)/python -c 'import platform, sys; ok = sys.version_info[:2] == (3, 11) and platform.system() == "Linux" and platform.machine() == "x86_64"; sys.exit(0 if ok else "lock on Linux x86_64 with CPython 3.11: the image platform")'
	$(PIP_COMPILE) --output-file $(LOCK) requirements.in
	$(PIP_COMPILE) --output-file $(DEV_LOCK) requirements-dev.in
	$(BIN)/python -c 'from repro.env.lock import parse_lock; [print(f"{p}: {len(parse_lock(p).packages)} packages, all hashed") for p in ("$(LOCK)", "$(DEV_LOCK)")]'
	@! grep -vE '^\s*#' $(LOCK) $(DEV_LOCK) | grep -nE 'file:|/opt/|/home/|/root/|--find-links|--index-url' || (echo "machine-local path in a lock" >&2; exit 1)

pin-base: setup ## re-resolve the CUDA base image digest in the Dockerfile (needs a registry)
	$(BIN)/python docker/pin_base.py Dockerfile

image: ## build the image (needs a Docker engine; CA_CERT=FILE behind a TLS-intercepting proxy)
	@set -e; extra=docker/ca/make-image-extra.pem; trap 'rm -f $$extra' EXIT; \
	if [ -n "$(CA_CERT)" ]; then install -m 0644 "$(CA_CERT)" $$extra; fi; \
	set -x; docker build --network host \
		--build-arg GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		--build-arg BUILD_DATE=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
		--build-arg LOCK_SHA256=$$(sha256sum $(LOCK) | cut -d' ' -f1) \
		--build-arg IMAGE_REF=$(IMAGE) $(IMAGE_BUILD_ARGS) \
		-t $(IMAGE) .

reproduce: image ## the paper profile inside the image, GPUs and data/runs mounted (as your uid:gid)
	@$(MAKE) --no-print-directory run-image

run-image: ## repro reproduce in the built image as your uid:gid (PROFILE=paper; GPUS= runs without GPUs)
	mkdir -p $(DATA) $(RUNS)
	docker run --rm $(if $(GPUS),--gpus $(GPUS)) --ipc=host --user $(RUN_AS) $(DOCKER_RUN_ARGS) \
		-e REPRO_IMAGE_REF=$(IMAGE) \
		-e REPRO_IMAGE_ID=$$(docker image inspect --format '{{.Id}}' $(IMAGE)) \
		-v $(abspath $(DATA)):/data -v $(abspath $(RUNS)):/runs \
		$(IMAGE) repro reproduce --profile $(PROFILE) $(REPRO_ARGS)

image-rehearse: setup ## build the real Dockerfile with stand-ins, run the smoke profile in it as your uid, check (docs/image.md)
	$(BIN)/repro image rehearse

image-clean: setup ## remove the rehearsal image, its stand-in base and cached stand-ins (GBs)
	$(BIN)/repro image clean

bench: setup ## benchmarks; results go to docs/benchmarks.md with the machine named
	$(BIN)/python -m repro.bench all --output docs/benchmarks.md

clean: ## remove generated data, runs and caches (not .venv)
	rm -rf data/smoke runs .pytest_cache
