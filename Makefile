# The README's commands. `make demo` and `make test` install what is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test soak fuzz lint bench protos setup system-deps clean

demo: setup
	$(VENV)/bin/custos demo --dir .demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# SIGKILL a server under load SOAK_KILLS times (make test runs 5): every restart
# must succeed, its HSM workers must die with it, nothing received may be lost.
SOAK_KILLS ?= 100
soak: setup
	CUSTOS_SOAK_KILLS=$(SOAK_KILLS) $(PY) -m pytest -s -q \
	  tests/integration/test_soak.py

# FUZZ_EXAMPLES generated cases per chain parser and for SignBatch request decoding
# (make test: 400 per parser and 200 requests locally, 10,000 and 2,000 in CI).
FUZZ_EXAMPLES ?= 100000
fuzz: setup
	CUSTOS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CUSTOS_FUZZ_REQUESTS=$(FUZZ_EXAMPLES) \
	  $(PY) -m pytest -q tests/fuzz \
	  --hypothesis-show-statistics

bench: setup
	$(PY) bench/run.py

protos: setup
	$(PY) scripts/gen_protos.py

setup: system-deps $(STAMP)

# SoftHSM2 is the development HSM; libsecp256k1 backs the tests' second Bitcoin
# implementation (python-bitcointx); python3 and python3-venv may be missing on a
# bare Debian (bookworm's python3 is 3.11, which Custos needs).
system-deps:
	@if ! command -v softhsm2-util >/dev/null || ! ldconfig -p | grep -q libsecp256k1.so \
	    || ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip' 2>/dev/null; then \
	  apt-get update -q && apt-get install -y -q softhsm2 libsecp256k1-1 python3 python3-venv; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
