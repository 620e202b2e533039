"""The store logic, written once for every SQL backend.

SqlStore implements signer.store.base.Store (and so policy_tables.PolicyStore)
over a small dialect layer; SqliteStore and PostgresStore supply only what
really differs:

- a transaction (`Tx`): the connection that runs it, its placeholders (the SQL
  here uses `?`), the row-lock suffix (`FOR UPDATE` on PostgreSQL; SQLite has
  one writer, so every write transaction is serialized already) and named
  advisory locks (PostgreSQL transaction advisory locks; nothing on SQLite);
- how transactions run: `_read` and `_transact` (group commit on SQLite, a
  connection pool with bounded retries on PostgreSQL); raising `Rollback(value)`
  inside one rolls it back and returns `value`;
- the head of the audit log and how records are inserted (`_head`,
  `_insert_records`), and how budget amounts are summed (`USAGE_SELECT`):
  SQLite keeps uint256 amounts as text and sums them in Python;
- `exclusive`, `ping`, `close`, and how often `wait_for_audit` polls for other
  processes' appends.

Booleans are written TRUE/FALSE and tested with NOT, which both backends read
alike; upserts are `ON CONFLICT ... DO NOTHING/UPDATE`, which both support.

Lock order inside a write transaction, the same everywhere so that replicas
never deadlock: the batch or pending row first, then budget buckets (ascending),
then the audit head last (records are appended at the end of each transaction).
A `change` callback may run more than once on PostgreSQL (a transaction retried
after a deadlock or a lost connection): it must depend only on the row given.
"""

from __future__ import annotations

import abc
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol, TypeVar

from custos.audit.merkle import leaf_hash
from custos.audit.record import AuditEvent, AuditRecord, ChainHead, next_record
from custos.policies.velocity import Spent
from custos.signer.store.base import (
    BatchRecord,
    BudgetFloor,
    Claim,
    ClaimLost,
    ClaimOutcome,
    KeyAlreadyExists,
    KeyRecord,
    KeyState,
    LegacySealer,
    RowGuard,
    StoredCheckpoint,
    StoreError,
    StoreUnavailable,
    VersionExists,
)
from custos.signer.store.ceremony_tables import CeremonyRow
from custos.signer.store.policy_tables import Admission, PendingChange, PendingRow, PolicyRow
from custos.signer.store.wallet_tables import WalletRecord, WalletTables, insert_wallet
from custos.signer.store.webhook_tables import WebhookTables

T = TypeVar("T")

KEY_COLUMNS = (
    "key_id, public_key, state, created_by, created_at_ms, network_class, version, mac, origin"
)
PENDING_COLUMNS = "approval_id, caller, request_id, state, expires_at_ms, record, request, rev, mac"
CEREMONY_COLUMNS = "ceremony_id, kind, state, record, created_at_ms, rev, mac"
POLICY_COLUMNS = "version, hash, document_yaml, state, record, activated_at_ms, rev, mac"
BATCH = "FROM batches WHERE caller = ? AND request_id = ?"
CLAIM_ATTEMPTS = 4  # insert-or-lock rounds before a claim gives up (the id keeps churning)
TOKEN_BYTES = 16
TAKEN_OVER = "lease expired; taken over by a retry"
LAPSED = "lease expired; no retry came"
# Admissions tried while the rows hold less than the audit log proves, refreshing
# the ledger in between (a release another replica committed but this one has not
# verified yet), before the shortfall is called tampering.
FLOOR_ATTEMPTS = 3


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Rows(Protocol):
    """What a statement returns: sqlite3.Cursor and psycopg.Cursor both fit."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(abc.ABC):
    """One open transaction in a backend's dialect."""

    for_update: ClassVar[str] = ""  # appended to a SELECT that must lock its rows

    @abc.abstractmethod
    def execute(self, query: str, params: Sequence[Any] = ()) -> Rows: ...

    @abc.abstractmethod
    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def lock(self, kind: str, names: Iterable[str]) -> None:  # noqa: B027 - a no-op by default
        """Hold named locks until the transaction ends (taken in ascending order)."""


