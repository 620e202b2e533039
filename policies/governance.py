"""Policy versions: officers propose, M of N distinct officers approve, then it activates.

Pure rules over proposal records. M, N and the activation delay come from the
version active when the proposal was made (`GovernanceRules.of(active_doc)`);
a proposal whose base is no longer the active version is stale and cannot be
approved or activated. Each approval needs a fresh TOTP code, verified by the
caller (policies.totp.verify) before `approve`, and names the document hash,
so an officer approves exactly the bytes they reviewed.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from custos.policies.approvals import Refused
from custos.policies.document import PolicyDocument, parse_duration, since_keys

OPEN = "open"
APPROVED = "approved"  # quorum met; activates at activates_at
CANCELLED = "cancelled"
EXPIRED = "expired"
ACTIVE = "active"

NOT_OFFICER = "not_officer"
OWN_PROPOSAL = "own_proposal"
ALREADY_APPROVED = "already_approved"
HASH_MISMATCH = "hash_mismatch"
STALE = "stale"
NOT_OPEN = "not_open"
VERSION_NOT_NEWER = "version_not_newer"
TOTP_REQUIRED = "totp_required"


@dataclass(frozen=True, slots=True)
class GovernanceRules:
    """Who may approve policy changes, and how many must: from the active version."""

    officers: frozenset[str]
    approvals_required: int
    activation_delay: timedelta
    proposal_ttl: timedelta
    allow_self_approval: bool

    @classmethod
    def of(cls, doc: PolicyDocument) -> GovernanceRules:
        """The rules a document sets for changing it.

        Use the active version's document; only bootstrapping the very first
        version (an operator action, no active version yet) may use its own.
        """
        gov = doc.governance
        return cls(
            officers=frozenset(gov.officers),
            approvals_required=gov.approvals_required,
            activation_delay=parse_duration(gov.activation_delay),
            proposal_ttl=parse_duration(gov.proposal_expires_after),
            allow_self_approval=gov.allow_self_approval,
        )


@dataclass(frozen=True, slots=True)
class OfficerApproval:
    """One officer's approval of a proposal."""

    officer: str
    approved_at: datetime


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposed policy version and the approvals it has collected."""

    version: int
    document_hash: str
    base_version: int | None  # the active version when proposed; None for the first one
    proposer: str
    proposed_at: datetime
    expires_at: datetime
    approvals: tuple[OfficerApproval, ...] = ()
    state: str = OPEN
    activates_at: datetime | None = None
    cancelled_by: str | None = None


def propose(
    doc: PolicyDocument,
    document_hash: str,
    proposer: str,
    rules: GovernanceRules,
    *,
    active_version: int | None,
    now: datetime,
) -> Proposal | Refused:
    """Open a proposal for a validated document; its version must exceed the active one."""
    if proposer not in rules.officers:
        return Refused(NOT_OFFICER, "only officers may propose policy versions")
    if active_version is not None and doc.version <= active_version:
        return Refused(
            VERSION_NOT_NEWER, f"version must be greater than the active {active_version}"
        )
    return Proposal(
        version=doc.version,
        document_hash=document_hash,
        base_version=active_version,
        proposer=proposer,
        proposed_at=now,
        expires_at=now + rules.proposal_ttl,
    )


def status(proposal: Proposal, active_version: int | None, now: datetime) -> str:
    """open, approved (waiting to activate), active (due), cancelled, expired or stale."""
    if proposal.state == CANCELLED:
        return CANCELLED
    if proposal.base_version != active_version:
        return STALE
    if proposal.state == OPEN:
        return EXPIRED if now >= proposal.expires_at else OPEN
    assert proposal.activates_at is not None  # set together with APPROVED
    return ACTIVE if now >= proposal.activates_at else APPROVED


def ready_to_activate(proposal: Proposal, active_version: int | None, now: datetime) -> bool:
    """Whether the store should now make this proposal's document the active version."""
    return status(proposal, active_version, now) == ACTIVE


def admit_approval(
    approvals: tuple[OfficerApproval, ...],
    *,
    proposer: str,
    officer: str,
    digest: str,
    expected_digest: str,
    officers: frozenset[str],
    allow_self_approval: bool,
    totp_verified: bool,
    not_open: Refused | None,
    now: datetime,
) -> tuple[OfficerApproval, ...] | Refused:
    """The approvals with `officer`'s added, or why it does not count.

    Shared by every proposal officers approve (policy versions, key
    ceremonies): a fresh TOTP code, an officer, the exact digest reviewed, a
    proposal still open (`not_open`: the caller's refusal when it is not), and
    never one officer twice nor (unless allowed) the proposer.
    """
    if not totp_verified:
        return Refused(TOTP_REQUIRED, "each approval needs a fresh TOTP code")
    if officer not in officers:
        return Refused(NOT_OFFICER, "only officers of the active policy version may approve")
    if not hmac.compare_digest(digest.encode(), expected_digest.encode()):
        return Refused(HASH_MISMATCH, "the hash is not that of the proposal")
    if not_open is not None:
        return not_open
    if officer == proposer and not allow_self_approval:
        return Refused(OWN_PROPOSAL, "a proposer cannot approve their own proposal")
    if any(a.officer == officer for a in approvals):
        return Refused(ALREADY_APPROVED, "each officer counts once")
    return (*approvals, OfficerApproval(officer, now))


def approve(
    proposal: Proposal,
    officer: str,
    document_hash: str,
    rules: GovernanceRules,
    *,
    active_version: int | None,
    now: datetime,
    totp_verified: bool,
) -> Proposal | Refused:
    """Count one officer's approval; at M distinct approvals the proposal is approved.

    The quorum is never met by one officer twice, nor (unless the active
    version allows self-approval) by the proposer.
    """
    state = status(proposal, active_version, now)
    not_open = None
    if state == STALE:
        not_open = Refused(STALE, "another version became active since this proposal was made")
    elif state != OPEN:
        not_open = Refused(NOT_OPEN, f"the proposal is {state}")
    approvals = admit_approval(
        proposal.approvals,
        proposer=proposal.proposer,
        officer=officer,
        digest=document_hash,
        expected_digest=proposal.document_hash,
        officers=rules.officers,
        allow_self_approval=rules.allow_self_approval,
        totp_verified=totp_verified,
        not_open=not_open,
        now=now,
    )
    if isinstance(approvals, Refused):
        return approvals
    if len(approvals) < rules.approvals_required:
        return replace(proposal, approvals=approvals)
    return replace(
        proposal,
        approvals=approvals,
        state=APPROVED,
        activates_at=now + rules.activation_delay,
    )


def cancel(
    proposal: Proposal,
    officer: str,
    rules: GovernanceRules,
    *,
    active_version: int | None,
    now: datetime,
) -> Proposal | Refused:
    """Any officer may cancel a proposal until it activates: what an activation delay is for."""
    if officer not in rules.officers:
        return Refused(NOT_OFFICER, "only officers may cancel proposals")
    state = status(proposal, active_version, now)
    if state not in (OPEN, APPROVED):
        return Refused(NOT_OPEN, f"the proposal is {state}")
    return replace(proposal, state=CANCELLED, cancelled_by=officer)


def carry_entry_since(
    previous: Mapping[str, datetime], doc: PolicyDocument, activated_at: datetime
) -> dict[str, datetime]:
    """Cooling-off start times for a newly active document.

    Address-book memberships already in the previous active version keep their
    time; new ones start at activated_at; removed ones are dropped, so removing
    and re-adding an address starts its cooling-off again.
    """
    return {key: previous.get(key, activated_at) for key in since_keys(doc)}
