"""Builders shared by the store tests and the replica processes they spawn."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from custos.audit.record import AuditEvent, AuditRecord
from custos.policies.velocity import Spent
from custos.signer.store.base import StoreUnavailable
from custos.signer.store.policy_tables import Admission, PendingRow
from custos.signer.store.postgres import PostgresStore
from custos.signer.store.sql import Tx

T = TypeVar("T")


class Clock:
    """A settable millisecond clock."""

    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def event(kind: str = "test", actor: str = "tester", **fields: object) -> AuditEvent:
    return AuditEvent(kind, actor, dict(fields))  # type: ignore[arg-type]


def budget(
    bucket: str,
    amount: int,
    limit: int,
    *,
    start_ms: int = 0,
    pending: PendingRow | None = None,
    seen: list[Spent] | None = None,
) -> Admission:
    """Reserve `amount` (and a count of 1) in `bucket` if its window stays within `limit`."""

    def check(usage: Mapping[str, Spent]) -> object:
        spent = usage[bucket]
        if seen is not None:
            seen.append(spent)
        return None if spent.amount + amount <= limit else ("breach", bucket, spent.amount)

    return Admission(((bucket, start_ms),), check, ((bucket, amount, 1),), pending)


def pending_row(approval_id: str, caller: str, request_id: str, expires_at_ms: int) -> PendingRow:
    return PendingRow(
        approval_id, caller, request_id, "pending", expires_at_ms, '{"n": 0}', b"\x0a\x01x"
    )


CLOSING = frozenset({"sign.signed", "sign.failed", "approval.expired", "approval.refused"})


def unclosed_authorizations(records: Sequence[AuditRecord]) -> list[tuple[str, str, int]]:
    """(caller, request id, seq) of each sign.authorized not closed before the next one.

    An authorization is closed by sign.signed, sign.failed or the batch's expiry
    or rejection, for the same caller and request id. One left open at the end
    of the log is listed too: the caller decides whether a live claim explains it.
    """
    open_: dict[tuple[str, str], int] = {}
    approvals: dict[object, tuple[str, str]] = {}  # approval id -> (caller, request id)
    unclosed: list[tuple[str, str, int]] = []
    for record in records:
        request_id = record.event.fields.get("request_id")
        if not isinstance(request_id, str):
            continue
        key = (record.event.actor, request_id)
        approval_id = record.event.fields.get("approval_id")
        if record.event.kind == "approval.requested":
            approvals[approval_id] = key
        elif approval_id in approvals:
            # Officers and the sweep settle approvals: the caller is the requester.
            key = approvals[approval_id]
        if record.event.kind == "sign.authorized":
            if key in open_:
                unclosed.append((*key, open_[key]))
            open_[key] = record.seq
        elif record.event.kind in CLOSING:
            open_.pop(key, None)
    unclosed.extend((*key, seq) for key, seq in open_.items())
    return sorted(unclosed, key=lambda u: u[2])


class LosesCommitReply(PostgresStore):
    """A PostgresStore whose next write commits, then fails as a connection lost in COMMIT does.

    The caller cannot tell whether that write happened: what PostgresStore
    raises when the connection breaks while COMMIT is under way.
    """

    lose_next_commit = False

    def _transact(self, work: Callable[[Tx], T]) -> T:
        result = super()._transact(work)
        if self.lose_next_commit:
            self.lose_next_commit = False
            raise StoreUnavailable(
                "the database connection failed during COMMIT; the outcome is unknown"
            )
        return result