class Rollback(Exception):
    """Raised inside a transaction to roll it back and return `value` from it."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


class SqlStore(WebhookTables, WalletTables, abc.ABC):
    """Every Store method, once; subclasses supply the dialect (see the module docstring)."""

    USAGE_SELECT: ClassVar[str]  # the amount/count columns (or their sums) of reservations
    LAST_SEQ: ClassVar[str]  # one row, one column: the last seq of the log, or -1 / NULL
    POLL_SECONDS: ClassVar[float | None] = None  # how often other processes' appends are sought

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self._clock_ms = clock_ms
        self._appended = threading.Condition()
        self._generation = 0  # bumped on every local write; wakes wait_for_audit early
        self._guard: RowGuard = _Unguarded()
        self._floor: BudgetFloor | None = None  # None: store tests, no audit log at hand

    def guard_rows(self, guard: RowGuard) -> None:
        self._guard = guard

    def floor_budget(self, floor: BudgetFloor) -> None:
        self._floor = floor

    def _floored(self, run: Callable[[], T], *, budget: bool = True) -> T:
        """`run` a write that admits budget, with the floor caught up with the log first.

        `_admit` rolls the transaction back with a _Short when the rows of a bucket
        hold less than the floor; then the floor catches up again and `run` is
        tried again. A release (of another replica, or of a write committed with
        ours in one SQLite group) that the rows showed was committed with its
        record, so a refreshed floor agrees unless rows were deleted or altered.
        """
        if self._floor is None or not budget:  # `budget`: False when nothing is reserved
            return run()
        short: _Short | None = None
        for _ in range(FLOOR_ATTEMPTS):
            self._floor.refresh()
            result = run()
            if not isinstance(result, _Short):
                return result
            short = result
        assert short is not None
        raise self._floor.tampered(short.bucket, short.logged, short.stored)

    def seal_legacy_rows(
        self, sealer: LegacySealer, event: Callable[[dict[str, list[str]]], AuditEvent]
    ) -> dict[str, list[str]]:
        def work(tx: Tx) -> dict[str, list[str]]:
            for table in ("keys", "policy_versions", "pending", "totp"):
                tagged = tx.execute(
                    f"SELECT 1 FROM {table} WHERE mac IS NOT NULL LIMIT 1"  # noqa: S608
                ).fetchone()
                if tagged is not None:
                    raise StoreError(
                        f"{table} already holds authenticated rows: this store was sealed"
                        " before, and rows without a tag now are tampered, not old"
                    )
            sealed: dict[str, list[str]] = {}
            query = f"SELECT {KEY_COLUMNS} FROM keys ORDER BY key_id"  # noqa: S608
            for key in [_key(row) for row in tx.execute(query).fetchall()]:
                tx.execute(
                    "UPDATE keys SET mac = ? WHERE key_id = ?", (sealer.key(key), key.key_id)
                )
                sealed.setdefault("keys", []).append(key.key_id)
            query = f"SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY version"  # noqa: S608
            for policy in [_policy(row) for row in tx.execute(query).fetchall()]:
                tx.execute(
                    "UPDATE policy_versions SET mac = ? WHERE version = ?",
                    (sealer.policy(policy), policy.version),
                )
                sealed.setdefault("policy_versions", []).append(str(policy.version))
            query = f"SELECT {PENDING_COLUMNS} FROM pending ORDER BY approval_id"  # noqa: S608
            for pending in [_pending(row) for row in tx.execute(query).fetchall()]:
                tx.execute(
                    "UPDATE pending SET mac = ? WHERE approval_id = ?",
                    (sealer.pending(pending), pending.approval_id),
                )
                sealed.setdefault("pending", []).append(pending.approval_id)
            rows = tx.execute("SELECT subject, sealed, state, rev FROM totp ORDER BY subject")
            for subject, secret, state, rev in rows.fetchall():
                mac = sealer.totp(subject, bytes(secret), state, int(rev))
                tx.execute("UPDATE totp SET mac = ? WHERE subject = ?", (mac, subject))
                sealed.setdefault("totp", []).append(subject)
            self._append(tx, [event(sealed)])
            return sealed

        return self._write(work)

    # -- the dialect ---------------------------------------------------------------

    @abc.abstractmethod
    def _read(self, work: Callable[[Tx], T]) -> T: ...

    @abc.abstractmethod
    def _transact(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in one write transaction, committed (durably) before returning.

        `Rollback(value)` raised by `work` rolls the transaction back and returns `value`.
        """

    @abc.abstractmethod
    def _head(self, tx: Tx) -> ChainHead | None:
        """The last record of the log, locked until the transaction ends."""

    @abc.abstractmethod
    def _insert_records(self, tx: Tx, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Insert (seq, encoding, leaf hash) rows and make the last one the head."""

    @abc.abstractmethod
    def exclusive(self, name: str) -> AbstractContextManager[None]: ...

    @abc.abstractmethod
    def ping(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- transactions ----------------------------------------------------------------

    def _write(self, work: Callable[[Tx], T]) -> T:
        result = self._transact(work)
        with self._appended:
            self._generation += 1
            self._appended.notify_all()
        return result

    def _append(self, tx: Tx, events: Sequence[AuditEvent], ts_ms: int | None = None) -> None:
        """Chain `events` onto the log inside the caller's transaction (its last step).

        `ts_ms`: the records' time when it must equal something else the
        transaction stamped (reservations, which signer.usecases.budget_ledger replays).
        """
        if not events:
            return
        head = self._head(tx)
        ts = self._clock_ms() if ts_ms is None else ts_ms
        rows = []
        for event in events:
            record = next_record(head, event, ts)
            # Encoded once: a batch's records list every item (JSON is most of their cost).
            encoding = record.encode()
            head = ChainHead(record.seq, leaf_hash(encoding))
            rows.append((record.seq, encoding, head.hash))
        self._insert_records(tx, rows)

    def _write_audited(self, work: Callable[[Tx], T], events: Sequence[AuditEvent]) -> T:
        def audited(tx: Tx) -> T:
            result = work(tx)
            self._append(tx, events)
            return result

        return self._write(audited)

    # -- keys ----------------------------------------------------------------------

    def insert_key(self, key: KeyRecord, event: AuditEvent) -> None:
        def work(tx: Tx) -> None:
            if not _insert_key(tx, key):
                raise KeyAlreadyExists(key.key_id)

        self._write_audited(work, [event])

    def insert_keys(
        self,
        keys: Sequence[KeyRecord],
        events: Sequence[AuditEvent],
        wallets: Sequence[WalletRecord] = (),
    ) -> None:
        """Insert every key and wallet and append the events in one transaction: all or
        none (a restore registers a whole backup this way)."""

        def work(tx: Tx) -> None:
            for key in keys:
                if not _insert_key(tx, key):
                    raise KeyAlreadyExists(key.key_id)
            for wallet in wallets:
                if not insert_wallet(tx, wallet):
                    raise KeyAlreadyExists(f"wallet {wallet.wallet_id}")

        self._write_audited(work, events)

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self.get_keys([key_id]).get(key_id)

    def get_keys(self, key_ids: Sequence[str]) -> dict[str, KeyRecord]:
        ids = sorted(set(key_ids))
        if not ids:
            return {}
        query = f"SELECT {KEY_COLUMNS} FROM keys WHERE key_id IN ({_marks(ids)})"  # noqa: S608
        rows = self._read(lambda tx: tx.execute(query, ids).fetchall())
        return {row[0]: _key(row) for row in rows}

    def list_keys(self) -> list[KeyRecord]:
        query = f"SELECT {KEY_COLUMNS} FROM keys ORDER BY key_id"  # noqa: S608
        return [_key(row) for row in self._read(lambda tx: tx.execute(query).fetchall())]

    def replace_key(self, key: KeyRecord, event: AuditEvent) -> bool:
        def work(tx: Tx) -> bool:
            if not _replace_key(tx, key):
                raise Rollback(False)  # nothing changed, so no audit record either
            self._append(tx, [event])
            return True

        return self._write(work)

    # -- batches: fenced claims on request ids ------------------------------------------

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
        held = admission.pending if admission is not None else None
        if admission is not None and held is not None:
            # Sealed before the transaction: the HSM call holds no lock.
            held = self._guard.seal_pending(
                dataclasses.replace(held, caller=caller, request_id=request_id, rev=1, mac=None)
            )
            admission = dataclasses.replace(admission, pending=held)
        # A held batch has nobody signing it yet: the approval desk fences its signer.
        token = None if held is not None else secrets.token_bytes(TOKEN_BYTES)
        approval_id = held.approval_id if held is not None else None

        def work(tx: Tx) -> Claim:
            now = self._clock_ms()
            # A batch held for approvals keeps its request id until it is settled.
            lease_until = held.expires_at_ms if held is not None else now + lease_ms
            values = (payload_digest, lease_until, approval_id, token)
            closing: list[AuditEvent] = []
            for _ in range(CLAIM_ATTEMPTS):
                # Either this attempt creates the row (and holds it until COMMIT),
                # or it locks the row an earlier attempt left and judges it.
                inserted = tx.execute(
                    "INSERT INTO batches (caller, request_id, payload_digest, lease_until_ms,"
                    " approval_id, claim_token) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (caller, request_id) DO NOTHING RETURNING 1",
                    (caller, request_id, *values),
                ).fetchone()
                if inserted is not None:
                    break
                row = tx.execute(
                    "SELECT payload_digest, done, lease_until_ms, result, approval_id"
                    f" {BATCH}{tx.for_update}",
                    (caller, request_id),
                ).fetchone()
                if row is None:
                    continue  # released between the two statements: try to insert again
                digest, done, lease_until_ms, result, pending_id = row
                if bytes(digest) != payload_digest:
                    raise Rollback(Claim(ClaimOutcome.CONFLICT))
                if done:
                    raise Rollback(Claim(ClaimOutcome.DONE, _bytes(result)))
                if pending_id is not None:
                    raise Rollback(Claim(ClaimOutcome.PENDING, approval_id=pending_id))
                if lease_until_ms > now:
                    raise Rollback(Claim(ClaimOutcome.IN_PROGRESS))
                # The lease ran out: the attempt that held it is abandoned. Its
                # token stops working here, its budget comes back, and a record
                # closes its sign.authorized (appended last, see the lock order).
                closing.append(
                    AuditEvent(
                        "sign.failed", caller, {"request_id": request_id, "reason": TAKEN_OVER}
                    )
                )
                _release_reservations(tx, caller, request_id)
                tx.execute(
                    "UPDATE batches SET payload_digest = ?, done = FALSE, lease_until_ms = ?,"
                    " result = NULL, approval_id = ?, claim_token = ? WHERE caller = ?"
                    " AND request_id = ?",
                    (*values, caller, request_id),
                )
                break
            else:
                raise StoreUnavailable(f"request id {request_id!r} keeps being taken and released")
            if admission is not None:
                breach = self._admit(tx, admission, caller, request_id, now)
                if breach is not None:
                    if not closing:
                        # Rolls back the row inserted above too: the id stays free.
                        raise Rollback(Claim(ClaimOutcome.OVER_LIMIT, breach=breach))
                    # Keep the abandoned attempt closed; the id is free again.
                    tx.execute(f"DELETE {BATCH}", (caller, request_id))
                    self._append(tx, closing)
                    return Claim(ClaimOutcome.OVER_LIMIT, breach=breach)
            # Stamped like the reservations: the ledger replays them from these records.
            self._append(tx, [*closing, *events], ts_ms=now)
            return Claim(ClaimOutcome.HELD if held else ClaimOutcome.CLAIMED, token=token)

        reserves = admission is not None and bool(admission.windows)
        return self._floored(lambda: self._write(work), budget=reserves)

    def _admit(
        self, tx: Tx, admission: Admission, caller: str, request_id: str, now: int
    ) -> object | None:
        """Check the budget and reserve it (and store the pending row); the breach, if any."""
        buckets = {b for b, _ in admission.windows} | {b for b, _, _ in admission.reservations}
        tx.lock("bucket", buckets)
        spent: dict[str, Spent] = {}
        for bucket, start_ms in admission.windows:
            rows = tx.execute(
                f"SELECT {self.USAGE_SELECT} FROM reservations"  # noqa: S608
                " WHERE bucket = ? AND NOT released AND reserved_at_ms > ?",
                (bucket, start_ms),
            ).fetchall()
            spent[bucket] = Spent(
                sum(int(a) for a, _ in rows if a is not None),
                sum(int(c) for _, c in rows if c is not None),
            )
            if self._floor is not None:
                logged = self._floor.usage(bucket, start_ms, (caller, request_id))
                if logged.amount > spent[bucket].amount or logged.count > spent[bucket].count:
                    raise Rollback(_Short(bucket, logged, spent[bucket]))
        breach: object | None = admission.check(spent)
        if breach is not None:
            return breach
        tx.executemany(
            "INSERT INTO reservations (bucket, amount, count, reserved_at_ms, caller, request_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            # Text for the amount: uint256 values overflow every integer type.
            [(b, str(a), c, now, caller, request_id) for b, a, c in admission.reservations],
        )
        if admission.pending is not None:
            p = admission.pending
            tx.execute(
                f"INSERT INTO pending ({PENDING_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    p.approval_id,
                    caller,
                    request_id,
                    p.state,
                    p.expires_at_ms,
                    p.record,
                    p.request,
                    p.rev,
                    p.mac,
                ),
            )
        return None

    def complete_batch(
        self,
        caller: str,
        request_id: str,
        result: bytes,
        events: Sequence[AuditEvent],
        *,
        token: bytes,
    ) -> None:
        def work(tx: Tx) -> None:
            cur = tx.execute(
                "UPDATE batches SET done = TRUE, result = ?"
                " WHERE caller = ? AND request_id = ? AND claim_token = ? AND NOT done",
                (result, caller, request_id, token),
            )
            if cur.rowcount != 1:
                raise ClaimLost(f"request id {request_id!r} is no longer held by this attempt")
            self._append(tx, events)

        self._write(work)

    def release_batch(
        self, caller: str, request_id: str, events: Sequence[AuditEvent], *, token: bytes
    ) -> bool:
        def work(tx: Tx) -> bool:
            row = tx.execute(
                f"SELECT approval_id {BATCH} AND claim_token = ? AND NOT done{tx.for_update}",
                (caller, request_id, token),
            ).fetchone()
            if row is None:
                raise Rollback(False)  # a later attempt's, or completed: not ours to touch
            if row[0] is not None:
                # An approved batch stays approved with its budget: only this claim ends.
                tx.execute(
                    "UPDATE batches SET claim_token = NULL WHERE caller = ? AND request_id = ?",
                    (caller, request_id),
                )
            else:
                tx.execute(f"DELETE {BATCH}", (caller, request_id))
                _release_reservations(tx, caller, request_id)
            self._append(tx, events)
            return True

        return self._write(work)

    def expire_claims(self, limit: int = 100) -> int:
        def work(tx: Tx) -> int:
            rows = tx.execute(
                "SELECT caller, request_id FROM batches WHERE NOT done AND approval_id IS NULL"  # noqa: S608
                f" AND lease_until_ms <= ? ORDER BY lease_until_ms LIMIT ?{tx.for_update}",
                (self._clock_ms(), limit),
            ).fetchall()
            closing = []
            for caller, request_id in rows:
                tx.execute(f"DELETE {BATCH}", (caller, request_id))
                _release_reservations(tx, caller, request_id)
                closing.append(
                    AuditEvent("sign.failed", caller, {"request_id": request_id, "reason": LAPSED})
                )
            self._append(tx, closing)
            return len(rows)

        return self._write(work)

    def get_batch(self, caller: str, request_id: str) -> BatchRecord | None:
        row = self._read(
            lambda tx: tx.execute(
                f"SELECT payload_digest, done, result, approval_id {BATCH}",
                (caller, request_id),
            ).fetchone()
        )
        if row is None:
            return None
        return BatchRecord(caller, request_id, bytes(row[0]), bool(row[1]), _bytes(row[2]), row[3])

    # -- audit ------------------------------------------------------------------------

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        self._write(lambda tx: self._append(tx, events))

    def audit_records(self, from_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        return [AuditRecord.decode(data) for _seq, data, _hash in self.audit_rows(from_seq, limit)]

    def audit_rows(self, from_seq: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """(seq, canonical encoding, leaf hash) from `from_seq`, at most `limit` rows."""
        rows = self._read(
            lambda tx: tx.execute(
                "SELECT seq, record, hash FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                (from_seq, limit),
            ).fetchall()
        )
        return [(int(seq), bytes(data), bytes(leaf)) for seq, data, leaf in rows]

    def audit_size(self) -> int:
        row = self._read(lambda tx: tx.execute(self.LAST_SEQ).fetchone())
        if row is None:
            raise StoreError("audit_head is missing: the schema was not migrated")
        return 0 if row[0] is None else int(row[0]) + 1

    def leaf_hashes(self, size: int) -> list[bytes]:
        rows = self._read(
            lambda tx: tx.execute(
                "SELECT hash FROM audit_log WHERE seq < ? ORDER BY seq", (size,)
            ).fetchall()
        )
        return [bytes(row[0]) for row in rows]

    def wait_for_audit(self, size: int, timeout: float) -> None:
        """Return when the log holds more than `size` records, or after `timeout` seconds.

        Writes by this process wake the waiter at once; other processes' appends
        (PostgreSQL replicas) are seen by polling every POLL_SECONDS.
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
                    poll = self._poll_seconds()
                    self._appended.wait(left if poll is None else min(poll, left))

    def _poll_seconds(self) -> float | None:
        """How long wait_for_audit sleeps between looks for other processes' appends."""
        return self.POLL_SECONDS

    def wake_waiters(self) -> None:
        """Wake wait_for_audit callers early: the log may have grown, or a waiter must stop."""
        with self._appended:
            self._generation += 1
            self._appended.notify_all()

    def save_checkpoint(self, checkpoint: StoredCheckpoint, event: AuditEvent) -> None:
        self._write_audited(
            lambda tx: tx.execute(
                "INSERT INTO audit_checkpoints (size, root, note) VALUES (?, ?, ?)"
                " ON CONFLICT (size) DO NOTHING",
                (checkpoint.size, checkpoint.root, checkpoint.note),
            ),
            [event],
        )

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        row = self._read(
            lambda tx: tx.execute(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        )
        return None if row is None else StoredCheckpoint(int(row[0]), bytes(row[1]), row[2])

    def all_checkpoints(self) -> list[StoredCheckpoint]:
        rows = self._read(
            lambda tx: tx.execute(
                "SELECT size, root, note FROM audit_checkpoints ORDER BY size"
            ).fetchall()
        )
        return [StoredCheckpoint(int(r[0]), bytes(r[1]), r[2]) for r in rows]

    # -- policy versions ----------------------------------------------------------------

    def policy_versions(self) -> list[PolicyRow]:
        query = f"SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY version"  # noqa: S608
        return [_policy(row) for row in self._read(lambda tx: tx.execute(query).fetchall())]

    def insert_policy_version(self, row: PolicyRow, events: Sequence[AuditEvent]) -> None:
        """Store a new version (VersionExists when its number is taken)."""
        values = (
            row.version,
            row.hash,
            row.document_yaml,
            row.state,
            row.record,
            row.activated_at_ms,
            row.rev,
            row.mac,
        )

        def work(tx: Tx) -> None:
            tx.lock("policy", [""])
            inserted = tx.execute(
                f"INSERT INTO policy_versions ({POLICY_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (version) DO NOTHING RETURNING 1",
                values,
            ).fetchone()
            if inserted is None:
                raise VersionExists(f"policy version {row.version} already exists")

        self._write_audited(work, events)

    def update_policy_version(
        self,
        version: int,
        change: Callable[[PolicyRow], tuple[PolicyRow, Sequence[AuditEvent]] | None],
    ) -> PolicyRow | None:
        """Read-modify-write one version in one transaction; `change` returns None to skip."""

        def work(tx: Tx) -> PolicyRow | None:
            # One policy writer at a time across replicas: activating a version
            # supersedes whichever is active, which a row lock alone would not
            # serialize (two activations could each miss the other's new row).
            tx.lock("policy", [""])
            current = tx.execute(
                f"SELECT {POLICY_COLUMNS} FROM policy_versions WHERE version = ?"  # noqa: S608
                f"{tx.for_update}",
                (version,),
            ).fetchone()
            if current is None:
                return None
            result = change(_policy(current))
            if result is None:
                return _policy(current)
            new, events = result
            if new.state == "active":
                # The superseded row keeps its mac: its authenticated state is
                # "activated" either way (signer.usecases.policy_governor.policy_fact).
                tx.execute("UPDATE policy_versions SET state = 'superseded' WHERE state = 'active'")
            tx.execute(
                "UPDATE policy_versions SET state = ?, record = ?, activated_at_ms = ?,"
                " rev = ?, mac = ? WHERE version = ?",
                (new.state, new.record, new.activated_at_ms, new.rev, new.mac, version),
            )
            self._append(tx, events)
            return new

        return self._write(work)

    # -- key ceremonies ---------------------------------------------------------------

    def insert_ceremony(self, row: CeremonyRow, events: Sequence[AuditEvent]) -> None:
        values = (row.ceremony_id, row.kind, row.state, row.record, row.created_at_ms, row.rev)
        self._write_audited(
            lambda tx: tx.execute(
                f"INSERT INTO ceremonies ({CEREMONY_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*values, row.mac),
            ),
            events,
        )

    def get_ceremony(self, ceremony_id: str) -> CeremonyRow | None:
        found = self._read(
            lambda tx: tx.execute(
                f"SELECT {CEREMONY_COLUMNS} FROM ceremonies WHERE ceremony_id = ?",  # noqa: S608
                (ceremony_id,),
            ).fetchone()
        )
        return None if found is None else _ceremony(found)

    def list_ceremonies(self, limit: int = 1000) -> list[CeremonyRow]:
        query = (
            f"SELECT {CEREMONY_COLUMNS} FROM ceremonies"  # noqa: S608
            " ORDER BY created_at_ms DESC, ceremony_id LIMIT ?"
        )
        return [_ceremony(r) for r in self._read(lambda tx: tx.execute(query, (limit,)).fetchall())]

    def update_ceremony(
        self,
        ceremony_id: str,
        change: Callable[[CeremonyRow], tuple[CeremonyRow, Sequence[AuditEvent]] | None],
    ) -> CeremonyRow | None:
        def work(tx: Tx) -> CeremonyRow | None:
            current = tx.execute(
                f"SELECT {CEREMONY_COLUMNS} FROM ceremonies WHERE ceremony_id = ?"  # noqa: S608
                f"{tx.for_update}",
                (ceremony_id,),
            ).fetchone()
            if current is None:
                return None
            result = change(_ceremony(current))
            if result is None:
                return _ceremony(current)
            new, events = result
            tx.execute(
                "UPDATE ceremonies SET state = ?, record = ?, rev = ?, mac = ?"
                " WHERE ceremony_id = ?",
                (new.state, new.record, new.rev, new.mac, ceremony_id),
            )
            self._append(tx, events)
            return new

        return self._write(work)

    def finish_ceremony(
        self,
        row: CeremonyRow,
        key: KeyRecord | None,
        events: Sequence[AuditEvent],
        *,
        wallet: WalletRecord | None = None,
    ) -> bool:
        def work(tx: Tx) -> bool:
            # Compare-and-set: only the one successor of the approved row read.
            finished = tx.execute(
                "UPDATE ceremonies SET state = ?, record = ?, rev = ?, mac = ?"
                " WHERE ceremony_id = ? AND rev = ? AND state = 'approved' RETURNING 1",
                (row.state, row.record, row.rev, row.mac, row.ceremony_id, row.rev - 1),
            ).fetchone()
            if finished is None:
                raise Rollback(False)
            if key is not None:
                written = _insert_key(tx, key) if key.version == 1 else _replace_key(tx, key)
                if not written:
                    raise Rollback(False)
            if wallet is not None and not insert_wallet(tx, wallet):
                raise Rollback(False)
            self._append(tx, events)
            return True

        return self._write(work)

    # -- approvals --------------------------------------------------------------------

    def get_pending(self, approval_id: str) -> PendingRow | None:
        since = self._guard.epoch()
        row = self._read(
            lambda tx: tx.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending WHERE approval_id = ?",  # noqa: S608
                (approval_id,),
            ).fetchone()
        )
        if row is None:
            return None
        found = _pending(row)
        self._guard.check_pending([found], since)
        return found

    def list_pending(self, states: Sequence[str]) -> list[PendingRow]:
        if not states:
            return []
        query = (
            f"SELECT {PENDING_COLUMNS} FROM pending WHERE state IN ({_marks(states)})"  # noqa: S608
            " ORDER BY expires_at_ms, approval_id"
        )
        since = self._guard.epoch()
        rows = [
            _pending(row) for row in self._read(lambda tx: tx.execute(query, states).fetchall())
        ]
        # Tampered rows are left out (and alarmed): the sweep goes on with the others.
        return self._guard.valid_pending(rows, since)

    def update_pending(
        self,
        approval_id: str,
        change: Callable[[PendingRow], PendingChange | T],
    ) -> PendingRow | T | None:
        """Read-modify-write one pending batch; rejected/expired ones release their budget.

        `change` returns a PendingChange to write, or any other value to leave
        the row as it is and hand that value back (a refusal). A batch that is
        completed already keeps its result and its reservations.
        """

        written: list[PendingRow] = []

        def work(tx: Tx) -> PendingRow | T | None:
            written.clear()  # PostgreSQL may run this again
            found = tx.execute(
                f"SELECT {PENDING_COLUMNS} FROM pending WHERE approval_id = ?"  # noqa: S608
                f"{tx.for_update}",
                (approval_id,),
            ).fetchone()
            if found is None:
                return None
            current = _pending(found)
            self._guard.check_pending([current])  # never build on a forged or altered row
            result = change(current)
            if not isinstance(result, PendingChange):
                return result
            stamp = None
            if result.rebudget is not None:
                # Judged again under the active limits before anything is sealed.
                _release_reservations(tx, current.caller, current.request_id)
                stamp = now = self._clock_ms()
                breach = self._admit(tx, result.rebudget, current.caller, current.request_id, now)
                if breach is not None:
                    raise Rollback(breach)
            # Only state and record change; the tag covers the whole next version.
            new = self._guard.seal_pending(
                dataclasses.replace(
                    current,
                    state=result.row.state,
                    record=result.row.record,
                    rev=current.rev + 1,
                    mac=None,
                )
            )
            tx.execute(
                "UPDATE pending SET state = ?, record = ?, rev = ?, mac = ? WHERE approval_id = ?",
                (new.state, new.record, new.rev, new.mac, approval_id),
            )
            written.append(new)
            if result.release_budget:
                _release_reservations(tx, new.caller, new.request_id)
            if result.final_result is not None:
                # Settled unsigned: a retry of the request id replays this outcome.
                tx.execute(
                    "UPDATE batches SET done = TRUE, result = ?"
                    " WHERE caller = ? AND request_id = ? AND NOT done",
                    (result.final_result, new.caller, new.request_id),
                )
            self._append(tx, result.events, ts_ms=stamp)
            return new

        outcome = self._floored(lambda: self._write(work))
        for row in written:
            self._guard.committed_pending(row)
        return outcome

    # -- TOTP -----------------------------------------------------------------------

    def get_totp(self, subject: str) -> tuple[bytes, str] | None:
        since = self._guard.epoch()
        row = self._read(
            lambda tx: tx.execute(
                "SELECT sealed, state, rev, mac FROM totp WHERE subject = ?", (subject,)
            ).fetchone()
        )
        if row is None:
            return None
        sealed, state = bytes(row[0]), str(row[1])
        self._guard.check_totp(subject, sealed, state, int(row[2]), _bytes(row[3]), since=since)
        return sealed, state

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

        written: list[int] = []

        def work(tx: Tx) -> T:
            written.clear()
            # The named lock also serializes the first write, when no row exists to lock.
            tx.lock("totp", [subject])
            row = tx.execute(
                f"SELECT sealed, state, rev, mac FROM totp WHERE subject = ?{tx.for_update}",  # noqa: S608
                (subject,),
            ).fetchone()
            current: tuple[bytes, str] | None = None
            rev = 0
            if row is not None:
                current, rev = (bytes(row[0]), str(row[1])), int(row[2])
                # A reset failure count, an older last-used step or another
                # identity's secret must not pass.
                self._guard.check_totp(subject, *current, rev, _bytes(row[3]))
            new, events, result = change(current)
            if new is not None:
                mac = self._guard.seal_totp(subject, new[0], new[1], rev + 1)
                tx.execute(
                    "INSERT INTO totp (subject, sealed, state, rev, mac) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (subject) DO UPDATE SET sealed = excluded.sealed,"
                    " state = excluded.state, rev = excluded.rev, mac = excluded.mac",
                    (subject, *new, rev + 1, mac),
                )
                written.append(rev + 1)
            self._append(tx, events)
            return result

        outcome = self._write(work)
        for rev in written:
            self._guard.committed_totp(subject, rev)
        return outcome


def _release_reservations(tx: Tx, caller: str, request_id: str) -> None:
    """Release the request id's reservations, unless its batch is completed (they stay spent)."""
    tx.execute(
        "UPDATE reservations SET released = TRUE"
        " WHERE caller = ? AND request_id = ? AND NOT released AND NOT EXISTS"
        " (SELECT 1 FROM batches b WHERE b.caller = reservations.caller"
        " AND b.request_id = reservations.request_id AND b.done)",
        (caller, request_id),
    )


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


def _bytes(value: bytes | memoryview | None) -> bytes | None:
    return None if value is None else bytes(value)


def _key(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        row[0],
        bytes(row[1]),
        KeyState(row[2]),
        row[3],
        int(row[4]),
        row[5],
        int(row[6]),
        _bytes(row[7]),
        origin=row[8],
    )


def _insert_key(tx: Tx, key: KeyRecord) -> bool:
    """Insert a new key record; False when the id is taken."""
    inserted = tx.execute(
        f"INSERT INTO keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT (key_id) DO NOTHING RETURNING 1",
        (
            key.key_id,
            key.public_key,
            key.state.value,
            key.created_by,
            key.created_at_ms,
            key.network_class,
            key.version,
            key.mac,
            key.origin,
        ),
    ).fetchone()
    return inserted is not None


def _replace_key(tx: Tx, key: KeyRecord) -> bool:
    """Store `key` over version `key.version - 1`; False when the row is not at that version."""
    # Compare-and-set on the version: the mac was made for one successor only.
    changed = tx.execute(
        "UPDATE keys SET state = ?, version = ?, mac = ?"
        " WHERE key_id = ? AND version = ? RETURNING 1",
        (key.state.value, key.version, key.mac, key.key_id, key.version - 1),
    ).fetchone()
    return changed is not None


def _ceremony(row: tuple[Any, ...]) -> CeremonyRow:
    return CeremonyRow(row[0], row[1], row[2], row[3], int(row[4]), int(row[5]), _bytes(row[6]))


def _policy(row: tuple[Any, ...]) -> PolicyRow:
    return PolicyRow(row[0], row[1], row[2], row[3], row[4], row[5], int(row[6]), _bytes(row[7]))


def _pending(row: tuple[Any, ...]) -> PendingRow:
    return PendingRow(
        row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]), int(row[7]), _bytes(row[8])
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Short:
    """A bucket whose rows hold less than the floor: the admission was rolled back."""

    bucket: str
    logged: Spent
    stored: Spent


class _Unguarded:
    """No HSM at hand (store tests): rows pass unsealed. The server always sets a guard."""

    def seal_pending(self, row: PendingRow) -> PendingRow:
        return row

    def epoch(self) -> int:
        return 0

    def check_pending(self, rows: Sequence[PendingRow], since: int | None = None) -> None:
        pass

    def valid_pending(self, rows: Sequence[PendingRow], since: int | None) -> list[PendingRow]:
        return list(rows)

    def committed_pending(self, row: PendingRow) -> None:
        pass

    def seal_totp(self, subject: str, sealed: bytes, state: str, rev: int) -> bytes | None:
        return None

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
        pass

    def committed_totp(self, subject: str, rev: int) -> None:
        pass
