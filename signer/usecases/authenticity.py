"""Authenticated state: HSM-made tags on stored facts, so the database cannot authorize.

DESIGN invariant 8: whoever can write the store but holds neither the HSM nor a
client certificate must get no signature. Every stored fact that can lead to one
carries a tag: HMAC-SHA256, computed inside the HSM under a secret key that
never leaves it ([integrity] key_id), over the fact's canonical encoding bound
to its identity: the table, the primary key, a version counter that every
change of the row increments, and every field by name. So a row can be neither
altered, nor moved to another id, nor given another row's contents, without its
tag failing. A row replaced by an *older* version of itself still carries a
valid tag: the authenticator remembers the highest version of each row it has
seen (seeded at start-up from the audit log, whose records name the versions
they wrote) and refuses any lower one, so a replay is caught unless it happens
before this process ever saw the newer version (see the README's threat model).

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

import dataclasses
import hashlib
import hmac
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from custos.audit.record import AuditEvent
from custos.hsm.errors import KeyNotFound
from custos.signer.edge import metrics
from custos.signer.edge.errors import ConfigError, TamperedState
from custos.signer.store.policy_tables import PendingRow

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
        # Highest version seen per row, and the epoch when it was first seen.
        self._floors: dict[tuple[str, tuple[Value, ...]], tuple[int, int]] = {}
        self._epoch = 0
        self.hsm_calls = 0  # round trips made, for tests and the benchmark
        self._alarmed: set[tuple[str, tuple[object, ...]]] = set()  # rows already logged

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

    def epoch(self) -> int:
        """Take before reading rows, and pass to verify() as `since` (see there)."""
        with self._lock:
            return self._epoch

    def verify(self, rows: Sequence[tuple[Fact, bytes | None]], since: int | None = None) -> None:
        """Check every (fact, stored tag); TamperedState naming the first bad row.

        Rows whose (encoding, tag) pair was verified before cost nothing; the
        others are checked in one HSM round trip. `since`, the epoch() taken
        before the rows were read: a newer version first seen after that moment
        may have been committed after the read, so an older row is then a stale
        read, not a replay. None: the rows were read under a lock (current).
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
        if not bad:
            bad = self._check_floors([fact for fact, _stored in rows], since)
        if bad:
            failures = [self._report(fact, why) for fact, why in bad]
            raise failures[0]

    def _check_floors(self, facts: Sequence[Fact], since: int | None) -> list[tuple[Fact, str]]:
        """Authentic rows must not be older than a version seen before; raise the floors."""
        bad = []
        with self._lock:
            for fact in facts:
                floor, seen_at = self._floors.get((fact.table, fact.key), (0, 0))
                known_before_read = since is None or seen_at <= since
                if fact.version < floor and known_before_read:
                    bad.append(
                        (fact, f"is version {fact.version}, older than version {floor} seen before")
                    )
            if not bad:
                for fact in facts:
                    self._raise(fact.table, fact.key, fact.version)
        return bad

    def _raise(self, table: str, key: tuple[Value, ...], version: int) -> None:
        name = (table, key)
        if version > self._floors.get(name, (0, 0))[0]:
            self._epoch += 1
            self._floors[name] = (version, self._epoch)

    def raise_floor(self, table: str, key: tuple[Value, ...], version: int) -> None:
        """Refuse versions of this row below `version` from now on (e.g. from the audit log)."""
        with self._lock:
            self._raise(table, key, version)

    def check(self, fact: Fact, stored: bytes | None, since: int | None = None) -> None:
        self.verify([(fact, stored)], since)

    def _report(self, fact: Fact, why: str) -> TamperedState:
        exc = TamperedState(fact.table, fact.key, why)
        self.alarm(exc)
        return exc

    def alarm(self, exc: TamperedState) -> None:
        """Count, log and record an integrity failure (also for checks made elsewhere)."""
        metrics.STATE_INTEGRITY_FAILURES.labels(exc.table).inc()
        # An ERROR line once per row: a tampered row met by every sweep tick must
        # not flood the log (the counter still counts every refusal).
        with self._lock:
            first = (exc.table, exc.key) not in self._alarmed
            self._alarmed.add((exc.table, exc.key))
        if first:
            log.error("%s", exc)
        else:
            log.debug("%s", exc)
        try:
            self._alarm(exc)
        except Exception:  # the alarm is best effort: the refusal stands regardless
            log.exception("could not record the integrity failure")

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


