# The README's commands. `make demo` and `make test` install what is missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# buf (lint and breaking-change checks of the API protos), pinned, installed from
# npm into the project's own .tools/ folder; tests/unit/test_buf.py runs it.
BUF_VERSION := 1.75.0
BUF    := .tools/buf/node_modules/.bin/buf
BUF_STAMP := .tools/buf/.installed-$(BUF_VERSION)

.PHONY: demo test soak fuzz lint bench protos setup system-deps clean buf buf-image lock

demo: setup
	$(VENV)/bin/custos demo --dir .demo

# TEST_WORKERS pytest processes (pytest-xdist), each with its own token, servers
# and temp dir; a file's tests stay in one process (its module-scoped servers).
TEST_WORKERS ?= 2
test: setup $(BUF_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# SIGKILL a server under load SOAK_KILLS times (make test runs 5, 20 with CI=true): every restart
# must succeed, its HSM workers must die with it, nothing received may be lost.
SOAK_KILLS ?= 100
soak: setup
	CUSTOS_SOAK_KILLS=$(SOAK_KILLS) $(PY) -m pytest -s -q \
	  tests/integration/test_soak.py

# FUZZ_EXAMPLES generated cases per chain parser and for SignBatch request decoding
# (make test: 400 per parser and 200 requests locally, 10,000 and 2,000 in CI).
# No per-test timeout: 100,000 cases of one test take longer than make test's 300 s.
FUZZ_EXAMPLES ?= 100000
fuzz: setup
	CUSTOS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CUSTOS_FUZZ_REQUESTS=$(FUZZ_EXAMPLES) \
	  $(PY) -m pytest -q tests/fuzz --timeout=0 \
	  --hypothesis-show-statistics

bench: setup
	$(PY) bench/run.py

protos: setup
	$(PY) scripts/gen_protos.py

# requirements.lock (what the image installs, with hashes) from pyproject.toml;
# tests/unit/test_lock.py fails when it is stale.
lock: setup
	$(PY) scripts/lock.py

setup: system-deps $(STAMP)

$(BUF_STAMP):
	@command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q npm; }
	@echo "installing buf $(BUF_VERSION) into .tools/buf (npm)"
	npm install --silent --no-audit --no-fund --prefix .tools/buf @bufbuild/buf@$(BUF_VERSION)
	touch $@

buf: $(BUF_STAMP)
	$(BUF) lint
	$(BUF) breaking --against proto/custos-v1.image.json

# Run when releasing the API: the image later changes are checked against.
buf-image: $(BUF_STAMP)
	$(BUF) build --exclude-source-info -o -#format=json \
	  | $(PY) -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=1, sort_keys=True))' \
	  > proto/custos-v1.image.json

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
	rm -rf $(VENV) .tools .demo .mypy_cache .ruff_cache .pytest_cache
