"""Settings of the fuzz suite: how many examples, and how they are chosen.

With CI=true each chain parser gets 10,000 examples (5,000 generated field by
field, 5,000 mutated at the byte level) and SignBatch request decoding gets
2,000: one request costs about 6 ms (SQLite commits, signing), over the 5 ms
that 10,000 of them could take within the suite's two minutes. Locally the defaults are 400 and 200. Override with
CUSTOS_FUZZ_EXAMPLES (per parser) and CUSTOS_FUZZ_REQUESTS.

In CI the examples are derandomized: they follow from each test's name, so a
red CI run replays exactly on a laptop with CI=true, and no example database is
read or written. Locally they are random, and the example database in
.hypothesis/ replays a failure found once before anything new.

The settings are applied per test (@CHAIN_FUZZ, @REQUEST_FUZZ), not loaded as
the global profile, so the property tests elsewhere keep their own.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

IN_CI = os.environ.get("CI") == "true"
EXAMPLES_PER_PARSER = int(os.environ.get("CUSTOS_FUZZ_EXAMPLES", "10000" if IN_CI else "400"))
REQUEST_EXAMPLES = int(os.environ.get("CUSTOS_FUZZ_REQUESTS", "2000" if IN_CI else "200"))

settings.register_profile(
    "custos-fuzz",
    deadline=None,  # a 1000-input transaction legitimately takes a while
    derandomize=IN_CI,
    **({"database": None} if IN_CI else {}),
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,  # huge strings and repeated fields are slow to generate, on purpose
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,  # mutations that protobuf itself refuses are skipped
        HealthCheck.large_base_example,
    ],
)
FUZZ = settings.get_profile("custos-fuzz")
# Two tests per parser (structured, mutated), half of the parser's examples each.
CHAIN_FUZZ = settings(FUZZ, max_examples=-(-EXAMPLES_PER_PARSER // 2))
REQUEST_FUZZ = settings(FUZZ, max_examples=REQUEST_EXAMPLES)

# How many inputs reached each parser (and the SignBatch edge): shown after the run.
PARSED: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if PARSED:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(PARSED.items()))
        terminalreporter.write_line(f"fuzz inputs parsed: {counts}")