def open_authenticator(
    mac_many_for: Callable[[str], MacMany],
    key_id: str,
    key_check: str | None,
    alarm: Callable[[TamperedState], None],
) -> StateAuthenticator:
    """The service's authenticator, after the start-up checks of its key.

    `mac_many_for(key_id)` gives the HSM operation. Raises ConfigError when the
    config pins no key, the token lacks the key, or the key is another one.
    """
    if key_check is None:
        raise ConfigError(
            "integrity.key_check: not set; run `custos integrity init-key --config ...`"
            " once and put the line it prints under [integrity]"
        )
    mac_many = mac_many_for(key_id)
    try:
        check_key(mac_many, key_check)
    except KeyNotFound:
        raise ConfigError(
            f"integrity.key_id: the token has no state-authentication key {key_id!r};"
            " it is created only by `custos integrity init-key` (never at start-up)"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"integrity.key_check: {exc}") from None
    return StateAuthenticator(mac_many, alarm=alarm)


def audit_alarm(append: Callable[[list[AuditEvent]], None]) -> Callable[[TamperedState], None]:
    """An alarm that writes one `state.tampered` audit record per bad row and process.

    On its own thread: a check may fail inside a store transaction, which must not
    wait for another write. Once per row: a client retrying must not flood the log.
    """
    seen: set[tuple[str, tuple[object, ...]]] = set()
    lock = threading.Lock()

    def write(exc: TamperedState) -> None:
        try:
            append(
                [
                    AuditEvent(
                        "state.tampered",
                        "system",
                        {"table": exc.table, "row": ", ".join(str(v) for v in exc.key)},
                    )
                ]
            )
        except Exception:  # the store may be what is broken; the refusal stands
            log.exception("could not write the state.tampered audit record")

    def alarm(exc: TamperedState) -> None:
        with lock:
            if (exc.table, exc.key) in seen:
                return
            seen.add((exc.table, exc.key))
        threading.Thread(target=write, args=(exc,), name="custos-alarm", daemon=True).start()

    return alarm


@dataclass
class LoggedState:
    """What the audit log says about authenticated rows: the floors replays must not undercut."""

    key_versions: dict[str, int]  # key id -> highest row version a key.* record names
    activations: dict[int, str]  # policy version -> hash, from policy.activated records
    # ceremony id -> highest row revision a ceremony.* record names
    ceremony_revs: dict[str, int] = dataclasses.field(default_factory=dict)
    # Endpoints removed (signer.usecases.webhooks): their rows, put back, must be refused.
    removed_webhooks: set[str] = dataclasses.field(default_factory=set)

    def seed(self, integrity: StateAuthenticator) -> None:
        for key_id, version in self.key_versions.items():
            integrity.raise_floor("keys", (key_id,), version)
        for ceremony_id, rev in self.ceremony_revs.items():
            # An executed ceremony put back as approved must not run again.
            integrity.raise_floor("ceremonies", (ceremony_id,), rev)
        for webhook_id in self.removed_webhooks:
            integrity.raise_floor("webhooks", (webhook_id,), 2)  # rows are version 1 for life


# Cheap byte tests before decoding: the log is mostly sign.* records.
_KEY_KINDS = (
    b'"kind":"key.created"',
    b'"kind":"key.imported"',
    b'"kind":"key.restored"',
    b'"kind":"key.enabled"',
    b'"kind":"key.disabled"',
    b'"kind":"key.retired"',
)
_ACTIVATED = b'"kind":"policy.activated"'
_CEREMONY = b'"kind":"ceremony.'
_WEBHOOK_REMOVED = b'"kind":"webhook.removed"'


