# Every target works on a fresh machine: it builds .venv from this repository's own files.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv browser test lint demo bench chaos clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints-dev.txt
	python3 -m venv $(VENV)
	# torch first and pinned: the CPU build on disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# constraints-dev.txt pins every dev dependency: reproducible, and pip resolves s3fs /
	# aiobotocore / boto3 at once instead of backtracking through boto3 releases for minutes.
	$(PY) -m pip install -q -c constraints-dev.txt -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

# The dashboard test opens the report in a real headless Chromium: Debian's package (Playwright
# drives it; it downloads no browser of its own).
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test: lint browser
	$(VENV)/bin/pytest -q

demo: venv
	$(PY) examples/demo.py

# Each prints a table and writes bench/results/*.json; see bench/README.md and the README.
bench: venv
	$(PY) bench/checkpoint_bench.py
	$(PY) bench/s3_bench.py
	$(PY) bench/sharded_bench.py
	$(PY) bench/report_bench.py
	$(PY) bench/simulate_bench.py

# 100 random interruptions (SIGTERM and SIGKILL of the training process, SIGKILL mid-save,
# SIGTERM and SIGKILL of the supervisor itself), then a bit-for-bit comparison with an
# uninterrupted run. Takes several minutes: every restart imports torch again.
CHAOS_KILLS ?= 100
chaos: venv
	$(VENV)/bin/spotsafe chaos --kills $(CHAOS_KILLS) --seed 1 --max-delay-s 2 -- \
		sh -c 'exec "$$0" -m tests.support.guarded_train "$$SPOTSAFE_STORE" "$$@"' $(abspath $(PY)) \
		--epochs 300 --every 5 --step-s 0.05

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
