# smmu-forensics: `make demo` and `make test` work on a fresh Debian machine with python3.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SAMPLE  := fixtures/qemu-panic-carved.elf
SYNTH   := out/demo-rejected.elf
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: setup system-deps demo test lint typecheck unit bench fuzz check-captures clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the tests use: makedumpfile (a real producer of kdump files), zstd.
# Installed when missing and we may (root); without them those tests skip.
system-deps:
	@if ! command -v makedumpfile >/dev/null 2>&1 || ! command -v zstd >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing makedumpfile and zstd (Debian packages)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq makedumpfile zstd >/dev/null; \
	  else echo "note: makedumpfile/zstd missing and not root: the tests that need them will skip"; fi; \
	fi

demo: $(STAMP)
	@echo "== the real stream table carved from a QEMU arm64 guest (adopted by every ruleset)"
	$(BIN)/smmu-forensics inspect $(SAMPLE) --rules all
	@echo
	@echo "== a synthesized dump whose L1[1] has span 5 (every ruleset resets the SMMU)"
	@mkdir -p out
	$(BIN)/smmu-forensics synth fixtures/scenarios/l1-span.yaml -o $(SYNTH) --format kdump-zlib > /dev/null
	@$(BIN)/smmu-forensics inspect $(SYNTH) --rules all; \
	  echo "(exit code $$?: 1 means rejected, as fixtures/scenarios/l1-span.yaml declares)"

lint: $(STAMP)
	$(BIN)/ruff check smmu_forensics tests bench tools fuzz
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) system-deps
	$(BIN)/pytest -n $(JOBS)

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/bench_read.py
	$(BIN)/python bench/bench_inspect.py
	$(BIN)/python bench/bench_discover.py

# Coverage-guided fuzzing (atheris): every target for FUZZ_SECONDS, seeds from synth; crashes land
# in .fuzz/crashes/ (make test runs each target for a few seconds as a smoke test).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= dump regs scenario inspect dmesg
fuzz: $(STAMP)
	@mkdir -p .fuzz/crashes
	$(BIN)/python fuzz/fuzz.py --seeds .fuzz/corpus
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  $(BIN)/python fuzz/fuzz.py $$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=30 \
	    -artifact_prefix=.fuzz/crashes/$$t- .fuzz/corpus/$$t 2>&1 | grep -E "^(#[0-9]+.*(pulse|DONE)|Done|==[0-9]+==|.*crash)" || exit 1; \
	done

check-captures: $(STAMP)
	../shared/tools/check-captures .

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache .hypothesis
