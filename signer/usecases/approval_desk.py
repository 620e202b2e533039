"""Approvals of held batches: list, approve with TOTP, reject, expire; then sign.

Each step is a read-modify-write of the pending record in one store
transaction, judged by the pure rules in policies.approvals: an approver
counts once, never the requester, never after expiry, and only for the
digest of the exact request. Rejected and expired batches give their budget
back.

The database is not trusted to authorize (DESIGN.md invariants 8 and 9): an
approved batch is proven, not believed, when an approval arrives and again
just before it is signed. The request digest is recomputed from the stored
request bytes, the approvals are recounted (each approver once, never the
requester, in a group the active policy gives them), and the batch is judged
again under the active policy with the caller's own grants. A batch the
policy now denies is rejected; one it now holds for other approvals waits for
those. Exactly one attempt signs a batch: it moves the row from approved to
signing with a fresh token, and only the holder of that token may store the
result; an approved batch not signed within `sign_within` expires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError

from custos.audit.record import AuditEvent
from custos.policies import approvals, velocity
from custos.policies.evaluate import RequireApproval
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.items import SignBatch
from custos.signer.edge.errors import (
    BudgetExceeded,
    CustosError,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from custos.signer.edge.events import EventBus
from custos.signer.edge.requests import stored_batch
from custos.signer.store.base import Store
from custos.signer.store.policy_tables import PendingChange, PendingRow
from custos.signer.usecases.admission import (
    admission,
    budget_error,
    pending_from_json,
    pending_to_json,
)
from custos.signer.usecases.clock import Clock
from custos.signer.usecases.pipeline import Rejudged, SigningPipeline
from custos.signer.usecases.policy_governor import PolicyGovernor
from custos.signer.usecases.second_factor import SecondFactor

log = logging.getLogger("custos.approvals")

SIGNING = "signing"
SIGNED = "signed"
OPEN_STATES = (approvals.PENDING, approvals.APPROVED, SIGNING)

# Refusals that do not depend on the active policy: checked before any other work.
_POLICY_FREE_REFUSALS = frozenset(
    {
        approvals.DIGEST_MISMATCH,
        approvals.EXPIRED,
        approvals.NOT_PENDING,
        approvals.OWN_REQUEST,
        approvals.ALREADY_APPROVED,
    }
)
# Errors of a fresh judgement that settle a held batch: it can never be signed as asked.
_FINAL_ERRORS = (PermissionDenied, InvalidRequest, NotFound, BudgetExceeded)


# What reading a hand-written record or request can raise.
_JUNK = (ValueError, KeyError, TypeError, AttributeError, DecodeError)


class Tampered(Exception):
    """A stored pending batch is not what its approvals were given for."""


def record_of(row: PendingRow) -> tuple[approvals.PendingRequest, dict[str, Any]]:
    raw = json.loads(row.record)
    return pending_from_json(raw["pending"]), raw


def _at(moment: datetime) -> str:
    return moment.isoformat()


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
        clock: Clock,
        sweep_seconds: float = 1.0,
        sign_within: timedelta = timedelta(minutes=10),
        signing_lease: timedelta = timedelta(minutes=2),
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._governor = governor
        self._second_factor = second_factor
        self._events = events
        self._clock = clock
        self._sweep_seconds = sweep_seconds
        self._sign_within = sign_within
        self._signing_lease = signing_lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="custos-approvals", daemon=True)

    def list_open(self) -> list[PendingRow]:
        return self._store.list_pending(OPEN_STATES)

    def get(self, approval_id: str) -> PendingRow:
        row = self._store.get_pending(approval_id)
        if row is None:
            raise NotFound(f"no pending batch {approval_id!r}")
        return row

    # -- proof --------------------------------------------------------------------

    def intact(self, row: PendingRow) -> tuple[approvals.PendingRequest, SignBatch]:
        """The pending record and the held batch, after checking they belong together.

        Raises Tampered. Nothing here trusts the row's state or its summary.
        """
        try:
            pending, _ = record_of(row)
            request = stored_batch(row.request)
        except (*_JUNK, InvalidRequest):  # junk written into the row: refuse it, whatever it is
            raise Tampered("the stored record or request does not decode") from None
        expected = approvals.request_digest(row.caller, row.request_id, row.request)
        if not hmac.compare_digest(expected, pending.request_digest):
            raise Tampered("the stored request does not hash to the digest it was approved for")
        if (
            request.request_id != row.request_id
            or pending.approval_id != row.approval_id
            or pending.requester != row.caller
        ):
            raise Tampered("the stored request, caller or approval id do not belong together")
        batch = self._store.get_batch(row.caller, row.request_id)
        if (
            batch is None
            or batch.approval_id != row.approval_id
            or not hmac.compare_digest(batch.payload_digest, request.payload_digest)
        ):
            raise Tampered("the stored request is not the one its caller's request id claimed")
        return pending, request

    def _alarm(self, row: PendingRow, problem: Tampered) -> None:
        log.error("pending batch %s refused: %s", row.approval_id, problem)
        event = AuditEvent(
            "approval.integrity_failed",
            "system",
            {"approval_id": row.approval_id, "request_id": row.request_id, "problem": str(problem)},
        )
        try:
            self._store.append_audit([event])
        except Exception:  # the alarm must not hide the refusal
            log.exception("could not audit the integrity failure of %s", row.approval_id)

    def _effective(
        self, pending: approvals.PendingRequest, held: Rejudged
    ) -> approvals.PendingRequest:
        """The request as the active policy sees it now: its quorum, its approvals recounted.

        Stored approvals count only when given before expiry by an identity other
        than the requester, once each, and in a group the active policy gives them.
        """
        decision = held.judgement.decision
        if isinstance(decision, RequireApproval):
            quorum, totp_required = decision.quorum, decision.totp_required
        else:
            quorum, totp_required = (), False
        compiled = held.judgement.policy.compiled
        asked = frozenset(q.group for q in quorum)
        seen: set[str] = set()
        counted = []
        for given in pending.approvals:
            if (
                given.approver == pending.requester
                or given.approver in seen
                or given.approved_at > pending.expires_at
            ):
                continue
            seen.add(given.approver)
            groups = asked & compiled.identity_groups_of(given.approver)
            counted.append(approvals.ApprovalRecord(given.approver, groups, given.approved_at))
        return dataclasses.replace(
            pending, quorum=quorum, totp_required=totp_required, approvals=tuple(counted)
        )

    # -- approve / reject -------------------------------------------------------------

    def approve(self, approver: str, approval_id: str, digest_hex: str, code: str) -> PendingRow:
        digest = _digest(digest_hex)
        row = self.get(approval_id)
        try:
            stored, request = self.intact(row)
        except Tampered as exc:
            self._alarm(row, exc)
            raise FailedPrecondition(f"refused (integrity): {exc}") from None
        now = self._clock()
        # What no policy change can fix is refused first, before any work or code.
        early = approvals.record_approval(
            stored, approver, frozenset({"*"}), digest, now, totp_verified=True
        )
        if isinstance(early, approvals.Refused) and early.reason in _POLICY_FREE_REFUSALS:
            raise FailedPrecondition(f"refused ({early.reason}): {early.message}")
        try:
            held = self._pipeline.rejudge(row.caller, request)
        except _FINAL_ERRORS as exc:
            return self._reject_by_policy(row, exc)
        effective = self._effective(stored, held)
        groups = held.judgement.policy.compiled.identity_groups_of(approver)
        needs_approval = bool(approvals.missing(effective))
        if needs_approval:
            # Every refusal the rules know, still before the code is checked (and used).
            trial = approvals.record_approval(
                effective, approver, groups, digest, now, totp_verified=True
            )
            if isinstance(trial, approvals.Refused):
                raise FailedPrecondition(f"refused ({trial.reason}): {trial.message}")
            if effective.totp_required and not code:
                raise InvalidRequest("totp_code: code required (this batch needs a TOTP code)")
            if code:
                self._second_factor.check(approver, code)
        verified = needs_approval and bool(code)
        policy_hash = held.judgement.policy.hash
        changed = _quorum_changed(stored, effective)

        def change(current: PendingRow) -> PendingChange | approvals.Refused:
            if current.request != row.request:
                return approvals.Refused("changed", "the stored request changed meanwhile")
            pending, raw = record_of(current)
            now_effective = self._effective(pending, held)
            if approvals.missing(now_effective):
                result = approvals.record_approval(
                    now_effective, approver, groups, digest, now, totp_verified=verified
                )
            elif approvals.status(now_effective, now) == approvals.PENDING:
                result = dataclasses.replace(now_effective, state=approvals.APPROVED)
            else:
                result = approvals.Refused(
                    approvals.NOT_PENDING, f"the request is already {current.state}"
                )
            if isinstance(result, approvals.Refused):
                return result
            events = []
            if changed:
                events.append(_requirement_event(current, result, policy_hash))
            if needs_approval:
                events.append(
                    AuditEvent(
                        "approval.given",
                        approver,
                        {
                            "approval_id": approval_id,
                            "request_id": current.request_id,
                            "request_digest": digest.hex(),
                            "totp": verified,
                            "groups": sorted(result.approvals[-1].groups),
                            "policy_version": policy_hash,
                        },
                    )
                )
            if result.state == approvals.APPROVED:
                # The quorum is met: the outbox's "approved" event, committed with it.
                events.append(
                    AuditEvent(
                        "approval.approved",
                        "system",
                        {"approval_id": approval_id, "request_id": current.request_id},
                    )
                )
            return PendingChange(_with(current, raw, result), events)

        row = self._decide(approval_id, change)
        if row.state == approvals.APPROVED:
            self._events.publish("approved", approval_id, row.request_id, row.caller)
            self.sign(approval_id)
            return self.get(approval_id)
        return row

    def reject(self, identity: str, approval_id: str, digest_hex: str, code: str) -> PendingRow:
        digest = _digest(digest_hex)
        groups = self._governor.active().compiled.identity_groups_of(identity)
        now = self._clock()
        stored, _ = record_of(self.get(approval_id))
        # A refused rejection does not use the code either.
        trial = approvals.record_rejection(stored, identity, groups, digest, now)
        if isinstance(trial, approvals.Refused):
            raise FailedPrecondition(f"refused ({trial.reason}): {trial.message}")
        if code:
            self._second_factor.check(identity, code)

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

    # -- settling without a signature ----------------------------------------------------

    def _settle(
        self,
        seen: PendingRow,
        state: str,
        status: pb.BatchStatus,
        events: list[AuditEvent],
        *,
        policy_version: str = "",
    ) -> PendingRow | None:
        """Move `seen` (unchanged since it was read) to a final unsigned state; budget back."""

        def change(current: PendingRow) -> PendingChange | None:
            if current.state != seen.state or current.record != seen.record:
                return None  # someone acted meanwhile: the next look decides again
            raw = json.loads(current.record)
            raw.pop("signing", None)
            raw["pending"] = {**raw["pending"], "state": state}
            reason = events[0].fields.get("reason", state) if events else state
            released = AuditEvent(
                "budget.released",
                "system",
                {
                    "approval_id": current.approval_id,
                    "request_id": current.request_id,
                    "reason": reason,
                },
            )
            return PendingChange(
                dataclasses.replace(current, state=state, record=json.dumps(raw, sort_keys=True)),
                [*events, released],
                release_budget=True,
                final_result=_settled(current, status, policy_version),
            )

        result = self._store.update_pending(seen.approval_id, change)
        if isinstance(result, PendingRow) and result.state == state:
            self._events.publish(state, result.approval_id, result.request_id, result.caller)
            return result
        return None

    def _reject_by_policy(self, row: PendingRow, exc: CustosError) -> PendingRow:
        policy = ""
        with contextlib.suppress(CustosError):
            policy = self._governor.active().hash
        event = AuditEvent(
            "approval.rejected",
            "system",
            {
                "approval_id": row.approval_id,
                "request_id": row.request_id,
                "reason": "policy",
                "error": type(exc).__name__,
                "message": str(exc)[:512],
                "policy_version": policy,
                **exc.details,
            },
        )
        log.info("held batch %s rejected on a fresh judgement: %s", row.approval_id, exc)
        settled = self._settle(
            row, approvals.REJECTED, pb.BATCH_STATUS_REJECTED, [event], policy_version=policy
        )
        return settled or self.get(row.approval_id)

    def _reject_tampered(self, row: PendingRow, problem: Tampered) -> None:
        self._alarm(row, problem)
        event = AuditEvent(
            "approval.rejected",
            "system",
            {"approval_id": row.approval_id, "request_id": row.request_id, "reason": "integrity"},
        )
        self._settle(row, approvals.REJECTED, pb.BATCH_STATUS_REJECTED, [event])

    def _reopen(self, row: PendingRow, effective: approvals.PendingRequest, policy: str) -> None:
        """An approved-looking batch whose approvals do not meet the quorum: pending again."""
        log.warning("approved batch %s does not meet its quorum: pending again", row.approval_id)

        def change(current: PendingRow) -> PendingChange | None:
            if current.state != row.state or current.record != row.record:
                return None
            _, raw = record_of(current)
            raw.pop("signing", None)
            reopened = dataclasses.replace(effective, state=approvals.PENDING)
            return PendingChange(
                _with(current, raw, reopened), [_requirement_event(current, reopened, policy)]
            )

        result = self._store.update_pending(row.approval_id, change)
        if isinstance(result, PendingRow) and result.state == approvals.PENDING:
            self._events.publish("pending", row.approval_id, row.request_id, row.caller)

    # -- signing ---------------------------------------------------------------------------

    def sign(self, approval_id: str) -> PendingRow | None:
        """Prove an approved batch and sign it, unless another attempt got there first.

        Returns the signed row, or None when nothing was signed by this call.
        """
        row = self._store.get_pending(approval_id)
        if row is None or row.state != approvals.APPROVED:
            return None
        try:
            stored, request = self.intact(row)
        except Tampered as exc:
            self._reject_tampered(row, exc)
            return None
        try:
            held = self._pipeline.rejudge(row.caller, request)
        except _FINAL_ERRORS as exc:
            self._reject_by_policy(row, exc)
            return None
        except CustosError as exc:
            # A disabled key, no active policy, the store or HSM down: stays approved,
            # the sweep tries again until `sign_within` runs out.
            log.warning("approved batch %s not signed yet: %s", approval_id, exc)
            return None
        effective = self._effective(stored, held)
        if approvals.missing(effective):
            self._reopen(row, effective, held.judgement.policy.hash)
            return None
        token = uuid.uuid4().hex
        now = self._clock()

        def take(current: PendingRow) -> PendingChange | None:
            # The compare-and-set: only from the very row that was proven.
            if current.state != approvals.APPROVED or current.record != row.record:
                return None
            if current.request != row.request:
                return None
            pending, raw = record_of(current)
            raw["signing"] = {"token": token, "until": _at(now + self._signing_lease)}
            event = AuditEvent(
                "approval.proven",
                "system",
                {
                    "approval_id": approval_id,
                    "request_id": current.request_id,
                    "policy_version": held.judgement.policy.hash,
                    "rules": list(held.judgement.rules),
                    "approvers": [a.approver for a in effective.approvals],
                    # What the re-judged batch reserves now (signer.usecases.budget_ledger replays
                    # it).
                    "reserved": [[d.key, str(d.amount), d.count] for d in held.judgement.deltas],
                },
            )
            signing = dataclasses.replace(pending, state=SIGNING)
            # The budget too is judged under the active policy's limits, with what
            # others spent meanwhile (invariant 9): a breach refuses the batch.
            return PendingChange(
                _with(current, raw, signing), [event], rebudget=admission(held.judgement, None)
            )

        taken = self._store.update_pending(approval_id, take)
        if isinstance(taken, velocity.Breach):
            self._reject_by_policy(row, budget_error(taken))
            return None
        if not isinstance(taken, PendingRow) or taken.state != SIGNING:
            return None  # another attempt took it (or it changed): that one decides
        try:
            response, signed_event = self._pipeline.sign_approved(held, approval_id)
        except Exception:
            log.warning("approved batch %s: signing failed, will retry", approval_id, exc_info=True)
            self._give_back(approval_id, token, "signing failed")
            return None
        result = response.SerializeToString(deterministic=True)

        def complete(current: PendingRow) -> PendingChange | None:
            pending, raw = record_of(current)
            if current.state != SIGNING or raw.get("signing", {}).get("token") != token:
                return None  # fenced: a later attempt owns the batch now
            raw.pop("signing")
            signed = dataclasses.replace(pending, state=SIGNED)
            return PendingChange(_with(current, raw, signed), [signed_event], final_result=result)

        done = self._store.update_pending(approval_id, complete)
        if not isinstance(done, PendingRow) or done.state != SIGNED:
            log.warning(
                "approved batch %s: signature discarded, another attempt owns it", approval_id
            )
            return None
        self._events.publish("signed", approval_id, done.request_id, done.caller)
        return done

    def _give_back(self, approval_id: str, token: str | None, reason: str) -> None:
        """signing -> approved (the holder failed, or its lease ran out), so it is tried again."""

        def change(current: PendingRow) -> PendingChange | None:
            pending, raw = record_of(current)
            if current.state != SIGNING:
                return None
            if token is not None and raw.get("signing", {}).get("token") != token:
                return None
            raw.pop("signing", None)
            event = AuditEvent(
                "sign.abandoned",
                "system",
                {"approval_id": approval_id, "request_id": current.request_id, "reason": reason},
            )
            back = dataclasses.replace(pending, state=approvals.APPROVED)
            return PendingChange(_with(current, raw, back), [event])

        try:
            self._store.update_pending(approval_id, change)
        except Exception:  # the lease runs out on its own and the sweep gives it back
            log.exception("could not give back batch %s", approval_id)

    # -- the sweep ----------------------------------------------------------------------------

    def sweep(self) -> None:
        """Close abandoned claims, expire overdue batches (their budget comes back) and
        sign approved ones."""
        try:
            # A crashed attempt that nobody retries still gets its sign.failed record.
            closed = self._store.expire_claims()
            if closed:
                log.info("closed %d abandoned claim(s) whose lease ran out", closed)
        except Exception:  # the store may be down: next tick
            log.exception("could not close abandoned claims")
        now = self._clock()
        for row in self._store.list_pending(OPEN_STATES):
            try:
                self._sweep_one(row, now)
            except Exception:  # one bad row must not stop the others
                log.exception("approval sweep failed on %s", row.approval_id)

    def _sweep_one(self, row: PendingRow, now: datetime) -> None:
        try:
            pending, raw = record_of(row)
        except _JUNK:
            self._alarm(row, Tampered("the stored record does not decode"))
            return
        if row.state == approvals.APPROVED:
            last = max((a.approved_at for a in pending.approvals), default=pending.created_at)
            if now >= last + self._sign_within:
                self._expire(row, "not signed in time")
            else:
                self.sign(row.approval_id)
        elif row.state == SIGNING:
            until = raw.get("signing", {}).get("until")
            if until is None or now >= datetime.fromisoformat(until):
                self._give_back(row.approval_id, None, "lease expired")
        elif approvals.releases_budget(pending, now):
            self._expire(row, "expired")

    def _expire(self, row: PendingRow, reason: str) -> None:
        event = AuditEvent(
            "approval.expired",
            "system",
            {"approval_id": row.approval_id, "request_id": row.request_id, "reason": reason},
        )
        self._settle(row, approvals.EXPIRED, pb.BATCH_STATUS_EXPIRED, [event])

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


def _quorum_changed(old: approvals.PendingRequest, new: approvals.PendingRequest) -> bool:
    return (old.quorum, old.totp_required) != (new.quorum, new.totp_required)


def _requirement_event(
    row: PendingRow, pending: approvals.PendingRequest, policy: str
) -> AuditEvent:
    return AuditEvent(
        "approval.requirement_changed",
        "system",
        {
            "approval_id": row.approval_id,
            "request_id": row.request_id,
            "policy_version": policy,
            "quorum": [f"{q.approvals} of {q.group}" for q in pending.quorum],
            "totp": pending.totp_required,
            "counted": [a.approver for a in pending.approvals],
        },
    )


def _with(row: PendingRow, raw: dict[str, Any], pending: approvals.PendingRequest) -> PendingRow:
    raw = {**raw, "pending": pending_to_json(pending)}
    return dataclasses.replace(row, state=pending.state, record=json.dumps(raw, sort_keys=True))


def _settled(row: PendingRow, status: pb.BatchStatus, policy_version: str = "") -> bytes:
    response = pb.SignBatchResponse(
        request_id=row.request_id,
        status=status,
        approval_id=row.approval_id,
        policy_version=policy_version,
    )
    return response.SerializeToString(deterministic=True)
