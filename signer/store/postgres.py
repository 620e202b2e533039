"""PostgreSQL backend of the store: several replicas (processes, hosts) share one database.

The logic is signer.store.sql.SqlStore's; this is PostgreSQL's dialect of it.
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
crash at that point (the pipeline then releases its claim under its token,
which leaves a batch that COMMIT did complete untouched). After a lost
connection the pool's idle connections are checked and replaced, and the pool
reconnects on its own, so the same store recovers when the database returns.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.errors import DeadlockDetected, SerializationFailure
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from custos.audit.record import ChainHead
from custos.signer.store.base import StoreError, StoreUnavailable
from custos.signer.store.migrations import upgrade
from custos.signer.store.sql import Rollback, Rows, SqlStore, Tx, now_ms

log = logging.getLogger("custos.store")

T = TypeVar("T")

DEFAULT_SCHEMA = "custos"
# Lower-case identifiers only: the name goes into search_path unquoted and must
# mean the same schema there as in CREATE SCHEMA.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
ATTEMPTS = 4  # a transaction is tried at most this often (deadlocks, lost connections)
RECONNECT_SECONDS = 1.0  # how long the pool keeps retrying one connection in the background
AUDIT_POLL_SECONDS = 0.2  # how often wait_for_audit looks for other replicas' records
# With LISTEN/NOTIFY working, polling is only a safety net (a notification lost
# with a broken listening connection is made up for by the reconnect's wake-up).
LISTENING_POLL_SECONDS = 5.0
AUDIT_CHANNEL = "custos_audit"  # NOTIFY channel; the payload is the schema appended to

Conn = psycopg.Connection[TupleRow]


def advisory_key(schema: str, kind: str, name: str) -> int:
    """A bigint advisory-lock id for `name`, private to one schema (one deployment)."""
    digest = hashlib.sha256(f"custos\0{schema}\0{kind}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _PostgresTx(Tx):
    """A transaction on one pooled connection: `?` placeholders become psycopg's `%s`."""

    for_update = " FOR UPDATE"

    def __init__(self, conn: Conn, schema: str) -> None:
        self.conn = conn
        self._schema = schema

    def execute(self, query: str, params: Sequence[Any] = ()) -> Rows:
        return self.conn.execute(query.replace("?", "%s"), params)

    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(query.replace("?", "%s"), rows)

    def lock(self, kind: str, names: Iterable[str]) -> None:
        # Ascending order everywhere, so two transactions never deadlock on these.
        for key in sorted({advisory_key(self._schema, kind, name) for name in names}):
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


