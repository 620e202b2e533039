# The README's commands. `make demo` and `make test` install what is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench protos setup system-deps clean

demo: setup
	$(VENV)/bin/custos demo --dir .demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

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
