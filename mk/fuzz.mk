# --- Fuzzing: coverage-guided (atheris, libFuzzer) runs of every user-facing parser ---------
# `make fuzz` runs each target of tests/fuzz/targets.py for FUZZ_SECONDS and
# keeps the inputs that reach new code in tests/fuzz/corpus/TARGET (commit
# them); a finding stops the run and leaves its input in build/fuzz/.
# `make test` runs a short fixed number of inputs of each (tests/fuzz/test_fuzz.py).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := token_open mint_request mint_reply job_request http_request

.PHONY: fuzz
fuzz: $(VENV)/.installed ## run every fuzz target for FUZZ_SECONDS (corpus kept in tests/fuzz/corpus)
	mkdir -p build/fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s)"; \
	  $(VPY) tests/fuzz/run.py $$t tests/fuzz/corpus/$$t -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=5 -print_final_stats=1 -artifact_prefix=build/fuzz/$$t- 2>&1 | \
	    grep -E '^(Done|stat::number_of_executed_units|==[0-9]+== ERROR)' ; \
	done
