# tokensvc — every entry point a newcomer or CI needs. Run `make help`.
#
# Pinned tool versions: this block is the one place to change them.
OPA_VERSION       := v1.22.3
CONFTEST_VERSION  := v0.71.1
REGAL_VERSION     := v0.35.1
# Kubernetes: the API server built for tests (tools/k8s) and the schema
# version kubernetes-validate checks generated pods against.
K8S_VERSION       := v1.34.12
K8S_SCHEMA_VERSION := 1.34
ETCD_VERSION      := v3.6.4
# The end-to-end node: containerd built from its Go module (tools/containerd);
# runc, CNI plugins and the job image's busybox from Debian, at these
# upstream versions (mk/node.mk installs them and checks).
CONTAINERD_VERSION  := v2.4.2
RUNC_VERSION        := 1.1.5
CNI_PLUGINS_VERSION := 1.1.1
BUSYBOX_VERSION     := 1.35.0

# Debian's Python where there is one: the tests run the CLI and the mint client
# as other uids (setpriv), which need an interpreter every uid can execute (a
# pyenv build under a 0700 home is not), and the server image is built from
# the same Debian Python, so the venv's wheels fit it.
PYTHON    ?= $(firstword $(wildcard /usr/bin/python3.11) python3)
VENV      := $(CURDIR)/.venv
VPY       := $(VENV)/bin/python
TOOLS_DIR := $(CURDIR)/.tools
TOOLS_BIN := $(TOOLS_DIR)/bin
export PATH := $(TOOLS_BIN):$(VENV)/bin:$(PATH)
export TOKENSVC_K8S_SCHEMA_VERSION := $(K8S_SCHEMA_VERSION)
# Seconds per benchmark measurement (mk/bench.mk, mk/demo.mk).
BENCH_DURATION ?= 5

.DEFAULT_GOAL := help
.PHONY: help venv tools test lint typecheck pytest unit bench bundle demo up clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

# --- Python environment -------------------------------------------------------
# Re-created whenever pyproject.toml changes. Debian's Python makes venvs
# only with its python3.11-venv package: installed here when missing.
$(VENV)/.installed: pyproject.toml
	@if [ "$(PYTHON)" = /usr/bin/python3.11 ] && ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-venv; fi
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create the project venv with pinned dependencies

# --- Go-built tools (go install <module>@<version>, no release downloads) -----
# Each version lands in its own directory; bin/ holds symlinks to the pinned one.
define go_tool
# Built via `go get` in a scratch module: `go install <m>@<v>` also fetches the
# module's version list (for deprecation notices), which the proxy refuses for
# github.com/styrainc/regal; the pinned version is used either way.
$(TOOLS_DIR)/$(1)/$(3)/$(1):
	mkdir -p $$(@D)
	d=$$$$(mktemp -d) && cd $$$$d && go mod init tools-build >/dev/null 2>&1 && \
	  go get $(2)@$(3) && GOBIN=$$(@D) go install $(2); rc=$$$$?; rm -rf $$$$d; exit $$$$rc

$(TOOLS_BIN)/$(1): $(TOOLS_DIR)/$(1)/$(3)/$(1)
	mkdir -p $$(@D)
	ln -sfn $$< $$@
endef
$(eval $(call go_tool,opa,github.com/open-policy-agent/opa,$(OPA_VERSION)))
$(eval $(call go_tool,conftest,github.com/open-policy-agent/conftest,$(CONFTEST_VERSION)))
$(eval $(call go_tool,regal,github.com/styrainc/regal,$(REGAL_VERSION)))

POLICY_TOOLS := $(TOOLS_BIN)/opa $(TOOLS_BIN)/conftest $(TOOLS_BIN)/regal
tools: $(POLICY_TOOLS) ## install OPA, conftest and Regal at the pinned versions

# --- Checks -------------------------------------------------------------------
lint: $(VENV)/.installed $(POLICY_TOOLS) ## ruff, mypy, opa fmt/check, regal
	$(VENV)/bin/ruff check tokensvc tests bench scripts
	$(VENV)/bin/ruff format --check tokensvc tests bench scripts
	$(VENV)/bin/mypy

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed $(POLICY_TOOLS)
	$(VPY) -m pytest

unit: $(VENV)/.installed $(POLICY_TOOLS) ## the unit tests only (under a minute, no root)
	$(VPY) -m pytest -q tests/unit

test: lint pytest policy-test ## everything CI runs: lint, types, pytest, policy tests

clean: ## remove build output (keeps the venv and tools)
	rm -rf bundles/build build .run

include $(wildcard mk/*.mk)
