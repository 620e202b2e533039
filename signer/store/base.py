"""The state store interface: keys, idempotent batches and the audit log.

Every method that changes state takes the audit events describing the change
and commits them in the same transaction: a change without its audit record,
or a record without its change, cannot happen. The logic is written once
(signer.store.sql.SqlStore) over two dialects: SQLite (embedded default,
signer.store.sqlite) and PostgreSQL (replicas sharing one database,
signer.store.postgres); signer.store.factory.open_store picks one by URL.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from custos.audit.record import AuditEvent, AuditRecord
from custos.signer.store.ceremony_tables import CeremonyStore
from custos.signer.store.policy_tables import Admission, PendingRow, PolicyRow, PolicyStore
from custos.signer.store.wallet_tables import WalletRecord, WalletStore
from custos.signer.store.webhook_tables import WebhookStore

if TYPE_CHECKING:
    # Annotations only: see signer.store.policy_tables.
    from custos.policies.velocity import Spent


class StoreError(Exception):
    """Base class of store errors."""


class StoreUnavailable(StoreError):
    """The database could not be reached or a transaction could not commit."""


class KeyAlreadyExists(StoreError):
    """A key with this id is already registered."""


class VersionExists(StoreError):
    """A policy version with this number is already stored."""


class ClaimLost(StoreError):
    """The claim's token no longer holds the request id: a retry took it over, or it was settled.

    Nothing was written: the attempt must not hand out what it signed.
    """


class KeyState(enum.Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    RETIRED = "retired"  # final: never signs again, never re-enabled


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    public_key: bytes  # 65-byte uncompressed SEC1
    state: KeyState
    created_by: str
    created_at_ms: int
    # "mainnet" | "testnet" (signer/chains/networks.py), fixed for the key's life.
    # The default is the migration rule for keys created before classes existed:
    # the class whose requests face the mainnet rules (see the README, Keys).
    network_class: str = "mainnet"
    # Incremented by every change of the row; with `mac`, the HSM tag over the
    # record bound to its id and version (signer.usecases.authenticity, invariant 8).
    version: int = 1
    mac: bytes | None = None
    # "generated" in the token, or "imported" (signer.usecases.key_import): fixed for the
    # key's life, shown wherever the key is, and a policy rule can match it.
    origin: str = "generated"


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"  # this attempt holds the id under `token`: it must complete or release it
    HELD = "held"  # claimed and held for approvals (Admission.pending): nothing to sign yet
    PENDING = "pending"  # an earlier attempt is waiting for approvals: `approval_id`
    OVER_LIMIT = "over_limit"  # the budget check refused: `breach`
    DONE = "done"  # already signed with the same payload: replay `result`
    IN_PROGRESS = "in_progress"  # another attempt holds a live lease
    CONFLICT = "conflict"  # the id was used with a different payload


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    result: bytes | None = None
    approval_id: str | None = None
    breach: object | None = None
    # Random, stored with the claim: complete_batch and release_batch need it, so an
    # attempt whose lease ran out cannot touch the work of the retry that took over.
    token: bytes | None = None


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str  # the signed note, as auditors receive it


@dataclass(frozen=True, slots=True)
class BatchRecord:
    caller: str
    request_id: str
    payload_digest: bytes
    done: bool
    result: bytes | None
    approval_id: str | None = None  # set while the batch waits for approvals


class RowGuard(Protocol):
    """Seals and checks rows the store writes and reads itself (signer.usecases.authenticity).

    Pending batches and TOTP rows change inside the store's own read-modify-write
    transactions, so the store asks its guard for each new row's tag and checks
    every row it reads or changes; a check that fails raises (TamperedState).
    """

    def seal_pending(self, row: PendingRow) -> PendingRow:
        """`row` with the tag of exactly these contents at `row.rev`."""
        ...

    def epoch(self) -> int:
        """Taken before a read outside a write transaction; passed to the checks as `since`."""
        ...

    def check_pending(self, rows: Sequence[PendingRow], since: int | None = None) -> None:
        """`since`: see signer.usecases.authenticity.StateAuthenticator.verify (None: rows
        locked)."""
        ...

    def valid_pending(self, rows: Sequence[PendingRow], since: int | None) -> list[PendingRow]:
        """The rows that pass (for listings: one bad row must not hide the others)."""
        ...

    def committed_pending(self, row: PendingRow) -> None:
        """`row` is stored now: an older version of it put back is a replay."""
        ...

    def seal_totp(self, subject: str, sealed: bytes, state: str, rev: int) -> bytes | None:
        """The tag of one identity's TOTP row (sealed secret, counters) at version `rev`."""
        ...

    def check_totp(
        self,
        subject: str,
        sealed: bytes,
        state: str,
        rev: int,
        mac: bytes | None,
        *,
        since: int | None = None,
    ) -> None: ...

    def committed_totp(self, subject: str, rev: int) -> None: ...


class BudgetFloor(Protocol):
    """What the verified audit log proves each budget bucket holds (signer.usecases.budget_ledger).

    Reservation rows carry no tag, so the store checks them against this floor
    under its bucket locks: rows may hold more than the floor, never less.
    """

    def usage(self, bucket: str, start_ms: int, without: tuple[str, str]) -> Spent:
        """The bucket's live reservations stamped strictly after `start_ms`, leaving out
        those of (caller, request id) `without`, which the asking transaction releases."""
        ...

    def refresh(self) -> None:
        """Catch up with the committed log (called before every admission)."""
        ...

    def tampered(self, bucket: str, logged: Spent, stored: Spent) -> Exception:
        """The error to raise (its alarm raised) when the rows stay below the floor."""
        ...


