"""Builders shared by the store tests and the replica processes they spawn."""

from __future__ import annotations

from collections.abc import Mapping

from audit.record import AuditEvent
from policies.velocity import Spent
from signer.store.policy_tables import Admission, PendingRow


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
