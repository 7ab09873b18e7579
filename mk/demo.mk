# --- Demo and local stack (owner: admission area) -------------------------------
# `make demo`: mint daemon + OPA + server on this machine, the seed's scenarios
# (users A, B, C via setpriv when root), each decision and pod printed, then a
# clean stop. `make up`: the same stack in the foreground until Ctrl-C.
# OPA runs with deploy/opa/config.yaml and downloads the signed bundle that
# `make bundle` built from a local bundle server, verifying it with the public
# key beside the signing key.
DEMO_BUNDLE     ?= $(CURDIR)/bundles/build/wsc.tar.gz
DEMO_BUNDLE_KEY ?= $(CURDIR)/bundles/build/dev-signing-key.pem.pub
DEMO_ARGS = --opa $(TOOLS_BIN)/opa --bundle $(DEMO_BUNDLE) --verification-key $(DEMO_BUNDLE_KEY)

demo: $(VENV)/.installed $(TOOLS_BIN)/opa bundle ## start everything, run the seed's scenarios, stop
	$(VPY) scripts/demo.py $(DEMO_ARGS)

up: $(VENV)/.installed $(TOOLS_BIN)/opa bundle ## run mint daemon + OPA + server in the foreground
	$(VPY) scripts/demo.py --up $(DEMO_ARGS)

# Submit latency/throughput through the server beside the raw OPA decision, same
# run (bench/bench_submit.py); the table goes to build/, record it in
# docs/benchmarks.md. Not a timed test: targets are reported, not enforced.
BENCH_SUBMIT_RATE ?= 500

# The open-loop load generator, stdlib-only Go.
$(TOOLS_BIN)/httpload: bench/httpload/main.go
	mkdir -p $(@D)
	cd bench/httpload && GO111MODULE=off go build -trimpath -o $@ main.go

.PHONY: bench-submit
bench-submit: $(VENV)/.installed $(TOOLS_BIN)/opa $(TOOLS_BIN)/httpload bundle ## submit p50/p99 via the server vs raw OPA
	mkdir -p build
	$(VPY) bench/bench_submit.py --rate $(BENCH_SUBMIT_RATE) --duration $(BENCH_DURATION) \
	  --opa $(TOOLS_BIN)/opa --httpload $(TOOLS_BIN)/httpload --bundle $(DEMO_BUNDLE) --verification-key $(DEMO_BUNDLE_KEY) \
	  --record build/bench-submit.md

bench: bench-submit
