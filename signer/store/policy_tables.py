"""Store rows for policy: versions, budget reservations, pending approvals, TOTP state.

Backend-neutral records and the policy part of the store contract; the
implementation, for every backend, is signer.store.sql.SqlStore. Every change
that policy makes is audited in the same transaction, and read-modify-write
steps (a TOTP check, an approval) run inside one write transaction so that two
replicas or threads cannot both use one code or both count one approval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from custos.audit.record import AuditEvent

if TYPE_CHECKING:
    # Annotations only: policies.velocity pulls in the pydantic policy models, which
    # the store's lightweight users (signer.edge.errors, hence the CLI) must not load.
    from custos.policies.velocity import Spent

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PolicyRow:
    version: int
    hash: str
    document_yaml: str
    state: str  # proposed | approved | active | superseded | cancelled
    record: str  # JSON of the governance proposal
    activated_at_ms: int | None
    # Incremented by every change of the row; with `mac`, its HSM tag
    # (signer.usecases.authenticity).
    rev: int = 1
    mac: bytes | None = None


@dataclass(frozen=True, slots=True)
class PendingRow:
    approval_id: str
    caller: str
    request_id: str
    state: str
    expires_at_ms: int
    record: str  # JSON of policies.approvals.PendingRequest and the batch summary
    request: bytes  # the SignBatchRequest, to sign once approved
    # Incremented by every change of the row; with `mac`, its HSM tag. The store
    # seals and checks these itself, through its RowGuard (signer.store.base).
    rev: int = 1
    mac: bytes | None = None


@dataclass(frozen=True, slots=True)
class PendingChange:
    """What an approval step writes: the new row, its audit events, and side effects."""

    row: PendingRow
    events: Sequence[AuditEvent]
    release_budget: bool = False
    final_result: bytes | None = None  # stored as the batch's result (rejected, expired)
    # The batch's budget judged again under the active policy's limits: its own
    # reservations are released and these checked and reserved in the same
    # transaction; a breach rolls the change back and is handed back instead.
    rebudget: Admission | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """Budget to reserve with a claim: checked and inserted in the claim's transaction."""

    windows: tuple[tuple[str, int], ...]  # (bucket, window start in ms): usage to read
    check: Callable[[Mapping[str, Spent]], Any]  # None when the budget allows, else a breach
    reservations: tuple[tuple[str, int, int], ...]  # (bucket, amount, count)
    pending: PendingRow | None = None  # set when the batch waits for approvals


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

    def get_totp(self, subject: str) -> tuple[bytes, str] | None: ...

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
