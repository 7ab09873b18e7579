# Token benchmarks beside MUNGE (Debian's munge package), same run, ratios.

.PHONY: bench-mint bench-spool bench-e2e munge

munge: ## install Debian's munge (benchmark only)
	@command -v munged >/dev/null && command -v remunge >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge; }

# Our counterpart of remunge, stdlib-only Go.
$(TOOLS_BIN)/mintload: bench/mintload/main.go
	mkdir -p $(@D)
	cd bench/mintload && GO111MODULE=off go build -trimpath -o $@ main.go

bench-mint: $(VENV)/.installed $(TOOLS_BIN)/mintload munge ## mint/open throughput vs MUNGE
	mkdir -p build
	$(VPY) bench/bench_mint.py --duration $(BENCH_DURATION) --mintload $(TOOLS_BIN)/mintload \
	  --record build/bench-mint.md

bench-spool: $(VENV)/.installed ## spool list/get CPU with 10,000 jobs stored
	$(VPY) bench/bench_spool.py --jobs 10000

bench: bench-mint bench-spool bench-e2e ## run every benchmark (tables go to build/, record them in docs/benchmarks.md)

# Submit-to-running on the real node, beside the same pod created directly
# (root: it starts the node and runs the CLI as another uid).
bench-e2e: $(VENV)/.installed $(POLICY_TOOLS) node-bins images ## submit-to-running on the real node vs a direct pod create
	mkdir -p build
	$(VPY) bench/bench_e2e.py --rounds 20 --record build/bench-e2e.md
