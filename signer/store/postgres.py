"""PostgreSQL backend of the store: several replicas (processes, hosts) share one database.

Every method is one transaction on a pooled connection (psycopg 3,
psycopg_pool), committed before the method returns; with the server's default
synchronous_commit=on that COMMIT is durable. Correctness across replicas
rests on the database's locks, never on process-local ones:

- the audit log: each append locks the one-row `audit_head` table FOR UPDATE
  before reading the head, so appends from every replica queue and the log has
  one gapless sequence;
- budgets: a claim takes a transaction advisory lock on each bucket it reads
  (ids hashed from schema and bucket, taken in ascending order so that two
  claims never deadlock) before summing the bucket's reservations;
- idempotency: a claim inserts its batch row with ON CONFLICT DO NOTHING, or
  else locks the existing row FOR UPDATE, so two attempts at one request id
  queue on that row.

Transactions run at READ COMMITTED: after a lock is granted, the next
statement sees everything its previous holder committed, which is all these
read-then-write steps need. Deadlocks and serialization failures are retried a
bounded number of times, and so is a lost connection, but only before COMMIT
was sent (the server rolls back what it never committed); a connection lost
during COMMIT leaves the outcome unknown and raises StoreUnavailable, like a
crash at that point. After a lost connection the pool's idle connections are
checked and replaced, and the pool reconnects on its own, so the same store
recovers when the database returns.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import DeadlockDetected, SerializationFailure
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from audit.record import AuditEvent, AuditRecord, ChainHead, next_record
from signer.store.base import (
    BatchRecord,
    Claim,
    ClaimOutcome,
    KeyAlreadyExists,
    KeyRecord,
    KeyState,
    StoredCheckpoint,
    StoreError,
    StoreUnavailable,
)
from signer.store.migrations import upgrade
from signer.store.policy_tables import Admission
from signer.store.postgres_policy import (
    Conn,
    PostgresPolicyTables,
    advisory_key,
    lock_all,
    reserve,
    usage,
)

log = logging.getLogger("custos.store")

T = TypeVar("T")

DEFAULT_SCHEMA = "custos"
# Lower-case identifiers only: the name goes into search_path unquoted and must
# mean the same schema there as in CREATE SCHEMA.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
ATTEMPTS = 4  # a transaction is tried at most this often (deadlocks, lost connections)
RECONNECT_SECONDS = 1.0  # how long the pool keeps retrying one connection in the background
AUDIT_POLL_SECONDS = 0.2  # how often wait_for_audit looks for other replicas' records
KEY_COLUMNS = "key_id, public_key, state, created_by, created_at_ms"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Rollback(Exception):
    """Raised inside a transaction to roll it back and return `value` from it."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


