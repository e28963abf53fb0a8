# metrics-aggregation — every set-up step lives here, so a fresh machine needs only `make test` / `make demo`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := venv
BIN := $(VENV)/bin
STACK ?= dev
# The toolchain components preview/up, the sandbox and the e2e tier need (toolchain/build.sh list).
ENGINE_COMPONENTS := pulumi python tls command kubernetes etcd kube-apiserver kube-controller-manager metrics-server kubectl
# `make demo`'s sandbox (sandbox/cluster.py defaults; Pulumi.sandbox.yaml names these paths).
SANDBOX_DIR := /run/metrics-aggregation-sandbox
# The sandbox stack's state lives with the sandbox (sandbox-down deletes both); other stacks use
# toolchain/pulumi.env's backend.
# BACKEND=postgres: the local PostgreSQL server of `make backend-up` (tools/pg_backend.py) instead.
BACKEND ?= file
STACK_ENV = $(if $(filter sandbox,$(STACK)),export PULUMI_BACKEND_URL=file://$(SANDBOX_DIR)/state &&,) \
  $(if $(filter postgres,$(BACKEND)),PULUMI_BACKEND_URL="$$($(BIN)/python -m tools.pg_backend url)" && export PULUMI_BACKEND_URL &&,)
# Tools installed into the venv (actionlint, ruff, pytest) come first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# System packages the test hosts and linters need (Debian names); mawk and gawk: the editor is tested with both.
SYSTEM_PACKAGES := openssh-server openssh-client iproute2 shellcheck curl sudo util-linux procps strace mawk gawk busybox
# The PostgreSQL server of the postgres state backend (make backend-up, the e2e tier's backend test).
BACKEND_PACKAGES := postgresql
# $(call apt_install,TAG,PACKAGES): install the Debian packages that are missing, quietly.
define apt_install
	@missing=""; for p in $(2); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "[$(1)] installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# ---- set-up ---------------------------------------------------------------------------------------
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "$(BIN)/pip install -r requirements-dev.txt" >&2
	@$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt >&2
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## create the virtualenv with the pinned requirements

.PHONY: system-deps
system-deps: ## install the Debian packages the host tests need (when missing)
	$(call apt_install,system-deps,$(SYSTEM_PACKAGES))

.PHONY: backend-deps
backend-deps: ## install the PostgreSQL server (Debian package) when missing
	$(call apt_install,backend-deps,$(BACKEND_PACKAGES))

# ---- checks ---------------------------------------------------------------------------------------
.PHONY: lint
lint: venv system-deps ## ruff + shellcheck
	$(BIN)/ruff check .
	shellcheck components/scripts/*.sh sandbox/*.sh lab/shims/* $(wildcard toolchain/*.sh) $(wildcard tests/hosts/*.sh) .ci/run

.PHONY: unit
unit: venv system-deps ## unit tier: the whole program under Pulumi mocks
	$(BIN)/pytest tests/unit -q

.PHONY: lab
lab: venv system-deps ## the lab's and the sandbox's own tests (lab/tests, sandbox/tests; no root, no namespaces)
	$(BIN)/pytest lab/tests sandbox/tests -q

.PHONY: hosts
hosts: venv system-deps ## host tier: the host script over real SSH in network namespaces
	$(BIN)/pytest tests/hosts -q -m hosts

.PHONY: test
test: lint unit lab hosts e2e ## everything CI runs

# ---- the Pulumi toolchain and engine (built from Go modules; see toolchain/versions.env) -------------
.PHONY: toolchain
toolchain: ## build the pinned engine, language host and providers into ~/.cache/metrics-aggregation
	bash toolchain/build.sh build

.PHONY: preview
preview: venv toolchain ## pulumi preview --diff for STACK, offline (BACKEND=file|postgres, passphrase secrets), with the policy pack
	source <(bash toolchain/build.sh env) && $(STACK_ENV) pulumi stack select --create "$(STACK)" && \
	  pulumi preview --diff --stack "$(STACK)" --policy-pack policy --policy-pack-config "policy/config/$(STACK).json"

.PHONY: up
up: venv toolchain ## pulumi up for STACK, offline settings as for preview
	source <(bash toolchain/build.sh env) && $(STACK_ENV) pulumi stack select --create "$(STACK)" && pulumi up --stack "$(STACK)"

.PHONY: preview-diff
preview-diff: venv toolchain ## markdown summary of `pulumi preview --json` per master (STACK=dev|prod)
	source <(bash toolchain/build.sh env) && $(STACK_ENV) \
	  pulumi preview --stack "$(STACK)" --json --non-interactive | $(BIN)/python -m tools.preview_diff --stack "$(STACK)" -

# The audit runs only the pulumi CLI (`pulumi config`, `stack output`, `stack export`); a repair's targeted
# `up` also the language host and the providers of what it may update (toolchain/build.sh list). Recipes
# are silent (@) and the build's progress goes to stderr: `make audit AUDIT_ARGS=--json > f.json` is JSON.
AUDIT_COMPONENTS := pulumi
REPAIR_COMPONENTS := pulumi python tls command kubernetes

.PHONY: audit
audit: venv ## read-only drift audit of STACK: masters' flags, cert files, readiness; APIService, metrics-server (AUDIT_ARGS=--json)
	@bash toolchain/build.sh build $(AUDIT_COMPONENTS) >&2
	@source <(bash toolchain/build.sh env) && $(STACK_ENV) \
	  $(BIN)/python -m tools.audit --stack "$(STACK)" $(AUDIT_ARGS)

.PHONY: repair
repair: venv ## audit STACK, re-run the stored steps of each drifted master (rollout order), audit again (docs/audit.md)
	@bash toolchain/build.sh build $(REPAIR_COMPONENTS) >&2
	@source <(bash toolchain/build.sh env) && $(STACK_ENV) \
	  $(BIN)/python -m tools.audit --stack "$(STACK)" --repair $(AUDIT_ARGS)

.PHONY: toolchain-pulumi
toolchain-pulumi: ## only what preview/up, the sandbox and the engine tests need
	bash toolchain/build.sh build $(ENGINE_COMPONENTS)
.PHONY: e2e
e2e: venv system-deps backend-deps toolchain-pulumi ## engine tier: pulumi up/preview/destroy for real against the SSH test hosts
	$(BIN)/pytest tests/e2e -q -m e2e

# ---- shared state: a local PostgreSQL server for the postgres DIY backend (docs/backends.md) ---------
# Its own data directory (PG_BACKEND_DIR, default /var/lib/metrics-aggregation/pg-backend as root), 127.0.0.1
# port PG_BACKEND_PORT (54329), no systemd; the role's password is generated on first start into a 0600
# pgpass file there, never into git. `make preview|up STACK=… BACKEND=postgres` then uses it.
.PHONY: backend-up
backend-up: venv backend-deps ## start the local PostgreSQL state backend (init on first start); idempotent
	$(BIN)/python -m tools.pg_backend up

.PHONY: backend-down
backend-down: venv ## stop the local PostgreSQL state backend (its data stays)
	$(BIN)/python -m tools.pg_backend down

# ---- the sandbox: a real control plane in network namespaces (sandbox/, built on lab/) -------------
.PHONY: sandbox-up
sandbox-up: venv system-deps toolchain-pulumi ## start the sandbox (etcd, 3 masters with sshd + kube-apiserver, nodes); idempotent
	$(BIN)/python -m sandbox up --dir $(SANDBOX_DIR)

.PHONY: sandbox-down
sandbox-down: venv ## stop the sandbox and delete everything it made (namespaces, $(SANDBOX_DIR), the sandbox stack's state)
	$(BIN)/python -m sandbox down --dir $(SANDBOX_DIR)

.PHONY: sandbox-status
sandbox-status: venv ## is the sandbox up? (what runs, each apiserver's readiness)
	$(BIN)/python -m sandbox status --dir $(SANDBOX_DIR)

.PHONY: demo
demo: sandbox-up ## the whole job on a fresh machine: build, start the sandbox, pulumi up -s sandbox, query the metrics API
	source <(bash toolchain/build.sh env) && \
	  SANDBOX_DIR=$(SANDBOX_DIR) KUBECTL="$$(bash toolchain/build.sh bin-dir)/kubectl" bash sandbox/demo.sh

.PHONY: bench
bench: venv system-deps backend-deps toolchain-pulumi ## run every benchmark (prints figures; nothing is asserted)
	$(BIN)/python bench/program_scale.py
	$(BIN)/python bench/rollout.py
	$(BIN)/python bench/rollout.py --sandbox
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/takeover.py
	$(BIN)/python bench/backend.py
