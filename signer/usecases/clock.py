"""The service's clock: timezone-aware UTC.

Components take a clock (`Clock`) rather than calling this directly where time
decides an outcome (leases, approval windows, activation delays), so that tests
can pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