def split_schema(url: str) -> tuple[str, str | None]:
    """The URL without Custos's own `schema` query parameter, and that parameter's value."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), None)
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class PostgresStore(PostgresPolicyTables):
    """Store on a PostgreSQL database shared by replicas; implements signer.store.base.Store."""

    def __init__(
        self,
        url: str,
        schema: str | None = None,
        *,
        clock_ms: Callable[[], int] = _now_ms,
        min_size: int = 2,
        max_size: int = 16,
        timeout: float = 5.0,
        migrate: bool = True,
    ) -> None:
        """Connect to `url` and bring schema `schema` up to date (unless `migrate` is False).

        `schema` defaults to the URL's `schema` query parameter, else "custos".
        `timeout` bounds how long a call waits for a working connection before
        it raises StoreUnavailable.
        """
        url, url_schema = split_schema(url)
        self.schema = schema or url_schema or DEFAULT_SCHEMA
        if not SCHEMA_NAME.fullmatch(self.schema) or self.schema.startswith("pg_"):
            raise ValueError(
                f"schema {self.schema!r}: use lower-case letters, digits and _ (not pg_...)"
            )
        try:
            info = conninfo_to_dict(url)
        except psycopg.Error:
            # Never echo the URL: it may hold a password.
            raise ValueError("not a valid PostgreSQL connection URL") from None
        options = f"{info.get('options', '')} -c search_path={self.schema}".strip()
        kwargs: dict[str, Any] = {
            "options": options,
            "application_name": info.get("application_name", "custos"),
            "connect_timeout": info.get("connect_timeout", max(2, round(timeout))),
            # A database host that vanishes without closing its sockets is
            # noticed within about half a minute instead of hanging a request.
            "keepalives": info.get("keepalives", 1),
            "keepalives_idle": info.get("keepalives_idle", 10),
            "keepalives_interval": info.get("keepalives_interval", 5),
            "keepalives_count": info.get("keepalives_count", 3),
            "tcp_user_timeout": info.get("tcp_user_timeout", 30_000),
            "autocommit": False,
        }
        self._clock_ms = clock_ms
        self._appended = threading.Condition()
        self._generation = 0  # bumped on every local commit; wakes wait_for_audit early
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            # The pool retries a failed connection with a growing back-off and
            # starts no other attempt meanwhile: a short window lets it give up
            # soon, so that the first request after an outage connects at once
            # instead of waiting out a back-off that grew during the outage.
            reconnect_timeout=RECONNECT_SECONDS,
            name=f"custos-{self.schema}",
            open=False,
        )
        self._pool.open()
        try:
            if migrate:
                self.migrate()
            else:
                self.ping()
        except BaseException:
            self._pool.close()
            raise

    # -- transactions -----------------------------------------------------------

    def _lock_key(self, kind: str, name: str) -> int:
        return advisory_key(self.schema, kind, name)

    def _run(self, work: Callable[[Conn], T]) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            conn: Conn | None = None
            committing = False
            try:
                with self._pool.connection() as conn:
                    try:
                        result = work(conn)
                    except _Rollback as rollback:
                        conn.rollback()
                        return cast(T, rollback.value)
                    committing = True
                    conn.commit()
                return result
            except PoolTimeout as exc:
                raise StoreUnavailable("no connection to the database") from exc
            except PoolClosed as exc:
                raise StoreUnavailable("the store is closed") from exc
            except (SerializationFailure, DeadlockDetected) as exc:
                # The server rolled the transaction back: running it again is safe.
                if attempt == ATTEMPTS:
                    raise StoreUnavailable(f"transaction kept conflicting: {exc.sqlstate}") from exc
                time.sleep(random.uniform(0, 0.02 * attempt))  # noqa: S311 - jitter only
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                lost = conn is None or conn.closed or conn.broken
                if committing:
                    raise StoreUnavailable(
                        "the database connection failed during COMMIT; the outcome is unknown"
                    ) from exc
                if not lost or attempt == ATTEMPTS:
                    raise StoreUnavailable(f"database error: {type(exc).__name__}") from exc
                log.info("database connection lost; retrying the transaction")
                # A server restart kills every idle connection at once: weed them
                # out now rather than meeting them one by one on later attempts.
                self._pool.check()
            except psycopg.Error as exc:
                raise StoreUnavailable(f"database error: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, work: Callable[[Conn], T]) -> T:
        return self._run(work)

    def _write(self, work: Callable[[Conn], T]) -> T:
        result = self._run(work)
        with self._appended:
            self._generation += 1
            self._appended.notify_all()
        return result

    def _append(self, conn: Conn, events: Sequence[AuditEvent]) -> None:
        """Chain `events` onto the log inside the caller's transaction."""
        if not events:
            return
        # Locked last in every transaction (after batch rows and buckets), so
        # the lock order is the same everywhere and is held only until COMMIT.
        row = conn.execute("SELECT seq, hash FROM audit_head FOR UPDATE").fetchone()
        if row is None:
            raise StoreError("audit_head is missing: the schema was not migrated")
        head = None if row[0] < 0 else ChainHead(int(row[0]), bytes(row[1]))
        ts = self._clock_ms()
        seqs: list[int] = []
        encoded: list[bytes] = []
        leaves: list[bytes] = []
        for event in events:
            record = next_record(head, event, ts)
            head = ChainHead(record.seq, record.leaf_hash())
            seqs.append(record.seq)
            encoded.append(record.encode())
            leaves.append(head.hash)
        assert head is not None
        # One round trip for the records and the new head: the head stays
        # locked until COMMIT, so every trip saved here is throughput for all.
        conn.execute(
            "WITH appended AS (INSERT INTO audit_log (seq, record, hash)"
            " SELECT * FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[]))"
            " UPDATE audit_head SET seq = %s, hash = %s",
            (seqs, encoded, leaves, head.seq, head.hash),
        )

    # -- schema -------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the schema versions the database lacks, in one transaction; the versions applied.

        Replicas starting together queue on an advisory lock, so exactly one
        applies each version and the others find it done.
        """

        lock_id = self._lock_key("migrate", "")
        applied = self._run(lambda conn: upgrade(conn, self.schema, lock_id))
        if applied:
            log.info("schema %s migrated to version %d", self.schema, applied[-1])
        return applied

    # -- keys ---------------------------------------------------------------

    def insert_key(self, key: KeyRecord, event: AuditEvent) -> None:
        row = (key.key_id, key.public_key, key.state.value, key.created_by, key.created_at_ms)

        def work(conn: Conn) -> None:
            inserted = conn.execute(
                f"INSERT INTO keys ({KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s)"  # noqa: S608
                " ON CONFLICT (key_id) DO NOTHING RETURNING 1",
                row,
            ).fetchone()
            if inserted is None:
                raise KeyAlreadyExists(key.key_id)
            self._append(conn, [event])

        self._write(work)

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self.get_keys([key_id]).get(key_id)

    def get_keys(self, key_ids: Sequence[str]) -> dict[str, KeyRecord]:
        ids = sorted(set(key_ids))
        rows = self._read(
            lambda conn: conn.execute(
                f"SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ANY(%s)",  # noqa: S608
                (ids,),
            ).fetchall()
        )
        return {row[0]: _key(row) for row in rows}

    def list_keys(self) -> list[KeyRecord]:
        rows = self._read(
            lambda conn: conn.execute(
                f"SELECT {KEY_COLUMNS} FROM keys ORDER BY key_id"  # noqa: S608
            ).fetchall()
        )
        return [_key(row) for row in rows]

    def set_key_state(self, key_id: str, state: KeyState, event: AuditEvent) -> KeyRecord | None:
        def work(conn: Conn) -> KeyRecord | None:
            row = conn.execute(
                f"UPDATE keys SET state = %s WHERE key_id = %s RETURNING {KEY_COLUMNS}",  # noqa: S608
                (state.value, key_id),
            ).fetchone()
            if row is None:
                raise _Rollback(None)  # no key, so no audit record either
            self._append(conn, [event])
            return _key(row)

        return self._write(work)

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
        held = admission is not None and admission.pending is not None
        approval_id = admission.pending.approval_id if admission and admission.pending else None
        key = (caller, request_id)

        def work(conn: Conn) -> Claim:
            now = self._clock_ms()
            # A batch held for approvals keeps its request id until it is settled.
            lease_until = (
                admission.pending.expires_at_ms
                if admission and admission.pending
                else (now + lease_ms)
            )
            values = (caller, request_id, payload_digest, lease_until, approval_id)
            for _ in range(ATTEMPTS):
                # Either this attempt creates the row (and holds it until COMMIT),
                # or it locks the row an earlier attempt left and judges it.
                inserted = conn.execute(
                    "INSERT INTO batches"
                    " (caller, request_id, payload_digest, lease_until_ms, approval_id)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (caller, request_id) DO NOTHING RETURNING 1",
                    values,
                ).fetchone()
                if inserted is not None:
                    break
                row = conn.execute(
                    "SELECT payload_digest, done, lease_until_ms, result, approval_id FROM batches"
                    " WHERE caller = %s AND request_id = %s FOR UPDATE",
                    key,
                ).fetchone()
                if row is None:
                    continue  # released between the two statements: try to insert again
                digest, done, lease_until_ms, result, pending_id = row
                if bytes(digest) != payload_digest:
                    raise _Rollback(Claim(ClaimOutcome.CONFLICT))
                if done:
                    raise _Rollback(Claim(ClaimOutcome.DONE, _bytes(result)))
                if pending_id is not None:
                    raise _Rollback(Claim(ClaimOutcome.PENDING, approval_id=pending_id))
                if lease_until_ms > now:
                    raise _Rollback(Claim(ClaimOutcome.IN_PROGRESS))
                # The lease of a crashed attempt ran out: take the id over.
                conn.execute(
                    "UPDATE batches SET payload_digest = %s, done = FALSE, lease_until_ms = %s,"
                    " result = NULL, approval_id = %s WHERE caller = %s AND request_id = %s",
                    (payload_digest, lease_until, approval_id, caller, request_id),
                )
                break
            else:
                raise StoreUnavailable(f"request id {request_id!r} keeps being taken and released")
            if admission is not None:
                buckets = {b for b, _ in admission.windows}
                buckets.update(b for b, _, _ in admission.reservations)
                lock_all(conn, (self._lock_key("bucket", b) for b in buckets))
                breach = admission.check(usage(conn, admission.windows))
                if breach is not None:
                    # Rolls back the row inserted above too: the id stays free.
                    raise _Rollback(Claim(ClaimOutcome.OVER_LIMIT, breach=breach))
                reserve(conn, admission, caller, request_id, now)
            self._append(conn, events)
            return Claim(ClaimOutcome.HELD if held else ClaimOutcome.CLAIMED)

        return self._write(work)

    def complete_batch(
        self, caller: str, request_id: str, result: bytes, events: Sequence[AuditEvent]
    ) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "UPDATE batches SET done = TRUE, result = %s WHERE caller = %s AND request_id = %s",
                (result, caller, request_id),
            )
            self._append(conn, events)

        self._write(work)

    def release_batch(self, caller: str, request_id: str, events: Sequence[AuditEvent]) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "DELETE FROM batches WHERE caller = %s AND request_id = %s AND NOT done",
                (caller, request_id),
            )
            conn.execute(
                "UPDATE reservations SET released = TRUE WHERE caller = %s AND request_id = %s",
                (caller, request_id),
            )
            self._append(conn, events)

        self._write(work)

    def get_batch(self, caller: str, request_id: str) -> BatchRecord | None:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT payload_digest, done, result, approval_id FROM batches"
                " WHERE caller = %s AND request_id = %s",
                (caller, request_id),
            ).fetchone()
        )
        if row is None:
            return None
        return BatchRecord(caller, request_id, bytes(row[0]), bool(row[1]), _bytes(row[2]), row[3])

    # -- audit --------------------------------------------------------------

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        self._write(lambda conn: self._append(conn, events))

    def audit_records(self, from_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        return [AuditRecord.decode(data) for _seq, data, _hash in self.audit_rows(from_seq, limit)]

    def audit_rows(self, from_seq: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """(seq, canonical encoding, leaf hash) from `from_seq`, at most `limit` rows."""
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT seq, record, hash FROM audit_log WHERE seq >= %s ORDER BY seq LIMIT %s",
                (from_seq, limit),
            ).fetchall()
        )
        return [(int(seq), bytes(data), bytes(leaf)) for seq, data, leaf in rows]

    def audit_size(self) -> int:
        row = self._read(lambda conn: conn.execute("SELECT seq FROM audit_head").fetchone())
        if row is None:
            raise StoreError("audit_head is missing: the schema was not migrated")
        return int(row[0]) + 1

    def leaf_hashes(self, size: int) -> list[bytes]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT hash FROM audit_log WHERE seq < %s ORDER BY seq", (size,)
            ).fetchall()
        )
        return [bytes(row[0]) for row in rows]

    def wait_for_audit(self, size: int, timeout: float) -> None:
        """Return when the log holds more than `size` records, or after `timeout` seconds.

        Appends by this process wake the waiter at once; other replicas'
        appends are seen by polling every AUDIT_POLL_SECONDS.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._appended:
                generation = self._generation
            if self.audit_size() > size:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with self._appended:
                if self._generation == generation:
                    self._appended.wait(min(AUDIT_POLL_SECONDS, left))

    def save_checkpoint(self, checkpoint: StoredCheckpoint, event: AuditEvent) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO audit_checkpoints (size, root, note) VALUES (%s, %s, %s)"
                " ON CONFLICT (size) DO NOTHING",
                (checkpoint.size, checkpoint.root, checkpoint.note),
            )
            self._append(conn, [event])

        self._write(work)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        )
        return None if row is None else StoredCheckpoint(int(row[0]), bytes(row[1]), row[2])

    def all_checkpoints(self) -> list[StoredCheckpoint]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size"
            ).fetchall()
        )
        return [StoredCheckpoint(int(r[0]), bytes(r[1]), r[2]) for r in rows]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a database-wide lock on `name` (every replica), e.g. around HSM key set-up."""
        key = self._lock_key("exclusive", name)
        try:
            with self._pool.connection() as conn:
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                conn.commit()  # a session lock: no transaction stays open meanwhile
                try:
                    yield
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    conn.commit()
        except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable("cannot take a database lock") from exc

    def ping(self) -> None:
        self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        self._pool.close()


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def _key(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(row[0], bytes(row[1]), KeyState(row[2]), row[3], int(row[4]))
