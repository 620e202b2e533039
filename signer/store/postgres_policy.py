"""PostgreSQL rows for policy: versions, budget reservations, pending approvals, TOTP state.

The PostgreSQL counterpart of signer.store.policy_tables (same records, same
semantics), mixed into PostgresStore. Read-modify-write steps lock their row
with SELECT ... FOR UPDATE; budget checks lock each bucket with a transaction
advisory lock, so replicas in other processes queue behind each other instead
of both reading the same usage. A `change` callback may run more than once
when its transaction is retried after a deadlock or a lost connection: it
must depend only on the row it is given.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow

from audit.record import AuditEvent
from policies.velocity import Spent
from signer.store.base import VersionExists
from signer.store.policy_tables import Admission, PendingChange, PendingRow, PolicyRow

T = TypeVar("T")

Conn = psycopg.Connection[TupleRow]

PENDING_COLUMNS = "approval_id, caller, request_id, state, expires_at_ms, record, request"
POLICY_COLUMNS = "version, hash, document_yaml, state, record, activated_at_ms"


def advisory_key(schema: str, kind: str, name: str) -> int:
    """A bigint advisory-lock id for `name`, private to one schema (one deployment)."""
    digest = hashlib.sha256(f"custos\0{schema}\0{kind}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_all(conn: Conn, keys: Iterable[int]) -> None:
    """Take transaction advisory locks in ascending order, so two takers never deadlock."""
    for key in sorted(set(keys)):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


def usage(conn: Conn, windows: Sequence[tuple[str, int]]) -> dict[str, Spent]:
    """Reserved-or-spent totals per bucket within its window (released rows excluded)."""
    out: dict[str, Spent] = {}
    for bucket, start_ms in windows:
        row = conn.execute(
            "SELECT COALESCE(SUM(amount), 0), COALESCE(SUM(count), 0) FROM reservations"
            " WHERE bucket = %s AND NOT released AND reserved_at_ms > %s",
            (bucket, start_ms),
        ).fetchone()
        assert row is not None  # an aggregate always returns one row
        out[bucket] = Spent(int(row[0]), int(row[1]))
    return out


def reserve(conn: Conn, admission: Admission, caller: str, request_id: str, now_ms: int) -> None:
    # A retry after a crash re-reserves from scratch rather than stacking reservations.
    conn.execute(
        "DELETE FROM reservations WHERE caller = %s AND request_id = %s AND NOT released",
        (caller, request_id),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO reservations (bucket, amount, count, reserved_at_ms, caller, request_id)"
            " VALUES (%s, %s::numeric, %s, %s, %s, %s)",
            # Text for the amount: uint256 values overflow every integer type.
            [(b, str(a), c, now_ms, caller, request_id) for b, a, c in admission.reservations],
        )
    if admission.pending is not None:
        p = admission.pending
        conn.execute(
            f"INSERT INTO pending ({PENDING_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
            (p.approval_id, caller, request_id, p.state, p.expires_at_ms, p.record, p.request),
        )


def _pending(row: tuple[Any, ...]) -> PendingRow:
    return PendingRow(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]))


class PostgresPolicyTables(abc.ABC):
    """PostgreSQL methods for the policy tables; mixed into PostgresStore."""

    @abc.abstractmethod
    def _read(self, work: Callable[[Conn], T]) -> T: ...

    @abc.abstractmethod
    def _write(self, work: Callable[[Conn], T]) -> T: ...

    @abc.abstractmethod
    def _append(self, conn: Conn, events: Sequence[AuditEvent]) -> None: ...

    @abc.abstractmethod
    def _lock_key(self, kind: str, name: str) -> int: ...

    # -- policy versions ------------------------------------------------------

    def policy_versions(self) -> list[PolicyRow]:
        rows = self._read(
            lambda conn: conn.execute(
                f"SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY version"  # noqa: S608
            ).fetchall()
        )
        return [PolicyRow(*row) for row in rows]

    def insert_policy_version(self, row: PolicyRow, events: Sequence[AuditEvent]) -> None:
        """Store a new version (VersionExists when its number is taken)."""
        values = (
            row.version,
            row.hash,
            row.document_yaml,
            row.state,
            row.record,
            row.activated_at_ms,
        )

        def work(conn: Conn) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key("policy", ""),))
            inserted = conn.execute(
                f"INSERT INTO policy_versions ({POLICY_COLUMNS})"  # noqa: S608
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (version) DO NOTHING RETURNING 1",
                values,
            ).fetchone()
            if inserted is None:
                raise VersionExists(f"policy version {row.version} already exists")
            self._append(conn, events)

        self._write(work)

    def update_policy_version(
        self,
        version: int,
        change: Callable[[PolicyRow], tuple[PolicyRow, Sequence[AuditEvent]] | None],
    ) -> PolicyRow | None:
        """Read-modify-write one version in one transaction; `change` returns None to skip."""

        def work(conn: Conn) -> PolicyRow | None:
            # One policy writer at a time across replicas: activating a version
            # supersedes whichever is active, which a row lock alone would not
            # serialize (two activations could each miss the other's new row).
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key("policy", ""),))
            current = conn.execute(
                f"SELECT {POLICY_COLUMNS} FROM policy_versions WHERE version = %s FOR UPDATE",  # noqa: S608
                (version,),
            ).fetchone()
            if current is None:
                return None
            result = change(PolicyRow(*current))
            if result is None:
                return PolicyRow(*current)
            new, events = result
            if new.state == "active":
                conn.execute(
                    "UPDATE policy_versions SET state = 'superseded' WHERE state = 'active'"
                )
            conn.execute(
                "UPDATE policy_versions SET state = %s, record = %s, activated_at_ms = %s"
                " WHERE version = %s",
                (new.state, new.record, new.activated_at_ms, version),
            )
            self._append(conn, events)
            return new

        return self._write(work)

    # -- approvals ----------------------------------------------------------------

    def get_pending(self, approval_id: str) -> PendingRow | None:
        row = self._read(
            lambda conn: conn.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending WHERE approval_id = %s",  # noqa: S608
                (approval_id,),
            ).fetchone()
        )
        return None if row is None else _pending(row)

    def list_pending(self, states: Sequence[str]) -> list[PendingRow]:
        rows = self._read(
            lambda conn: conn.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending WHERE state = ANY(%s)"  # noqa: S608
                " ORDER BY expires_at_ms, approval_id",
                (list(states),),
            ).fetchall()
        )
        return [_pending(row) for row in rows]

    def update_pending(
        self,
        approval_id: str,
        change: Callable[[PendingRow], PendingChange | T],
    ) -> PendingRow | T | None:
        """Read-modify-write one pending batch; rejected/expired ones release their budget.

        `change` returns a PendingChange to write, or any other value to leave
        the row as it is and hand that value back (a refusal).
        """

        def work(conn: Conn) -> PendingRow | T | None:
            current = conn.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending WHERE approval_id = %s FOR UPDATE",  # noqa: S608
                (approval_id,),
            ).fetchone()
            if current is None:
                return None
            result = change(_pending(current))
            if not isinstance(result, PendingChange):
                return result
            new = result.row
            conn.execute(
                "UPDATE pending SET state = %s, record = %s WHERE approval_id = %s",
                (new.state, new.record, approval_id),
            )
            if result.release_budget:
                conn.execute(
                    "UPDATE reservations SET released = TRUE WHERE caller = %s AND request_id = %s",
                    (new.caller, new.request_id),
                )
            if result.final_result is not None:
                # Settled unsigned: a retry of the request id replays this outcome.
                conn.execute(
                    "UPDATE batches SET done = TRUE, result = %s"
                    " WHERE caller = %s AND request_id = %s",
                    (result.final_result, new.caller, new.request_id),
                )
            self._append(conn, result.events)
            return new

        return self._write(work)

    # -- TOTP -----------------------------------------------------------------------

    def put_totp(self, subject: str, sealed: bytes, state: str, event: AuditEvent) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO totp (subject, sealed, state) VALUES (%s, %s, %s)"
                " ON CONFLICT (subject) DO UPDATE SET sealed = EXCLUDED.sealed,"
                " state = EXCLUDED.state",
                (subject, sealed, state),
            )
            self._append(conn, [event])

        self._write(work)

    def get_totp(self, subject: str) -> tuple[bytes, str] | None:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT sealed, state FROM totp WHERE subject = %s", (subject,)
            ).fetchone()
        )
        return None if row is None else (bytes(row[0]), str(row[1]))

    def update_totp_state(
        self, subject: str, change: Callable[[str], tuple[str, Sequence[AuditEvent], T]]
    ) -> T:
        """Run `change` on the stored state inside one transaction and keep its result."""

        def work(conn: Conn) -> T:
            row = conn.execute(
                "SELECT state FROM totp WHERE subject = %s FOR UPDATE", (subject,)
            ).fetchone()
            if row is None:
                raise LookupError(f"{subject} has no TOTP enrollment")
            state, events, result = change(row[0])
            conn.execute("UPDATE totp SET state = %s WHERE subject = %s", (state, subject))
            self._append(conn, events)
            return result

        return self._write(work)

    def change_totp(
        self,
        subject: str,
        change: Callable[
            [tuple[bytes, str] | None],
            tuple[tuple[bytes, str] | None, Sequence[AuditEvent], T],
        ],
    ) -> T:
        """Read-modify-write one identity's (sealed secret, state) in one transaction."""

        def work(conn: Conn) -> T:
            # The advisory lock also serializes the first write, when no row exists to lock.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key("totp", subject),))
            row = conn.execute(
                "SELECT sealed, state FROM totp WHERE subject = %s FOR UPDATE", (subject,)
            ).fetchone()
            new, events, result = change(None if row is None else (bytes(row[0]), str(row[1])))
            if new is not None:
                conn.execute(
                    "INSERT INTO totp (subject, sealed, state) VALUES (%s, %s, %s)"
                    " ON CONFLICT (subject) DO UPDATE SET sealed = EXCLUDED.sealed,"
                    " state = EXCLUDED.state",
                    (subject, *new),
                )
            self._append(conn, events)
            return result

        return self._write(work)
