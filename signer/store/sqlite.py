"""SQLite backend of the store: one file, no server, the embedded default.

One connection guarded by a lock: SQLite allows one writer at a time anyway,
and a single connection keeps BEGIN IMMEDIATE ordering simple. WAL with
synchronous=FULL makes each commit durable before the call returns, which is
what "the audit record was durably committed before signing" requires.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from audit.record import AuditEvent, AuditRecord, ChainHead, next_record
from signer.store.base import (
    BatchRecord,
    Claim,
    ClaimOutcome,
    KeyAlreadyExists,
    KeyRecord,
    KeyState,
    StoreUnavailable,
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    payload_digest BLOB NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    lease_until_ms INTEGER NOT NULL,
    result BLOB,
    PRIMARY KEY (caller, request_id)
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    record BLOB NOT NULL,
    hash BLOB NOT NULL
);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SqliteStore:
    """Store on one SQLite file; implements signer.store.base.Store."""

    def __init__(self, path: str | Path, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store at {path}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable("cannot start a transaction") from exc
            try:
                yield self._db
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    raise StoreUnavailable("transaction failed") from exc
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreUnavailable("commit failed") from exc

    def _rollback(self) -> None:
        # Nothing to roll back, or the database is gone: either way the transaction is void.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreUnavailable("read failed") from exc

    def _append(self, db: sqlite3.Connection, events: Sequence[AuditEvent]) -> None:
        row = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        head = ChainHead(row[0], row[1]) if row else None
        ts = self._clock_ms()
        for event in events:
            record = next_record(head, event, ts)
            leaf = record.leaf_hash()
            db.execute(
                "INSERT INTO audit_log (seq, record, hash) VALUES (?, ?, ?)",
                (record.seq, record.encode(), leaf),
            )
            head = ChainHead(record.seq, leaf)

    # -- keys ---------------------------------------------------------------

    def insert_key(self, key: KeyRecord, event: AuditEvent) -> None:
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO keys VALUES (?, ?, ?, ?, ?)",
                    (
                        key.key_id,
                        key.public_key,
                        key.state.value,
                        key.created_by,
                        key.created_at_ms,
                    ),
                )
                self._append(db, [event])
        except sqlite3.IntegrityError as exc:
            raise KeyAlreadyExists(key.key_id) from exc

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self.get_keys([key_id]).get(key_id)

    def get_keys(self, key_ids: Sequence[str]) -> dict[str, KeyRecord]:
        ids = sorted(set(key_ids))
        marks = ",".join("?" * len(ids))
        rows = self._read(
            lambda db: db.execute(f"SELECT * FROM keys WHERE key_id IN ({marks})", ids).fetchall()  # noqa: S608 - only placeholders are interpolated
        )
        return {row[0]: _key(row) for row in rows}

    def list_keys(self) -> list[KeyRecord]:
        rows = self._read(lambda db: db.execute("SELECT * FROM keys ORDER BY key_id").fetchall())
        return [_key(row) for row in rows]

    def set_key_state(self, key_id: str, state: KeyState, event: AuditEvent) -> KeyRecord | None:
        with self._transaction() as db:
            cur = db.execute("UPDATE keys SET state = ? WHERE key_id = ?", (state.value, key_id))
            if cur.rowcount == 0:
                return None
            self._append(db, [event])
            row = db.execute("SELECT * FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return _key(row)

    # -- batches ------------------------------------------------------------

    def claim_batch(
        self,
        caller: str,
        request_id: str,
        payload_digest: bytes,
        lease_ms: int,
        events: Sequence[AuditEvent],
    ) -> Claim:
        now = self._clock_ms()
        with self._transaction() as db:
            row = db.execute(
                "SELECT payload_digest, done, lease_until_ms, result FROM batches"
                " WHERE caller = ? AND request_id = ?",
                (caller, request_id),
            ).fetchone()
            if row is not None:
                digest, done, lease_until, result = row
                if digest != payload_digest:
                    return Claim(ClaimOutcome.CONFLICT)
                if done:
                    return Claim(ClaimOutcome.DONE, result)
                if lease_until > now:
                    return Claim(ClaimOutcome.IN_PROGRESS)
                db.execute(
                    "UPDATE batches SET lease_until_ms = ? WHERE caller = ? AND request_id = ?",
                    (now + lease_ms, caller, request_id),
                )
            else:
                db.execute(
                    "INSERT INTO batches (caller, request_id, payload_digest, lease_until_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (caller, request_id, payload_digest, now + lease_ms),
                )
            self._append(db, events)
        return Claim(ClaimOutcome.CLAIMED)

    def complete_batch(
        self, caller: str, request_id: str, result: bytes, events: Sequence[AuditEvent]
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE batches SET done = 1, result = ? WHERE caller = ? AND request_id = ?",
                (result, caller, request_id),
            )
            self._append(db, events)

    def release_batch(self, caller: str, request_id: str, events: Sequence[AuditEvent]) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM batches WHERE caller = ? AND request_id = ? AND done = 0",
                (caller, request_id),
            )
            self._append(db, events)

    def get_batch(self, caller: str, request_id: str) -> BatchRecord | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT payload_digest, done, result FROM batches"
                " WHERE caller = ? AND request_id = ?",
                (caller, request_id),
            ).fetchone()
        )
        if row is None:
            return None
        return BatchRecord(caller, request_id, row[0], bool(row[1]), row[2])

    # -- audit --------------------------------------------------------------

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._transaction() as db:
            self._append(db, events)

    def audit_records(self, from_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT record FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                (from_seq, limit),
            ).fetchall()
        )
        return [AuditRecord.decode(row[0]) for row in rows]

    def ping(self) -> None:
        self._read(lambda db: db.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _key(row: tuple[str, bytes, str, str, int]) -> KeyRecord:
    return KeyRecord(row[0], bytes(row[1]), KeyState(row[2]), row[3], row[4])
