"""SQLite backend of the store: one file, no server, the embedded default.

The logic is signer.store.sql.SqlStore's; this is SQLite's dialect of it.
Writes go through a group committer (signer.store.group_commit): one thread,
one connection, many writers' work per durable COMMIT. WAL with
synchronous=FULL makes each COMMIT durable before any writer is answered,
which is what "the audit record was durably committed before signing"
requires. One writer also means every write transaction is serialized, so
rows need no locks. Each reading thread has its own connection: WAL lets
readers run beside each other and beside the writer, so reads never queue.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from custos.audit.record import ChainHead
from custos.signer.store.base import StoreUnavailable
from custos.signer.store.group_commit import GroupCommitter
from custos.signer.store.sql import Rollback, Rows, SqlStore, Tx, now_ms

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    network_class TEXT NOT NULL CHECK (network_class IN ('mainnet', 'testnet')),
    version INTEGER NOT NULL DEFAULT 1,
    mac BLOB,
    origin TEXT NOT NULL DEFAULT 'generated' CHECK (origin IN ('generated', 'imported'))
);
CREATE TABLE IF NOT EXISTS batches (
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    payload_digest BLOB NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    lease_until_ms INTEGER NOT NULL,
    result BLOB,
    approval_id TEXT,
    claim_token BLOB,
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
CREATE TABLE IF NOT EXISTS policy_versions (
    version INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    document_yaml TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    activated_at_ms INTEGER,
    rev INTEGER NOT NULL DEFAULT 1,
    mac BLOB
);
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY,
    bucket TEXT NOT NULL,
    amount TEXT NOT NULL,
    count INTEGER NOT NULL,
    reserved_at_ms INTEGER NOT NULL,
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    released INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS reservations_bucket ON reservations (bucket, reserved_at_ms);
CREATE INDEX IF NOT EXISTS reservations_request ON reservations (caller, request_id);
CREATE TABLE IF NOT EXISTS pending (
    approval_id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    record TEXT NOT NULL,
    request BLOB NOT NULL,
    rev INTEGER NOT NULL DEFAULT 1,
    mac BLOB
);
CREATE TABLE IF NOT EXISTS ceremonies (
    ceremony_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    rev INTEGER NOT NULL DEFAULT 1,
    mac BLOB
);
CREATE INDEX IF NOT EXISTS ceremonies_created ON ceremonies (created_at_ms);
-- Webhook endpoints (signer.store.webhook_tables); migration 6 on PostgreSQL.
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    kinds TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    mac BLOB,
    next_seq INTEGER NOT NULL CHECK (next_seq >= 0),
    owner TEXT NOT NULL DEFAULT '',
    lease_until_ms INTEGER NOT NULL DEFAULT 0
);
-- HD wallets (signer.store.wallet_tables); migration 8 on PostgreSQL.
CREATE TABLE IF NOT EXISTS wallets (
    wallet_id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    seal_key_id TEXT NOT NULL,
    sealed_seed BLOB NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('generated', 'imported')),
    state TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    mac BLOB
);
CREATE TABLE IF NOT EXISTS totp (
    subject TEXT PRIMARY KEY,
    sealed BLOB NOT NULL,
    state TEXT NOT NULL,
    rev INTEGER NOT NULL DEFAULT 1,
    mac BLOB
);
"""

# Columns added after a release: (table, column, declaration). A store written
# by an older release gets them on open; see _migrate.
ADDED_COLUMNS = (
    ("batches", "approval_id", "TEXT"),  # approvals
    ("batches", "claim_token", "BLOB"),  # fenced claims: rows from before hold no token
    # Network classes: keys from before may hold mainnet funds, so they are mainnet
    # (README, "Keys belong to one network class"; migration 3 on PostgreSQL).
    (
        "keys",
        "network_class",
        "TEXT NOT NULL DEFAULT 'mainnet' CHECK (network_class IN ('mainnet', 'testnet'))",
    ),
    # State authenticators (signer.usecases.authenticity). Rows from before hold no mac and
    # are refused until `custos integrity seal` vouches for them once.
    ("keys", "version", "INTEGER NOT NULL DEFAULT 1"),
    ("keys", "mac", "BLOB"),
    ("policy_versions", "rev", "INTEGER NOT NULL DEFAULT 1"),
    ("policy_versions", "mac", "BLOB"),
    ("pending", "rev", "INTEGER NOT NULL DEFAULT 1"),
    ("pending", "mac", "BLOB"),
    ("totp", "rev", "INTEGER NOT NULL DEFAULT 1"),
    ("totp", "mac", "BLOB"),
    # Imported keys (signer.usecases.key_import); every key from before was generated in the token.
    (
        "keys",
        "origin",
        "TEXT NOT NULL DEFAULT 'generated' CHECK (origin IN ('generated', 'imported'))",
    ),
)


# The shared SQL uses INSERT ... ON CONFLICT ... RETURNING (3.35) and TRUE/FALSE (3.23).
MIN_SQLITE = (3, 35, 0)


def _connect(path: str | Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class _SqliteTx(Tx):
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, query: str, params: Sequence[Any] = ()) -> Rows:
        return self._db.execute(query, params)

    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(query, rows)


class SqliteStore(SqlStore):
    """Store on one SQLite file; implements signer.store.base.Store."""

    # uint256 amounts are text: summed exactly in Python, never by SQLite (floats).
    USAGE_SELECT = "amount, count"
    LAST_SEQ = "SELECT MAX(seq) FROM audit_log"

    def __init__(self, path: str | Path, clock_ms: Callable[[], int] = now_ms) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreUnavailable(
                f"SQLite {sqlite3.sqlite_version} is too old: the store needs 3.35 or newer"
            )
        super().__init__(clock_ms)
        self._path = path
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._exclusive = threading.RLock()
        try:
            writer = _connect(path)
            writer.executescript(SCHEMA)
            _migrate(writer)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store at {path}") from exc
        self._writer = writer
        self._committer = GroupCommitter(writer)

    def _transact(self, work: Callable[[Tx], T]) -> T:
        try:
            return self._committer.submit(lambda db: work(_SqliteTx(db)))
        except Rollback as rollback:  # the committer rolled the piece back
            return rollback.value  # type: ignore[return-value]

    def _read(self, work: Callable[[Tx], T]) -> T:
        try:
            reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
            if reader is None:
                reader = self._local.reader = _connect(self._path)
                with self._readers_lock:
                    self._readers.append(reader)
            return work(_SqliteTx(reader))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"read failed: {exc}") from exc

    def _head(self, tx: Tx) -> ChainHead | None:
        row = tx.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        return ChainHead(row[0], row[1]) if row else None

    def _insert_records(self, tx: Tx, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        tx.executemany("INSERT INTO audit_log (seq, record, hash) VALUES (?, ?, ?)", rows)

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """One process owns a SQLite store: a process lock is a store-wide lock."""
        with self._exclusive:
            yield

    def ping(self) -> None:
        self._read(lambda tx: tx.execute("SELECT 1").fetchone())
        self._transact(lambda tx: tx.execute("SELECT 1").fetchone())

    def close(self) -> None:
        self._committer.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
        self._writer.close()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an older release up to this schema (one file, one process)."""
    for table, column, declaration in ADDED_COLUMNS:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
