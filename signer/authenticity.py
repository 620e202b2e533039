"""Authenticated state: HSM-made tags on stored facts, so the database cannot authorize.

DESIGN invariant 8: whoever can write the store but holds neither the HSM nor a
client certificate must get no signature. Every stored fact that can lead to one
carries a tag: HMAC-SHA256, computed inside the HSM under a secret key that
never leaves it ([integrity] key_id), over the fact's canonical encoding bound
to its identity: the table, the primary key, a version counter that every
change of the row increments, and every field by name. So a row can be neither
altered, nor moved to another id, nor given another row's contents, without its
tag failing. (A row replaced by an *older* version of itself still carries a
valid tag: callers bound that replay with facts kept elsewhere, e.g. the audit
log names the active policy version; see the README's threat model.)

Tags are computed in the HSM worker pool, many per round trip. Verified
(message digest -> tag) pairs are kept in a bounded cache: a hot row (a key
record read by every SignBatch) costs one HSM call the first time only. Only
tags the HSM computed enter the cache, so a cache hit proves what an HSM call
would.

A failed check raises TamperedState (DATA_LOSS at the gRPC edge), counts
custos_state_integrity_failures_total{table}, logs an ERROR line and calls the
alarm hook (an audit record, where the log can still take one).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from signer import metrics
from signer.errors import TamperedState

log = logging.getLogger("custos.integrity")

DOMAIN = b"custos/state/v1"
# The fixed message whose tag pins the key in the config ([integrity] key_check).
KEY_CHECK_MESSAGE = b"custos/state-key-check/v1"
TAG_BYTES = 32
CACHE_ENTRIES = 65_536

Value = str | int | bytes | bool | None
MacMany = Callable[[Sequence[bytes]], list[bytes]]


def _item(value: Value) -> bytes:
    """One value, typed and length-prefixed: no two different values encode alike."""
    if value is None:
        kind, data = b"n", b""
    elif isinstance(value, bool):  # before int: bool is an int subclass
        kind, data = b"t", b"\x01" if value else b"\x00"
    elif isinstance(value, int):
        kind, data = b"i", str(value).encode()  # any size: budget amounts are uint256
    elif isinstance(value, str):
        kind, data = b"s", value.encode()
    elif isinstance(value, bytes | bytearray | memoryview):
        kind, data = b"b", bytes(value)
    else:  # pragma: no cover - the type says it cannot happen
        raise TypeError(f"cannot encode {type(value).__name__}")
    return kind + len(data).to_bytes(8, "big") + data


@dataclass(frozen=True, slots=True)
class Fact:
    """A stored row as the HSM authenticates it."""

    table: str
    key: tuple[Value, ...]  # the primary key, in column order
    version: int  # incremented by every change of the row
    fields: tuple[tuple[str, Value], ...]  # every other column that carries meaning

    def encode(self) -> bytes:
        parts = [DOMAIN, _item(self.table), _item(len(self.key))]
        parts += [_item(v) for v in self.key]
        parts += [_item(self.version), _item(len(self.fields))]
        for name, value in self.fields:
            parts += [_item(name), _item(value)]
        return b"".join(parts)

    def row_name(self) -> str:
        return f"{self.table}[{', '.join(repr(v) for v in self.key)}]"


class StateAuthenticator:
    """Computes and checks tags of Facts with an HSM-resident HMAC key."""

    def __init__(
        self,
        mac_many: MacMany,
        *,
        alarm: Callable[[TamperedState], None] = lambda _exc: None,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self._mac_many = mac_many
        self._alarm = alarm
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache_entries = cache_entries
        self._lock = threading.Lock()
        self.hsm_calls = 0  # round trips made, for tests and the benchmark

    def _remember(self, digest: bytes, tag: bytes) -> None:
        with self._lock:
            self._cache[digest] = tag
            self._cache.move_to_end(digest)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)

    def _cached(self, digest: bytes) -> bytes | None:
        with self._lock:
            tag = self._cache.get(digest)
            if tag is not None:
                self._cache.move_to_end(digest)
            return tag

    def _compute(self, messages: Sequence[bytes]) -> list[bytes]:
        self.hsm_calls += 1
        tags = self._mac_many(messages)
        if len(tags) != len(messages) or any(len(t) != TAG_BYTES for t in tags):
            raise RuntimeError("the HSM returned malformed state tags")
        return tags

    def tags(self, facts: Sequence[Fact]) -> list[bytes]:
        """Tags for `facts` (one HSM round trip), remembered as verified."""
        messages = [fact.encode() for fact in facts]
        tags = self._compute(messages) if messages else []
        for message, tag in zip(messages, tags, strict=True):
            self._remember(hashlib.sha256(message).digest(), tag)
        return tags

    def tag(self, fact: Fact) -> bytes:
        return self.tags([fact])[0]

    def verify(self, rows: Sequence[tuple[Fact, bytes | None]]) -> None:
        """Check every (fact, stored tag); TamperedState naming the first bad row.

        Rows whose (encoding, tag) pair was verified before cost nothing; the
        others are checked in one HSM round trip.
        """
        missing: list[tuple[Fact, bytes, bytes]] = []  # fact, digest, stored tag
        bad: list[tuple[Fact, str]] = []
        for fact, stored in rows:
            if stored is None or len(stored) != TAG_BYTES:
                bad.append((fact, "has no authenticator"))
                continue
            message = fact.encode()
            digest = hashlib.sha256(message).digest()
            cached = self._cached(digest)
            if cached is not None and hmac.compare_digest(cached, bytes(stored)):
                continue
            missing.append((fact, digest, bytes(stored)))
        if missing:
            expected = self._compute([fact.encode() for fact, _d, _s in missing])
            for (fact, digest, stored), tag in zip(missing, expected, strict=True):
                if hmac.compare_digest(tag, stored):
                    self._remember(digest, tag)
                else:
                    bad.append((fact, "does not match its authenticator"))
        if bad:
            failures = [self._report(fact, why) for fact, why in bad]
            raise failures[0]

    def check(self, fact: Fact, stored: bytes | None) -> None:
        self.verify([(fact, stored)])

    def _report(self, fact: Fact, why: str) -> TamperedState:
        exc = TamperedState(fact.table, fact.key, why)
        metrics.STATE_INTEGRITY_FAILURES.labels(fact.table).inc()
        log.error("stored state failed its integrity check: %s %s", fact.row_name(), why)
        try:
            self._alarm(exc)
        except Exception:  # the alarm is best effort: the refusal stands regardless
            log.exception("could not record the integrity failure")
        return exc

    def forget(self) -> None:
        """Drop every cached verification (tests; a changed key)."""
        with self._lock:
            self._cache.clear()


def key_check_value(mac_many: MacMany) -> str:
    """Hex tag of KEY_CHECK_MESSAGE: pins which HSM key the config expects."""
    return mac_many([KEY_CHECK_MESSAGE])[0].hex()


def check_key(mac_many: MacMany, expected: str | None) -> None:
    """Start-up check of the state key: ValueError saying what differs."""
    actual = key_check_value(mac_many)
    if expected is not None and not hmac.compare_digest(actual, expected):
        raise ValueError(
            "the token's state-authentication key is not the one the config pins"
            f" (integrity.key_check is {expected[:16]}..., the token's key gives {actual[:16]}...)"
        )
