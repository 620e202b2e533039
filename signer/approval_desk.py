"""Approvals of held batches: list, approve with TOTP, reject, expire; then sign.

Each step is a read-modify-write of the pending record in one store
transaction, judged by the pure rules in policies.approvals: an approver
counts once, never the requester, never after expiry, and only for the
digest of the exact request. Rejected and expired batches give their budget
back; approved ones are signed at once (or by the next sweep if the HSM is
down at that moment).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from audit.record import AuditEvent
from policies import approvals
from proto.custos.v1 import signer_pb2 as pb
from signer.admission import pending_from_json, pending_to_json
from signer.errors import CustosError, FailedPrecondition, InvalidRequest, NotFound
from signer.events import EventBus
from signer.governance import PolicyGovernor
from signer.pipeline import SigningPipeline
from signer.second_factor import SecondFactor
from signer.store.base import Store
from signer.store.policy_tables import PendingChange, PendingRow

log = logging.getLogger("custos.approvals")

OPEN_STATES = ("pending", "approved")


def record_of(row: PendingRow) -> tuple[approvals.PendingRequest, dict[str, Any]]:
    raw = json.loads(row.record)
    return pending_from_json(raw["pending"]), raw


class ApprovalDesk:
    """Where approvers decide on held batches."""

    def __init__(
        self,
        store: Store,
        pipeline: SigningPipeline,
        *,
        governor: PolicyGovernor,
        second_factor: SecondFactor,
        events: EventBus,
        clock: Callable[[], datetime],
        sweep_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._governor = governor
        self._second_factor = second_factor
        self._events = events
        self._clock = clock
        self._sweep_seconds = sweep_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="custos-approvals", daemon=True)

    def list_open(self) -> list[PendingRow]:
        return self._store.list_pending(OPEN_STATES)

    def get(self, approval_id: str) -> PendingRow:
        row = self._store.get_pending(approval_id)
        if row is None:
            raise NotFound(f"no pending batch {approval_id!r}")
        return row

    def approve(self, approver: str, approval_id: str, digest_hex: str, code: str) -> PendingRow:
        digest = _digest(digest_hex)
        pending, _ = record_of(self.get(approval_id))
        if pending.totp_required or code:
            self._second_factor.check(approver, code)
        groups = self._governor.active().compiled.identity_groups_of(approver)
        now = self._clock()

        def change(row: PendingRow) -> PendingChange | approvals.Refused:
            current, raw = record_of(row)
            result = approvals.record_approval(
                current, approver, groups, digest, now, totp_verified=bool(code)
            )
            if isinstance(result, approvals.Refused):
                return result
            events = [
                AuditEvent(
                    "approval.given",
                    approver,
                    {
                        "approval_id": approval_id,
                        "request_id": row.request_id,
                        "totp": bool(code),
                        "groups": sorted(result.approvals[-1].groups),
                    },
                )
            ]
            return PendingChange(_with(row, raw, result), events)

        row = self._decide(approval_id, change)
        if row.state == "approved":
            self._events.publish("approved", approval_id, row.request_id, row.caller)
            self._sign(row)
            return self.get(approval_id)
        return row

    def reject(self, identity: str, approval_id: str, digest_hex: str, code: str) -> PendingRow:
        digest = _digest(digest_hex)
        if code:
            self._second_factor.check(identity, code)
        groups = self._governor.active().compiled.identity_groups_of(identity)
        now = self._clock()

        def change(row: PendingRow) -> PendingChange | approvals.Refused:
            current, raw = record_of(row)
            result = approvals.record_rejection(current, identity, groups, digest, now)
            if isinstance(result, approvals.Refused):
                return result
            event = AuditEvent(
                "approval.refused",
                identity,
                {"approval_id": approval_id, "request_id": row.request_id},
            )
            released = AuditEvent(
                "budget.released",
                "system",
                {"approval_id": approval_id, "request_id": row.request_id, "reason": "rejected"},
            )
            return PendingChange(
                _with(row, raw, result),
                [event, released],
                release_budget=True,
                final_result=_settled(row, pb.BATCH_STATUS_REJECTED),
            )

        row = self._decide(approval_id, change)
        self._events.publish("rejected", approval_id, row.request_id, row.caller)
        return row

    def _decide(self, approval_id: str, change: Callable[[PendingRow], Any]) -> PendingRow:
        result = self._store.update_pending(approval_id, change)
        if result is None:
            raise NotFound(f"no pending batch {approval_id!r}")
        if isinstance(result, approvals.Refused):
            raise FailedPrecondition(f"refused ({result.reason}): {result.message}")
        assert isinstance(result, PendingRow)
        return result

    def _sign(self, row: PendingRow) -> None:
        try:
            _, raw = record_of(row)
            self._pipeline.sign_approved(
                row.caller, row.request, row.approval_id, raw["policy"], raw["rules"]
            )
        except CustosError as exc:
            # Approved stays approved: the sweep signs it once the HSM or store is back.
            log.warning("approved batch %s not signed yet: %s", row.approval_id, exc)
            return

        def change(current: PendingRow) -> PendingChange:
            pending, raw = record_of(current)
            signed = dataclasses.replace(pending, state="signed")
            return PendingChange(_with(current, raw, signed), [])

        self._store.update_pending(row.approval_id, change)

    def sweep(self) -> None:
        """Expire overdue batches (their budget comes back) and sign approved ones."""
        now = self._clock()
        for row in self._store.list_pending(OPEN_STATES):
            pending, _ = record_of(row)
            if row.state == "approved":
                self._sign(row)
            elif approvals.releases_budget(pending, now):
                self._expire(row.approval_id, now)

    def _expire(self, approval_id: str, now: datetime) -> None:
        def change(row: PendingRow) -> PendingChange | None:
            current, raw = record_of(row)
            if not approvals.releases_budget(current, now) or row.state != "pending":
                return None
            expired = dataclasses.replace(current, state="expired")
            events = [
                AuditEvent(
                    "approval.expired",
                    "system",
                    {"approval_id": approval_id, "request_id": row.request_id},
                ),
                AuditEvent(
                    "budget.released",
                    "system",
                    {"approval_id": approval_id, "request_id": row.request_id, "reason": "expired"},
                ),
            ]
            return PendingChange(
                _with(row, raw, expired),
                events,
                release_budget=True,
                final_result=_settled(row, pb.BATCH_STATUS_EXPIRED),
            )

        row = self._store.update_pending(approval_id, change)
        if isinstance(row, PendingRow) and row.state == "expired":
            self._events.publish("expired", approval_id, row.request_id, row.caller)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._sweep_seconds):
            try:
                self.sweep()
                self._governor.refresh()
            except Exception:  # the store or HSM is down: next tick
                log.warning("approval sweep failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def _digest(digest_hex: str) -> bytes:
    try:
        digest = bytes.fromhex(digest_hex)
    except ValueError:
        raise InvalidRequest("request_digest: not hex") from None
    if len(digest) != 32:
        raise InvalidRequest("request_digest: must be 32 bytes (64 hex digits)")
    return digest


def _with(row: PendingRow, raw: dict[str, Any], pending: approvals.PendingRequest) -> PendingRow:
    raw = {**raw, "pending": pending_to_json(pending)}
    return dataclasses.replace(row, state=pending.state, record=json.dumps(raw, sort_keys=True))


def _settled(row: PendingRow, status: pb.BatchStatus) -> bytes:
    response = pb.SignBatchResponse(
        request_id=row.request_id,
        status=status,
        approval_id=row.approval_id,
    )
    return response.SerializeToString(deterministic=True)
