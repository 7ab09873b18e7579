# --- Policies (issue 3): Rego decision, conftest rules, signed bundle -------------
# Tools come from the pinned block in the Makefile ($(POLICY_TOOLS)).
OPA      := $(TOOLS_BIN)/opa
CONFTEST := $(TOOLS_BIN)/conftest
REGAL    := $(TOOLS_BIN)/regal
# samples/ hold conftest inputs (YAML manifests); OPA would load them as data.
OPA_LOAD := --ignore samples

BUNDLE_OUT         := bundles/build/wsc.tar.gz
# Path of the PEM RSA private key that signs the bundle. The default is a dev
# key generated on first use into bundles/build/ (git-ignored, never committed);
# production builds pass BUNDLE_SIGNING_KEY=/path/to/key.
BUNDLE_SIGNING_KEY ?= bundles/build/dev-signing-key.pem

# Decisions recorded by the running server (scripts/record_decisions.py); the
# merge gate replays them against the committed and the edited policy.
RECORDED_DECISIONS ?= tests/data/recorded-decisions.jsonl
# The policy as committed: what `policy-diff` compares the working tree with.
POLICY_BASE ?= HEAD

.PHONY: policy-lint policy-test policy-check policy-diff policy-decisions conftest-samples \
  bundle bench-policy bench-policy-diff

policy-lint: $(POLICY_TOOLS) ## opa fmt, opa check --strict, regal lint
	@unformatted="$$($(OPA) fmt -l policies)"; \
	  if [ -n "$$unformatted" ]; then echo "opa fmt: not formatted (run: opa fmt -w policies):"; \
	    echo "$$unformatted"; exit 1; fi
	$(OPA) check --strict $(OPA_LOAD) policies
	$(REGAL) lint policies

policy-test: policy-lint conftest-samples ## opa test (100% coverage), conftest verify, samples
	$(OPA) test $(OPA_LOAD) policies
	$(OPA) test $(OPA_LOAD) --timeout 120s --coverage --format json policies | $(PYTHON) scripts/opa_coverage.py
	$(CONFTEST) verify --no-color --policy policies/conftest

policy-check: policy-test policy-diff ## an admin's merge gate: policy-test, then diff vs $(POLICY_BASE)

# Recorded decisions replayed against $(POLICY_BASE)'s policies/ and the working
# tree's; fails on any widening (review it, then merge with POLICY_BASE=... or
# run `tokensvc policy diff --allow-widening` by hand).
policy-diff: $(VENV)/.installed $(TOOLS_BIN)/opa
	@base="$$(mktemp -d)"; trap 'rm -rf "$$base"' EXIT; \
	  git archive $(POLICY_BASE) policies | tar -x -C "$$base"; \
	  $(VPY) -m tokensvc policy diff "$$base/policies/wsc,$$base/policies/data" \
	    policies/wsc,policies/data --decisions $(RECORDED_DECISIONS) --opa $(OPA)

# Refresh $(RECORDED_DECISIONS) from a local stack (as root); commit the result.
policy-decisions: $(VENV)/.installed $(TOOLS_BIN)/opa
	$(VPY) scripts/record_decisions.py --out $(RECORDED_DECISIONS) --opa $(OPA)

# Every allowed sample passes its namespace's rules; every denied sample fails them.
conftest-samples: $(POLICY_TOOLS)
	@set -e; for ns in pod deploy; do \
	  dir=policies/conftest/$$ns/samples; \
	  $(CONFTEST) test --no-color --policy policies/conftest --namespace conftest.$$ns $$dir/allowed/*.yaml >/dev/null; \
	  for f in $$dir/denied/*.yaml; do \
	    if $(CONFTEST) test --no-color --policy policies/conftest --namespace conftest.$$ns $$f >/dev/null; then \
	      echo "conftest: denied sample $$f passed conftest.$$ns"; exit 1; fi; \
	  done; \
	done; echo "conftest samples: allowed pass, denied fail"

bundle: $(VENV)/.installed $(TOOLS_BIN)/opa ## signed policy bundle -> bundles/build/wsc.tar.gz
	$(VPY) scripts/build_bundle.py --out $(BUNDLE_OUT) --signing-key $(BUNDLE_SIGNING_KEY) \
	  $(if $(filter bundles/build/dev-signing-key.pem,$(BUNDLE_SIGNING_KEY)),--generate-key)

# The policy the benchmark compares against in the same run: the Rego as it
# was before the readability rewrite (a commit of this repository).
POLICY_BASELINE_REV ?= bc3cb2e
POLICY_BASELINE_DIR := build/policy-baseline

bench-policy: $(VENV)/.installed $(TOOLS_BIN)/opa ## opa bench at 100/10k/100k, beside the baseline policy
	rm -rf $(POLICY_BASELINE_DIR) && mkdir -p $(POLICY_BASELINE_DIR)
	git archive $(POLICY_BASELINE_REV) policies/wsc | tar -x -C $(POLICY_BASELINE_DIR)
	$(VPY) bench/policy_bench.py --opa $(OPA) --baseline $(POLICY_BASELINE_DIR)/policies/wsc

bench-policy-diff: $(VENV)/.installed $(TOOLS_BIN)/opa ## time `tokensvc policy diff` over 10,000 decisions
	$(VPY) bench/policy_diff_bench.py --opa $(OPA)

lint: policy-lint
bench: bench-policy
