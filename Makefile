# Vigil: `make serve` builds the environment and starts the gateway on :3000 with the demo
# models; `make test` runs every test. Both reuse a virtualenv stamped by pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA := $(abspath $(or $(VIGIL_DATA_DIR),var))
PORT ?= 3000
HOST ?= 127.0.0.1
export VIGIL_DATA_DIR := $(DATA)
export BENTOML_HOME := $(DATA)/bentoml
export BENTOML_DO_NOT_TRACK := true
STAMP := $(VENV)/.stamp-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
TOKEN_FILE := $(DATA)/admin-token

.PHONY: cert venv serve test test-fast demo cluster-demo demo-train build bench bench-monitor drift-bench soak logs-export lint clean token

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.stamp-* && touch $@

venv: $(STAMP)

$(TOKEN_FILE):
	mkdir -p $(DATA) && umask 077 && $(BIN)/python -c "import secrets; print('vgl_' + secrets.token_urlsafe(32))" > $@

token: venv $(TOKEN_FILE)
	@echo "admin token (role admin, name bootstrap): $(TOKEN_FILE)"

serve: venv $(TOKEN_FILE)
	@$(BIN)/python -c "import socket, sys; s = socket.socket(); \
	  sys.exit('port $(PORT) is in use (another Vigil?); try: make serve PORT=3001' \
	           if s.connect_ex(('127.0.0.1', $(PORT))) == 0 else 0)"
	@echo "admin token in $(TOKEN_FILE)  (export VIGIL_TOKEN=\$$(cat $(TOKEN_FILE)))"
	VIGIL_BOOTSTRAP_ADMIN_TOKEN=$${VIGIL_BOOTSTRAP_ADMIN_TOKEN:-$$(cat $(TOKEN_FILE))} \
	  $(BIN)/bentoml serve service.gateway:Gateway --host $(HOST) --port $(PORT)

# a development CA, server and client certificate under $(DATA)/tls (docs/security.md)
cert: venv
	$(BIN)/python -m service.devcert --out $(DATA)/tls

test: venv
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not e2e"

# drift → a signed retraining webhook, end to end on 127.0.0.1 (about a minute)
demo: venv
	$(BIN)/python -m demo.retrain_scenario

# 3 replicas on 127.0.0.1 against this machine's PostgreSQL and NATS (each with a schema and a
# stream of its own, dropped after): keyed load round robin, the Monitor leasing a partition
# SIGKILLed, `vigil cluster` before and after, counts vs acknowledged responses (a minute or two)
cluster-demo: venv
	$(BIN)/python -m demo.cluster

demo-train: venv
	$(BIN)/python -m models.demo.train

build: venv
	$(BIN)/bentoml build

# about 15 minutes (14 min 55 s on the shared 2 cores): writes load_tests/bench_results.md (docs/performance.md copies its tables); needs
# `hey`. The nats rows need PostgreSQL and NATS: VIGIL_TEST_POSTGRES_URL (or VIGIL_STORE__URL) and
# VIGIL_LOG__NATS__URL (default nats://127.0.0.1:4222); without them they say so in one line
bench: venv
	command -v hey >/dev/null || (apt-get install -y -q hey || sudo apt-get install -y -q hey)
	$(BIN)/python -m load_tests.bench --suite --seconds 5

bench-monitor: venv
	$(BIN)/python -m load_tests.monitor_bench --drift

# seeded, offline, a few minutes: writes load_tests/drift_results.md (docs/monitoring.md has its table)
drift-bench: venv
	$(BIN)/python -m load_tests.drift_bench --runs 20 --out load_tests/drift_results.md

# mixed load for SOAK_MINUTES (default 10) on 127.0.0.1: errors, drops, Monitor lag and memory
# of every process at minute 2 and at the end; writes load_tests/soak_results.md. Then the
# whole-server SIGKILL + restart test over five seeds (make test runs one).
soak: venv
	$(BIN)/python -m load_tests.soak --minutes $(or $(SOAK_MINUTES),10)
	VIGIL_FAULT_SEEDS=1,2,3,4,5 $(BIN)/python -m pytest -q tests/e2e/test_crash_restart.py

# make logs-export MODEL=breast_cancer SINCE=24h OUT=preds.parquet
logs-export: venv
	$(BIN)/vigil logs export --out $(or $(OUT),predictions.parquet) \
	  $(if $(MODEL),--model $(MODEL)) $(if $(SINCE),--since $(SINCE))

lint: venv
	$(BIN)/ruff check service models monitoring store control tests load_tests demo
	$(BIN)/mypy

clean:
	rm -rf var .pytest_cache

# the console's browser libraries from the npm registry, integrity-checked (needs npm)
.PHONY: console-assets
console-assets:
	bash service/console/vendor.sh