def scan_audit_log(rows: Callable[[int, int], list[tuple[int, bytes, bytes]]]) -> LoggedState:
    """Read the whole log once (`rows` is Store.audit_rows) for key versions and activations."""
    logged = LoggedState({}, {})
    seq = 0
    while True:
        page = rows(seq, 5000)
        if not page:
            return logged
        for _seq, data, _leaf in page:
            if _ACTIVATED in data:
                fields = json.loads(data)["fields"]
                logged.activations[int(fields["version"])] = str(fields["hash"])
            elif _WEBHOOK_REMOVED in data:
                logged.removed_webhooks.add(str(json.loads(data)["fields"]["webhook_id"]))
            elif any(kind in data for kind in _KEY_KINDS):
                fields = json.loads(data)["fields"]
                key_id, version = str(fields["key_id"]), int(fields.get("row_version", 0))
                logged.key_versions[key_id] = max(logged.key_versions.get(key_id, 0), version)
            elif _CEREMONY in data:
                fields = json.loads(data)["fields"]
                ceremony_id, rev = str(fields["ceremony_id"]), int(fields.get("rev", 0))
                logged.ceremony_revs[ceremony_id] = max(
                    logged.ceremony_revs.get(ceremony_id, 0), rev
                )
        seq = page[-1][0] + 1


def pending_fact(row: PendingRow) -> Fact:
    """What a pending batch's tag covers: the request bytes, approvals (record) and state."""
    return Fact(
        "pending",
        (row.approval_id,),
        row.rev,
        (
            ("caller", row.caller),
            ("request_id", row.request_id),
            ("state", row.state),
            ("expires_at_ms", row.expires_at_ms),
            ("record", row.record),
            ("request", row.request),
        ),
    )


class StoreGuard:
    """The store's RowGuard (signer.store.base): pending batches and TOTP rows."""

    def __init__(self, integrity: StateAuthenticator) -> None:
        self._integrity = integrity

    def seal_pending(self, row: PendingRow) -> PendingRow:
        return dataclasses.replace(row, mac=self._integrity.tag(pending_fact(row)))

    def epoch(self) -> int:
        return self._integrity.epoch()

    def check_pending(self, rows: Sequence[PendingRow], since: int | None = None) -> None:
        self._integrity.verify([(pending_fact(row), row.mac) for row in rows], since)

    def valid_pending(self, rows: Sequence[PendingRow], since: int | None) -> list[PendingRow]:
        try:
            self.check_pending(rows, since)
        except TamperedState:
            # One bad row must not hide the others (a sweep, a listing): keep
            # those that pass; each bad one has raised its alarm.
            good = []
            for row in rows:
                try:
                    self.check_pending([row], since)
                except TamperedState:
                    continue
                good.append(row)
            return good
        return list(rows)

    def committed_pending(self, row: PendingRow) -> None:
        self._integrity.raise_floor("pending", (row.approval_id,), row.rev)

    def seal_totp(self, subject: str, sealed: bytes, state: str, rev: int) -> bytes | None:
        return self._integrity.tag(totp_fact(subject, sealed, state, rev))

    def check_totp(
        self,
        subject: str,
        sealed: bytes,
        state: str,
        rev: int,
        mac: bytes | None,
        *,
        since: int | None = None,
    ) -> None:
        self._integrity.check(totp_fact(subject, sealed, state, rev), mac, since)

    def committed_totp(self, subject: str, rev: int) -> None:
        self._integrity.raise_floor("totp", (subject,), rev)


def totp_fact(subject: str, sealed: bytes, state: str, rev: int) -> Fact:
    """What a TOTP row's tag covers: the sealed secret and the counters (last step, failures)."""
    return Fact("totp", (subject,), rev, (("sealed", sealed), ("state", state)))
