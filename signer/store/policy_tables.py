"""Store rows for policy: versions, budget reservations, pending approvals, TOTP state.

Backend-neutral records and the SQLite implementation (a mixin of SqliteStore).
Every change that policy makes is audited in the same transaction, and
read-modify-write steps (a TOTP check, an approval) run inside one write
transaction so that two replicas or threads cannot both use one code or both
count one approval.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from audit.record import AuditEvent
from policies.velocity import Spent

T = TypeVar("T")

POLICY_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_versions (
    version INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    document_yaml TEXT NOT NULL,
    state TEXT NOT NULL,
    record TEXT NOT NULL,
    activated_at_ms INTEGER
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
    request BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS totp (
    subject TEXT PRIMARY KEY,
    sealed BLOB NOT NULL,
    state TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PolicyRow:
    version: int
    hash: str
    document_yaml: str
    state: str  # proposed | approved | active | superseded | cancelled
    record: str  # JSON of the governance proposal
    activated_at_ms: int | None


@dataclass(frozen=True, slots=True)
class PendingRow:
    approval_id: str
    caller: str
    request_id: str
    state: str
    expires_at_ms: int
    record: str  # JSON of policies.approvals.PendingRequest and the batch summary
    request: bytes  # the SignBatchRequest, to sign once approved


@dataclass(frozen=True, slots=True)
class PendingChange:
    """What an approval step writes: the new row, its audit events, and side effects."""

    row: PendingRow
    events: Sequence[AuditEvent]
    release_budget: bool = False
    final_result: bytes | None = None  # stored as the batch's result (rejected, expired)


@dataclass(frozen=True, slots=True)
class Admission:
    """Budget to reserve with a claim: checked and inserted in the claim's transaction."""

    windows: tuple[tuple[str, int], ...]  # (bucket, window start in ms): usage to read
    check: Callable[[Mapping[str, Spent]], Any]  # None when the budget allows, else a breach
    reservations: tuple[tuple[str, int, int], ...]  # (bucket, amount, count)
    pending: PendingRow | None = None  # set when the batch waits for approvals


def usage(db: sqlite3.Connection, windows: Sequence[tuple[str, int]]) -> dict[str, Spent]:
    """Reserved-or-spent totals per bucket within its window (released rows excluded)."""
    out: dict[str, Spent] = {}
    for bucket, start_ms in windows:
        rows = db.execute(
            "SELECT amount, count FROM reservations"
            " WHERE bucket = ? AND released = 0 AND reserved_at_ms > ?",
            (bucket, start_ms),
        ).fetchall()
        out[bucket] = Spent(sum(int(a) for a, _ in rows), sum(c for _, c in rows))
    return out


def reserve(
    db: sqlite3.Connection, admission: Admission, caller: str, request_id: str, now_ms: int
) -> None:
    # A retry after a crash re-reserves from scratch rather than stacking reservations.
    db.execute(
        "DELETE FROM reservations WHERE caller = ? AND request_id = ? AND released = 0",
        (caller, request_id),
    )
    db.executemany(
        "INSERT INTO reservations (bucket, amount, count, reserved_at_ms, caller, request_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(b, str(a), c, now_ms, caller, request_id) for b, a, c in admission.reservations],
    )
    if admission.pending is not None:
        p = admission.pending
        db.execute(
            "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?)",
            (p.approval_id, caller, request_id, p.state, p.expires_at_ms, p.record, p.request),
        )


