"""SQLite backend of the store: one file, no server, the embedded default.

Writes go through a group committer (signer.store.group_commit): one thread,
one connection, many writers' work per durable COMMIT. WAL with
synchronous=FULL makes each COMMIT durable before any writer is answered,
which is what "the audit record was durably committed before signing"
requires. Each reading thread has its own connection: WAL lets readers run
beside each other and beside the writer, so reads never queue on a lock.
"""

from __future__ import annotations

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
    StoredCheckpoint,
    StoreUnavailable,
    VersionExists,
)
from signer.store.group_commit import GroupCommitter
from signer.store.policy_tables import (
    POLICY_SCHEMA,
    Admission,
    PolicyRow,
    PolicyTables,
    reserve,
    usage,
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
    approval_id TEXT,
    PRIMARY KEY (caller, request_id)
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    record BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note TEXT NOT NULL
);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _connect(path: str | Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class SqliteStore(PolicyTables):
    """Store on one SQLite file; implements signer.store.base.Store."""

    def __init__(self, path: str | Path, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._clock_ms = clock_ms
        self._path = path
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._appended = threading.Condition()
        self._exclusive = threading.RLock()
        try:
            writer = _connect(path)
            writer.executescript(SCHEMA + POLICY_SCHEMA)
            _migrate(writer)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store at {path}") from exc
        self._writer = writer
        self._committer = GroupCommitter(writer)

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._committer.submit(work)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
            if reader is None:
                reader = self._local.reader = _connect(self._path)
                with self._readers_lock:
                    self._readers.append(reader)
            return fn(reader)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"read failed: {exc}") from exc

    def _append(self, db: sqlite3.Connection, events: Sequence[AuditEvent]) -> None:
        """Chain `events` onto the log inside the caller's transaction."""
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

    def _write_audited(
        self, work: Callable[[sqlite3.Connection], T], events: Sequence[AuditEvent]
    ) -> T:
        def piece(db: sqlite3.Connection) -> T:
            result = work(db)
            self._append(db, events)
            return result

        result = self._write(piece)
        if events:
            with self._appended:
                self._appended.notify_all()
        return result

    # -- keys ---------------------------------------------------------------

    def insert_key(self, key: KeyRecord, event: AuditEvent) -> None:
        row = (key.key_id, key.public_key, key.state.value, key.created_by, key.created_at_ms)
        try:
            self._write_audited(
                lambda db: db.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?)", row), [event]
            )
        except sqlite3.IntegrityError as exc:
            raise KeyAlreadyExists(key.key_id) from exc

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self.get_keys([key_id]).get(key_id)

    def get_keys(self, key_ids: Sequence[str]) -> dict[str, KeyRecord]:
        ids = sorted(set(key_ids))
        marks = ",".join("?" * len(ids))
        query = f"SELECT * FROM keys WHERE key_id IN ({marks})"  # noqa: S608 - placeholders only
        rows = self._read(lambda db: db.execute(query, ids).fetchall())
        return {row[0]: _key(row) for row in rows}

    def list_keys(self) -> list[KeyRecord]:
        rows = self._read(lambda db: db.execute("SELECT * FROM keys ORDER BY key_id").fetchall())
        return [_key(row) for row in rows]

    def set_key_state(self, key_id: str, state: KeyState, event: AuditEvent) -> KeyRecord | None:
        class _Missing(Exception):
            pass

        def work(db: sqlite3.Connection) -> KeyRecord:
            cur = db.execute("UPDATE keys SET state = ? WHERE key_id = ?", (state.value, key_id))
            if cur.rowcount == 0:
                raise _Missing  # rolls back the piece, so no audit record either
            return _key(db.execute("SELECT * FROM keys WHERE key_id = ?", (key_id,)).fetchone())

        try:
            return self._write_audited(work, [event])
        except _Missing:
            return None

    def insert_policy_version(self, row: PolicyRow, events: Sequence[AuditEvent]) -> None:
        """Store a new version (VersionExists when its number is taken)."""
        try:
            super().insert_policy_version(row, events)
        except sqlite3.IntegrityError as exc:
            raise VersionExists(f"policy version {row.version} already exists") from exc

    # -- batches ------------------------------------------------------------

    def claim_batch(
        self,
        caller: str,
        request_id: str,
        payload_digest: bytes,
        lease_ms: int,
        events: Sequence[AuditEvent],
        *,
        admission: Admission | None = None,
    ) -> Claim:
        now = self._clock_ms()
        held = admission is not None and admission.pending is not None
        approval_id = admission.pending.approval_id if admission and admission.pending else None
        # A batch held for approvals keeps its request id until it is settled.
        lease_until = (
            admission.pending.expires_at_ms if admission and admission.pending else (now + lease_ms)
        )

        def work(db: sqlite3.Connection) -> Claim:
            row = db.execute(
                "SELECT payload_digest, done, lease_until_ms, result, approval_id FROM batches"
                " WHERE caller = ? AND request_id = ?",
                (caller, request_id),
            ).fetchone()
            if row is not None:
                digest, done, lease_until_ms, result, pending_id = row
                if digest != payload_digest:
                    return Claim(ClaimOutcome.CONFLICT)
                if done:
                    return Claim(ClaimOutcome.DONE, result)
                if pending_id is not None:
                    return Claim(ClaimOutcome.PENDING, approval_id=pending_id)
                if lease_until_ms > now:
                    return Claim(ClaimOutcome.IN_PROGRESS)
            if admission is not None:
                breach = admission.check(usage(db, admission.windows))
                if breach is not None:
                    return Claim(ClaimOutcome.OVER_LIMIT, breach=breach)
                reserve(db, admission, caller, request_id, now)
            db.execute(
                "INSERT OR REPLACE INTO batches"
                " (caller, request_id, payload_digest, lease_until_ms, approval_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (caller, request_id, payload_digest, lease_until, approval_id),
            )
            self._append(db, events)
            return Claim(ClaimOutcome.HELD if held else ClaimOutcome.CLAIMED)

        claim = self._write(work)
        if claim.outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.HELD) and events:
            with self._appended:
                self._appended.notify_all()
        return claim

    def complete_batch(
        self, caller: str, request_id: str, result: bytes, events: Sequence[AuditEvent]
    ) -> None:
        self._write_audited(
            lambda db: db.execute(
                "UPDATE batches SET done = 1, result = ? WHERE caller = ? AND request_id = ?",
                (result, caller, request_id),
            ),
            events,
        )

    def release_batch(self, caller: str, request_id: str, events: Sequence[AuditEvent]) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM batches WHERE caller = ? AND request_id = ? AND done = 0",
                (caller, request_id),
            )
            db.execute(
                "UPDATE reservations SET released = 1 WHERE caller = ? AND request_id = ?",
                (caller, request_id),
            )

        self._write_audited(work, events)

    def get_batch(self, caller: str, request_id: str) -> BatchRecord | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT payload_digest, done, result, approval_id FROM batches"
                " WHERE caller = ? AND request_id = ?",
                (caller, request_id),
            ).fetchone()
        )
        if row is None:
            return None
        return BatchRecord(caller, request_id, row[0], bool(row[1]), row[2], row[3])

    # -- audit --------------------------------------------------------------

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        self._write_audited(lambda db: None, events)

    def audit_records(self, from_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        return [AuditRecord.decode(data) for _seq, data, _hash in self.audit_rows(from_seq, limit)]

    def audit_rows(self, from_seq: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """(seq, canonical encoding, leaf hash) from `from_seq`, at most `limit` rows."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT seq, record, hash FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                (from_seq, limit),
            ).fetchall()
        )
        return [(int(seq), bytes(data), bytes(leaf)) for seq, data, leaf in rows]

    def audit_size(self) -> int:
        row = self._read(lambda db: db.execute("SELECT MAX(seq) FROM audit_log").fetchone())
        return 0 if row[0] is None else int(row[0]) + 1

    def leaf_hashes(self, size: int) -> list[bytes]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT hash FROM audit_log WHERE seq < ? ORDER BY seq", (size,)
            ).fetchall()
        )
        return [bytes(row[0]) for row in rows]

    def wait_for_audit(self, size: int, timeout: float) -> None:
        """Return when the log holds more than `size` records, or after `timeout` seconds."""
        with self._appended:
            if self.audit_size() <= size:
                self._appended.wait(timeout)

    def save_checkpoint(self, checkpoint: StoredCheckpoint, event: AuditEvent) -> None:
        self._write_audited(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO audit_checkpoints VALUES (?, ?, ?)",
                (checkpoint.size, checkpoint.root, checkpoint.note),
            ),
            [event],
        )

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        )
        return None if row is None else StoredCheckpoint(int(row[0]), bytes(row[1]), row[2])

    def all_checkpoints(self) -> list[StoredCheckpoint]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size"
            ).fetchall()
        )
        return [StoredCheckpoint(int(r[0]), bytes(r[1]), r[2]) for r in rows]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """One process owns a SQLite store: a process lock is a store-wide lock."""
        with self._exclusive:
            yield

    def ping(self) -> None:
        self._read(lambda db: db.execute("SELECT 1").fetchone())
        self._write(lambda db: db.execute("SELECT 1").fetchone())

    def close(self) -> None:
        self._committer.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
        self._writer.close()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an older release up to this schema."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
    if "approval_id" not in columns:  # added with approvals
        db.execute("ALTER TABLE batches ADD COLUMN approval_id TEXT")


def _key(row: tuple[str, bytes, str, str, int]) -> KeyRecord:
    return KeyRecord(row[0], bytes(row[1]), KeyState(row[2]), row[3], row[4])
