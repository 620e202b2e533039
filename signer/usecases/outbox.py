"""Events every replica sees: the audit log, read as a transactional outbox.

Design. An event is not written anywhere of its own: it *is* the audit record
of the change it reports. Every state change already commits its audit records
in the same store transaction (signer.store.base), and the log's `seq` is
global and gapless across replicas (appends queue on the audit head's lock,
held until COMMIT, so a record becomes visible only after every record before
it). Reading the log from a sequence number therefore gives exactly the
committed events, in commit order, on any replica, after any restart: nothing
is published that did not commit, nothing that committed is lost, and there is
no second table that could drift from the log or a second sequence to keep
gapless. The price is that a watcher decodes the records of other kinds too;
the log is read in pages from where the watcher is, so that is a scan of what
it has not seen yet, nothing more.

This module maps records of event kinds to events and decides who may see
them; the gRPC stream (signer.edge.policy_services) pages through the log with it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from custos.audit.record import AuditRecord
from custos.signer.edge.auth import APPROVER, AUDITOR, OFFICER, SERVICE, Identity
from custos.signer.store.base import Store

# Audit kind -> event kind. Batch events keep the names WatchEvents always used.
BATCH_EVENTS = {
    "approval.requested": "pending",
    "approval.approved": "approved",
    "approval.refused": "rejected",  # an approver (or the service) rejected it
    "approval.rejected": "rejected",  # the policy or an integrity check rejected it
    "approval.expired": "expired",
    "sign.signed": "signed",
    "sign.refused": "refused",
}
POLICY_EVENTS = {
    "policy.proposed": "policy.proposed",
    "policy.approved": "policy.approved",
    "policy.activated": "policy.activated",
    "policy.cancelled": "policy.cancelled",
}
OFFICER_EVENTS = {
    "key.created": "key.created",
    "key.imported": "key.imported",
    "key.enabled": "key.enabled",
    "key.disabled": "key.disabled",
    "key.retired": "key.retired",
    # Key ceremonies: the officers asked to approve one learn of it here.
    "ceremony.proposed": "ceremony.proposed",
    "ceremony.approved": "ceremony.approved",
    "ceremony.executed": "ceremony.executed",
    "ceremony.failed": "ceremony.failed",
    "ceremony.cancelled": "ceremony.cancelled",
    "ceremony.expired": "ceremony.expired",
    "totp.locked": "totp.locked",
    "totp.unlocked": "totp.unlocked",
    "audit.checkpoint": "checkpoint",
}
EVENT_KINDS = {**BATCH_EVENTS, **POLICY_EVENTS, **OFFICER_EVENTS}

PAGE = 500  # audit records read per look at the store
CACHE = 4096  # approval id -> requester, remembered (they never change)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    kind: str
    audit_kind: str
    actor: str
    at_ms: int
    approval_id: str = ""
    request_id: str = ""
    requester: str = ""  # the service whose batch it is (batch events only)
    key_id: str = ""
    policy_version: int = 0
    subject: str = ""
    reason: str = ""
    checkpoint_size: int = 0


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Outbox:
    """Events from the store's log, as one identity may see them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._requesters: OrderedDict[str, str] = OrderedDict()

    def _requester(self, approval_id: str) -> str:
        """The service that asked for a held batch (its pending row is never deleted)."""
        with self._lock:
            known = self._requesters.get(approval_id)
        if known is not None:
            return known
        row = self._store.get_pending(approval_id) if approval_id else None
        requester = "" if row is None else row.caller
        if requester:
            self._remember(approval_id, requester)
        return requester

    def _remember(self, approval_id: str, requester: str) -> None:
        with self._lock:
            self._requesters[approval_id] = requester
            self._requesters.move_to_end(approval_id)
            while len(self._requesters) > CACHE:
                self._requesters.popitem(last=False)

    def event_of(self, record: AuditRecord) -> OutboxEvent | None:
        """The event a record reports, or None for records of other kinds."""
        kind = EVENT_KINDS.get(record.event.kind)
        if kind is None:
            return None
        fields = record.event.fields
        approval_id = _str(fields.get("approval_id"))
        requester = ""
        if record.event.kind in ("approval.requested", "sign.signed", "sign.refused"):
            requester = record.event.actor  # the service itself asked, signed or was refused
            if approval_id and record.event.kind == "approval.requested":
                self._remember(approval_id, requester)
        elif kind in BATCH_EVENTS.values():
            requester = self._requester(approval_id)
        reason = _str(fields.get("reason")) or _str(fields.get("message"))
        return OutboxEvent(
            seq=record.seq,
            kind=kind,
            audit_kind=record.event.kind,
            actor=record.event.actor,
            at_ms=record.ts_ms,
            approval_id=approval_id,
            request_id=_str(fields.get("request_id")),
            requester=requester,
            key_id=_str(fields.get("key_id")),
            policy_version=_int(fields.get("version")),
            subject=_str(fields.get("subject"))
            or (record.event.actor if record.event.kind == "totp.locked" else ""),
            reason=reason[:512],
            checkpoint_size=_int(fields.get("size")) if kind == "checkpoint" else 0,
        )

    def events(
        self,
        identity: Identity,
        after_seq: int,
        *,
        active: Callable[[], bool],
        wait_seconds: float = 1.0,
    ) -> Iterator[OutboxEvent]:
        """Every event after `after_seq` that `identity` may see, in order, then live.

        Never drops: the store is read from where the consumer is, so a slow
        consumer is merely behind. Ends when `active()` turns false.
        """
        allowed = visible_to(identity)
        next_seq = after_seq + 1
        while active():
            rows = self._store.audit_rows(next_seq, PAGE)
            if not rows:
                # Wakes on this process's writes at once, on other replicas' via
                # LISTEN/NOTIFY (PostgreSQL) or polling; the timeout rechecks `active`.
                self._store.wait_for_audit(next_seq, wait_seconds)
                continue
            for seq, data, _leaf in rows:
                if seq != next_seq:  # the log is gapless: anything else is corruption
                    raise RuntimeError(f"audit log gap: expected seq {next_seq}, read {seq}")
                next_seq = seq + 1
                record = AuditRecord.decode(data)
                if record.event.kind not in EVENT_KINDS:
                    continue
                event = self.event_of(record)
                if event is not None and allowed(event):
                    yield event


def visible_to(identity: Identity) -> Callable[[OutboxEvent], bool]:
    """What a role may see: services their own batches; approvers every batch and policy
    changes; officers and auditors everything (auditors read the whole log anyway)."""
    roles = identity.roles
    if roles & {OFFICER, AUDITOR}:
        return lambda event: True
    batch_kinds = frozenset(BATCH_EVENTS.values())
    policy_kinds = frozenset(POLICY_EVENTS.values())
    if APPROVER in roles:
        return lambda event: event.kind in batch_kinds or event.kind in policy_kinds
    if SERVICE in roles:
        subject = identity.subject
        return lambda event: event.kind in batch_kinds and event.requester == subject
    return lambda event: False