class PolicyTables:
    """SQLite methods for the policy tables; mixed into SqliteStore."""

    _write: Callable[..., Any]
    _read: Callable[..., Any]
    _write_audited: Callable[..., Any]

    # -- policy versions ------------------------------------------------------

    def policy_versions(self) -> list[PolicyRow]:
        rows = self._read(
            lambda db: db.execute("SELECT * FROM policy_versions ORDER BY version").fetchall()
        )
        return [PolicyRow(*row) for row in rows]

    def insert_policy_version(self, row: PolicyRow, events: Sequence[AuditEvent]) -> None:
        """Store a new version (sqlite3.IntegrityError when its number is taken).

        SqliteStore turns that error into VersionExists, the backend-neutral contract.
        """
        values = (
            row.version,
            row.hash,
            row.document_yaml,
            row.state,
            row.record,
            row.activated_at_ms,
        )
        self._write_audited(
            lambda db: db.execute("INSERT INTO policy_versions VALUES (?, ?, ?, ?, ?, ?)", values),
            events,
        )

    def update_policy_version(
        self,
        version: int,
        change: Callable[[PolicyRow], tuple[PolicyRow, Sequence[AuditEvent]] | None],
    ) -> PolicyRow | None:
        """Read-modify-write one version in one transaction; `change` returns None to skip."""

        def work(db: sqlite3.Connection) -> PolicyRow | None:
            found = db.execute("SELECT * FROM policy_versions WHERE version = ?", (version,))
            current = found.fetchone()
            if current is None:
                return None
            result = change(PolicyRow(*current))
            if result is None:
                return PolicyRow(*current)
            new, events = result
            if new.state == "active":
                db.execute("UPDATE policy_versions SET state = 'superseded' WHERE state = 'active'")
            db.execute(
                "UPDATE policy_versions SET state = ?, record = ?, activated_at_ms = ?"
                " WHERE version = ?",
                (new.state, new.record, new.activated_at_ms, version),
            )
            self._append(db, events)  # type: ignore[attr-defined]
            return new

        return self._write(work)  # type: ignore[no-any-return]

    # -- approvals ----------------------------------------------------------------

    def get_pending(self, approval_id: str) -> PendingRow | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT * FROM pending WHERE approval_id = ?", (approval_id,)
            ).fetchone()
        )
        return None if row is None else PendingRow(*row)

    def list_pending(self, states: Sequence[str]) -> list[PendingRow]:
        marks = ",".join("?" * len(states))
        query = f"SELECT * FROM pending WHERE state IN ({marks}) ORDER BY expires_at_ms"  # noqa: S608
        return [
            PendingRow(*row) for row in self._read(lambda db: db.execute(query, states).fetchall())
        ]

    def update_pending(
        self,
        approval_id: str,
        change: Callable[[PendingRow], PendingChange | T],
    ) -> PendingRow | T | None:
        """Read-modify-write one pending batch; rejected/expired ones release their budget.

        `change` returns a PendingChange to write, or any other value to leave
        the row as it is and hand that value back (a refusal).
        """

        def work(db: sqlite3.Connection) -> PendingRow | T | None:
            found = db.execute("SELECT * FROM pending WHERE approval_id = ?", (approval_id,))
            current = found.fetchone()
            if current is None:
                return None
            result = change(PendingRow(*current))
            if not isinstance(result, PendingChange):
                return result
            new = result.row
            db.execute(
                "UPDATE pending SET state = ?, record = ? WHERE approval_id = ?",
                (new.state, new.record, approval_id),
            )
            if result.release_budget:
                db.execute(
                    "UPDATE reservations SET released = 1 WHERE caller = ? AND request_id = ?",
                    (new.caller, new.request_id),
                )
            if result.final_result is not None:
                # Settled unsigned: a retry of the request id replays this outcome.
                db.execute(
                    "UPDATE batches SET done = 1, result = ? WHERE caller = ? AND request_id = ?",
                    (result.final_result, new.caller, new.request_id),
                )
            self._append(db, result.events)  # type: ignore[attr-defined]
            return new

        return self._write(work)  # type: ignore[no-any-return]

    # -- TOTP -----------------------------------------------------------------------

    def put_totp(self, subject: str, sealed: bytes, state: str, event: AuditEvent) -> None:
        self._write_audited(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO totp VALUES (?, ?, ?)", (subject, sealed, state)
            ),
            [event],
        )

    def get_totp(self, subject: str) -> tuple[bytes, str] | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT sealed, state FROM totp WHERE subject = ?", (subject,)
            ).fetchone()
        )
        return None if row is None else (bytes(row[0]), str(row[1]))

    def update_totp_state(
        self, subject: str, change: Callable[[str], tuple[str, Sequence[AuditEvent], T]]
    ) -> T:
        """Run `change` on the stored state inside one transaction and keep its result."""

        def work(db: sqlite3.Connection) -> T:
            row = db.execute("SELECT state FROM totp WHERE subject = ?", (subject,)).fetchone()
            state, events, result = change(row[0])
            db.execute("UPDATE totp SET state = ? WHERE subject = ?", (state, subject))
            self._append(db, events)  # type: ignore[attr-defined]
            return result

        return self._write(work)  # type: ignore[no-any-return]

    def change_totp(
        self,
        subject: str,
        change: Callable[
            [tuple[bytes, str] | None],
            tuple[tuple[bytes, str] | None, Sequence[AuditEvent], T],
        ],
    ) -> T:
        """Read-modify-write one identity's (sealed secret, state) in one transaction.

        `change` gets the row (None when there is none) and returns the row to
        write (None: leave it), the audit events to commit, and a result to return.
        """

        def work(db: sqlite3.Connection) -> T:
            row = db.execute(
                "SELECT sealed, state FROM totp WHERE subject = ?", (subject,)
            ).fetchone()
            new, events, result = change(None if row is None else (bytes(row[0]), str(row[1])))
            if new is not None:
                db.execute("INSERT OR REPLACE INTO totp VALUES (?, ?, ?)", (subject, *new))
            self._append(db, events)  # type: ignore[attr-defined]
            return result

        return self._write(work)  # type: ignore[no-any-return]


class PolicyStore(Protocol):
    """The policy part of the store contract (signer.store.base.Store includes it)."""

    def policy_versions(self) -> list[PolicyRow]: ...

    def insert_policy_version(self, row: PolicyRow, events: Sequence[AuditEvent]) -> None:
        """Store a new version; signer.store.base.VersionExists when its number is taken."""
        ...

    def update_policy_version(
        self,
        version: int,
        change: Callable[[PolicyRow], tuple[PolicyRow, Sequence[AuditEvent]] | None],
    ) -> PolicyRow | None: ...

    def get_pending(self, approval_id: str) -> PendingRow | None: ...

    def list_pending(self, states: Sequence[str]) -> list[PendingRow]: ...

    def update_pending(
        self, approval_id: str, change: Callable[[PendingRow], PendingChange | T]
    ) -> PendingRow | T | None: ...

    def put_totp(self, subject: str, sealed: bytes, state: str, event: AuditEvent) -> None: ...

    def get_totp(self, subject: str) -> tuple[bytes, str] | None: ...

    def update_totp_state(
        self, subject: str, change: Callable[[str], tuple[str, Sequence[AuditEvent], T]]
    ) -> T: ...

    def change_totp(
        self,
        subject: str,
        change: Callable[
            [tuple[bytes, str] | None],
            tuple[tuple[bytes, str] | None, Sequence[AuditEvent], T],
        ],
    ) -> T:
        """Read-modify-write one identity's (sealed secret, state) in one transaction."""
        ...