class LegacySealer(Protocol):
    """Tags for rows written before state authentication (`custos integrity seal`)."""

    def key(self, record: KeyRecord) -> bytes: ...

    def policy(self, row: PolicyRow) -> bytes: ...

    def pending(self, row: PendingRow) -> bytes: ...

    def totp(self, subject: str, sealed: bytes, state: str, rev: int) -> bytes: ...


class Store(PolicyStore, CeremonyStore, WebhookStore, WalletStore, Protocol):
    """Transactional state shared by every replica."""

    def insert_key(self, key: KeyRecord, event: AuditEvent) -> None: ...

    def insert_keys(
        self,
        keys: Sequence[KeyRecord],
        events: Sequence[AuditEvent],
        wallets: Sequence[WalletRecord] = (),
    ) -> None:
        """All of `keys`, `wallets` and `events` in one transaction, or none
        (KeyAlreadyExists naming the key or wallet id)."""
        ...

    def get_key(self, key_id: str) -> KeyRecord | None: ...

    def get_keys(self, key_ids: Sequence[str]) -> dict[str, KeyRecord]: ...

    def list_keys(self) -> list[KeyRecord]: ...

    def replace_key(self, key: KeyRecord, event: AuditEvent) -> bool:
        """Store `key` (state, version, mac) over version `key.version - 1` and audit it.

        False, and nothing written, when the stored row is not at that version
        (changed meanwhile, or gone): the caller computed `key.mac` for exactly
        one successor of the row it read.
        """
        ...

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
        """Take the request id for signing, or say why not.

        With an `admission`, the budget is checked and reserved in the same
        transaction (OVER_LIMIT when it does not fit), and a batch that waits
        for approvals is stored as pending (HELD).

        A CLAIMED outcome carries the claim's `token`. A lease left behind by a
        crashed or stalled attempt expires after `lease_ms`; nothing it signed
        ever left the process (results are stored, under its token, before they
        are returned), so a later attempt takes the id over: in the same
        transaction a `sign.failed` record closes the abandoned attempt and its
        reservations are released, and the old token stops working. `events`
        are committed only when the claim is taken.
        """
        ...

    def complete_batch(
        self,
        caller: str,
        request_id: str,
        result: bytes,
        events: Sequence[AuditEvent],
        *,
        token: bytes,
    ) -> None:
        """Store the result under the claim's `token`; ClaimLost (nothing written) otherwise."""
        ...

    def release_batch(
        self, caller: str, request_id: str, events: Sequence[AuditEvent], *, token: bytes
    ) -> bool:
        """Give the id back after a failed attempt, so that a retry may sign.

        Only under the claim's `token` and only while the batch is not completed:
        otherwise nothing is written and False is returned (a late attempt, or a
        commit whose outcome was unknown but which did complete the batch). The
        reservations of an ordinary batch are released with it; an approved
        batch keeps its row and reservations and only loses this attempt's claim.
        """
        ...

    def expire_claims(self, limit: int = 100) -> int:
        """Close up to `limit` claims whose lease ran out with no retry to take them over.

        Each gets a `sign.failed` record (reason: lease expired), its request id is
        freed and its reservations released, as a take-over would; batches held for
        approvals are left to their own expiry. Returns how many were closed. Meant
        for a periodic sweep, so that a crashed attempt's sign.authorized is closed
        even when its caller never retries.
        """
        ...

    def get_batch(self, caller: str, request_id: str) -> BatchRecord | None: ...

    def append_audit(self, events: Sequence[AuditEvent]) -> None: ...

    def audit_records(self, from_seq: int = 0, limit: int = 1000) -> list[AuditRecord]: ...

    def audit_rows(self, from_seq: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """(seq, canonical encoding, leaf hash) from `from_seq`, at most `limit` rows."""
        ...

    def audit_size(self) -> int: ...

    def leaf_hashes(self, size: int) -> list[bytes]:
        """Leaf hashes of records 0..size-1 (for Merkle roots and proofs)."""
        ...

    def wait_for_audit(self, size: int, timeout: float) -> None:
        """Block until the log holds more than `size` records or `timeout` passes."""
        ...

    def wake_waiters(self) -> None:
        """Make every wait_for_audit call of this process look again now (e.g. a watcher left)."""
        ...

    def save_checkpoint(self, checkpoint: StoredCheckpoint, event: AuditEvent) -> None: ...

    def latest_checkpoint(self) -> StoredCheckpoint | None: ...

    def all_checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint, smallest size first (what auditors keep)."""
        ...

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """A lock on `name` shared by every replica of the store (set-up steps, key creation)."""
        ...

    def seal_legacy_rows(
        self, sealer: LegacySealer, event: Callable[[dict[str, list[str]]], AuditEvent]
    ) -> dict[str, list[str]]:
        """Tag every row that has none, once, in one audited transaction; the rows tagged.

        Refuses (StoreError) when any row of those tables carries a tag already: a
        store that has been sealed once only loses tags by tampering.
        """
        ...

    def guard_rows(self, guard: RowGuard) -> None:
        """Seal and check pending batches with `guard` from now on (the server sets it)."""
        ...

    def floor_budget(self, floor: BudgetFloor) -> None:
        """Check budget reservations against `floor` from now on (the server sets it)."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...