def split_schema(url: str) -> tuple[str, str | None]:
    """The URL without Custos's own `schema` query parameter, and that parameter's value."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), None)
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def describe_url(url: str) -> str:
    """USER@HOST:PORT/DB of a connection URL: what it points at, never its password."""
    try:
        info = conninfo_to_dict(split_schema(url)[0])
    except psycopg.Error:
        return "(an invalid PostgreSQL URL)"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"


def connection_problem(url: str, kwargs: dict[str, Any]) -> str | None:
    """Why a connection to `url` fails, in one line without its password; None if it works."""
    try:
        psycopg.connect(url, **kwargs).close()
    except psycopg.Error as exc:
        reason = " ".join("; ".join(ln for ln in str(exc).splitlines() if ln.strip()).split())
        password = str(conninfo_to_dict(url).get("password") or "")
        if password:
            reason = reason.replace(password, "***")
        return f"cannot connect to the database {describe_url(url)}: {reason}"
    return None


class PostgresStore(SqlStore):
    """Store on a PostgreSQL database shared by replicas; implements signer.store.base.Store."""

    USAGE_SELECT = "SUM(amount), SUM(count)"
    LAST_SEQ = "SELECT seq FROM audit_head"
    POLL_SECONDS = AUDIT_POLL_SECONDS

    def __init__(
        self,
        url: str,
        schema: str | None = None,
        *,
        clock_ms: Callable[[], int] = now_ms,
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
        super().__init__(clock_ms)
        self._url, self._kwargs = url, kwargs
        self._listener: threading.Thread | None = None
        self._listening = False
        self._closing = threading.Event()
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
        except StoreUnavailable as exc:
            self._pool.close()
            # The pool only says it timed out: one direct attempt names the cause
            # (e.g. role "x" does not exist) for the operator.
            raise StoreUnavailable(connection_problem(url, kwargs) or str(exc)) from exc
        except BaseException:
            self._pool.close()
            raise

    # -- transactions -----------------------------------------------------------

    def _run(self, work: Callable[[Conn], T]) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            conn: Conn | None = None
            committing = False
            try:
                with self._pool.connection() as conn:
                    try:
                        result = work(conn)
                    except Rollback as rollback:
                        conn.rollback()
                        return rollback.value  # type: ignore[return-value]
                    except StoreError:
                        conn.rollback()  # a refusal (ClaimLost, VersionExists, ...): nothing kept
                        raise
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

    def _read(self, work: Callable[[Tx], T]) -> T:
        return self._run(lambda conn: work(_PostgresTx(conn, self.schema)))

    def _transact(self, work: Callable[[Tx], T]) -> T:
        return self._run(lambda conn: work(_PostgresTx(conn, self.schema)))

    def _head(self, tx: Tx) -> ChainHead | None:
        # Locked last in every transaction (after batch rows and buckets), so
        # the lock order is the same everywhere and is held only until COMMIT.
        row = tx.execute("SELECT seq, hash FROM audit_head FOR UPDATE").fetchone()
        if row is None:
            raise StoreError("audit_head is missing: the schema was not migrated")
        return None if row[0] < 0 else ChainHead(int(row[0]), bytes(row[1]))

    def _insert_records(self, tx: Tx, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        # One round trip for the records and the new head: the head stays
        # locked until COMMIT, so every trip saved here is throughput for all.
        seqs, encoded, leaves = (list(column) for column in zip(*rows, strict=True))
        tx.execute(
            "WITH appended AS (INSERT INTO audit_log (seq, record, hash)"
            " SELECT * FROM unnest(?::bigint[], ?::bytea[], ?::bytea[]))"
            " UPDATE audit_head SET seq = ?, hash = ?"
            # NOTIFY is transactional: delivered at COMMIT, never for a rollback,
            # so watchers on every replica wake for exactly what committed.
            " FROM (SELECT pg_notify(?, ?)) AS notified",
            (seqs, encoded, leaves, seqs[-1], leaves[-1], AUDIT_CHANNEL, self.schema),
        )

    # -- wake-ups ------------------------------------------------------------------

    def wait_for_audit(self, size: int, timeout: float) -> None:
        self._start_listener()
        super().wait_for_audit(size, timeout)

    def _poll_seconds(self) -> float | None:
        return LISTENING_POLL_SECONDS if self._listening else AUDIT_POLL_SECONDS

    def _start_listener(self) -> None:
        # Started by the first waiter, not at open: most stores never wait.
        with self._appended:
            if self._listener is not None or self._closing.is_set():
                return
            self._listener = threading.Thread(
                target=self._listen, name=f"custos-listen-{self.schema}", daemon=True
            )
        self._listener.start()

    def _listen(self) -> None:
        """LISTEN on a connection of its own (outside the pool); reconnect when it breaks."""
        kwargs = {**self._kwargs, "autocommit": True}
        while not self._closing.is_set():
            try:
                with psycopg.connect(self._url, **kwargs) as conn:
                    conn.execute(f"LISTEN {AUDIT_CHANNEL}")
                    self._listening = True
                    self.wake_waiters()  # what was appended while nobody listened
                    while not self._closing.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.payload == self.schema:
                                self.wake_waiters()
            except psycopg.Error:
                log.info("audit notifications: connection lost; polling until it is back")
            finally:
                self._listening = False
            self._closing.wait(RECONNECT_SECONDS)

    # -- schema -------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply the schema versions the database lacks, in one transaction; the versions applied.

        Replicas starting together queue on an advisory lock, so exactly one
        applies each version and the others find it done.
        """

        lock_id = advisory_key(self.schema, "migrate", "")
        applied = self._run(lambda conn: upgrade(conn, self.schema, lock_id))
        if applied:
            log.info("schema %s migrated to version %d", self.schema, applied[-1])
        return applied

    # -- the rest of the dialect ----------------------------------------------------

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold a database-wide lock on `name` (every replica), e.g. around HSM key set-up."""
        key = advisory_key(self.schema, "exclusive", name)
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
        self._read(lambda tx: tx.execute("SELECT 1").fetchone())

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        self._pool.close()
