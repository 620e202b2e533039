"""Human approvals of pending requests: pure quorum rules over approval records.

A request that evaluation sent to approval is stored as a PendingRequest. An
approver's call names the request's digest and carries a TOTP code; the
caller verifies the code first (policies.totp.verify, consuming it), then
asks `record_approval`, which refuses anything the rules forbid: the
requester approving, an approver counting twice, an expired or settled
request, a digest other than the request's, an approver outside every
quorum group. The store keeps the returned value; these functions never
mutate their input.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import datetime

from custos.policies.evaluate import Quorum, RequireApproval

PENDING = "pending"
APPROVED = "approved"
REJECTED = "rejected"
EXPIRED = "expired"

OWN_REQUEST = "own_request"
ALREADY_APPROVED = "already_approved"
NOT_PENDING = "not_pending"
DIGEST_MISMATCH = "digest_mismatch"
NOT_IN_GROUP = "not_in_group"
TOTP_REQUIRED = "totp_required"

_DOMAIN = b"custos/approval-request/v1"


@dataclass(frozen=True, slots=True)
class Refused:
    """Why an approval or rejection was not recorded; `reason` is machine-readable."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One approver's approval, with the quorum groups they counted in at the time."""

    approver: str
    groups: frozenset[str]
    approved_at: datetime


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request waiting for approvals; `state` is pending, approved or rejected."""

    approval_id: str
    request_digest: bytes
    requester: str
    created_at: datetime
    expires_at: datetime
    quorum: tuple[Quorum, ...]
    totp_required: bool
    approvals: tuple[ApprovalRecord, ...] = ()
    state: str = PENDING
    settled_by: str | None = None  # who rejected it


def request_digest(caller: str, request_id: str, payload: bytes) -> bytes:
    """SHA-256 binding an approval to one caller's exact request (length-prefixed fields)."""
    h = hashlib.sha256(_DOMAIN)
    for part in (caller.encode(), request_id.encode(), payload):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def open_request(
    approval_id: str,
    digest: bytes,
    requester: str,
    requirement: RequireApproval,
    now: datetime,
) -> PendingRequest:
    """The pending record for a batch that evaluation sent to approval."""
    return PendingRequest(
        approval_id=approval_id,
        request_digest=digest,
        requester=requester,
        created_at=now,
        expires_at=now + requirement.expires_after,
        quorum=requirement.quorum,
        totp_required=requirement.totp_required,
    )


def status(pending: PendingRequest, now: datetime) -> str:
    """pending, approved, rejected, or expired (a pending request past expires_at)."""
    if pending.state == PENDING and now >= pending.expires_at:
        return EXPIRED
    return pending.state


def releases_budget(pending: PendingRequest, now: datetime) -> bool:
    """Whether the request's velocity reservation must be released (rejected or expired)."""
    return status(pending, now) in (REJECTED, EXPIRED)


def missing(pending: PendingRequest) -> tuple[Quorum, ...]:
    """Per quorum group, how many more distinct approvers are needed (only groups short)."""
    short = []
    for q in pending.quorum:
        have = sum(1 for a in pending.approvals if q.group in a.groups)
        if have < q.approvals:
            short.append(Quorum(q.group, q.approvals - have))
    return tuple(short)


def _refusal(pending: PendingRequest, digest: bytes, now: datetime) -> Refused | None:
    # Checked before anything else, so a probe with a wrong digest learns nothing more.
    if not hmac.compare_digest(digest, pending.request_digest):
        return Refused(DIGEST_MISMATCH, "the digest is not that of the pending request")
    state = status(pending, now)
    if state == EXPIRED:
        return Refused(EXPIRED, "the request expired before its quorum was met")
    if state != PENDING:
        return Refused(NOT_PENDING, f"the request is already {state}")
    return None


def record_approval(
    pending: PendingRequest,
    approver: str,
    approver_groups: frozenset[str],
    digest: bytes,
    now: datetime,
    *,
    totp_verified: bool,
) -> PendingRequest | Refused:
    """Add one approval, or say why not; the result is approved once every quorum is met.

    `approver_groups` is the approver's groups under the active policy
    (CompiledPolicy.identity_groups_of). `totp_verified` says the caller
    checked a fresh TOTP code for this approver in this call.
    """
    refused = _refusal(pending, digest, now)
    if refused is not None:
        return refused
    if approver == pending.requester:
        return Refused(OWN_REQUEST, "a requester cannot approve their own request")
    if pending.totp_required and not totp_verified:
        return Refused(TOTP_REQUIRED, "this request needs a TOTP code with each approval")
    if any(a.approver == approver for a in pending.approvals):
        return Refused(ALREADY_APPROVED, "each approver counts once")
    counted = frozenset(q.group for q in pending.quorum) & approver_groups
    if not counted:
        return Refused(NOT_IN_GROUP, "the approver is in none of the groups asked to approve")
    updated = replace(
        pending, approvals=(*pending.approvals, ApprovalRecord(approver, counted, now))
    )
    if not missing(updated):
        updated = replace(updated, state=APPROVED)
    return updated


def record_rejection(
    pending: PendingRequest,
    identity: str,
    identity_groups: frozenset[str],
    digest: bytes,
    now: datetime,
) -> PendingRequest | Refused:
    """Reject a pending request (an approver of its groups) or withdraw it (its requester)."""
    refused = _refusal(pending, digest, now)
    if refused is not None:
        return refused
    groups = frozenset(q.group for q in pending.quorum)
    if identity != pending.requester and not groups & identity_groups:
        return Refused(NOT_IN_GROUP, "only the requester or an approver may reject it")
    return replace(pending, state=REJECTED, settled_by=identity)
