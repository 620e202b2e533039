"""Policy governance: M-of-N distinct officers, never the proposer, activation delay, staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.policies.approvals import Refused
from custos.policies.document import PolicyDocument, document_hash
from custos.policies.governance import (
    ACTIVE,
    ALREADY_APPROVED,
    APPROVED,
    CANCELLED,
    EXPIRED,
    HASH_MISMATCH,
    NOT_OFFICER,
    NOT_OPEN,
    OPEN,
    OWN_PROPOSAL,
    STALE,
    TOTP_REQUIRED,
    VERSION_NOT_NEWER,
    GovernanceRules,
    Proposal,
    approve,
    cancel,
    propose,
    ready_to_activate,
    status,
)
from custos.policies.schema import validate_document

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
OFFICERS = ["o1", "o2", "o3", "o4"]


def doc(version: int, **governance: Any) -> PolicyDocument:
    gov = {"officers": OFFICERS, "approvals_required": 2, **governance}
    return validate_document(
        {"version": version, "governance": gov, "rules": [{"id": "r", "action": "deny"}]}
    )


ACTIVE_DOC = doc(4, activation_delay="1h")
RULES = GovernanceRules.of(ACTIVE_DOC)
NEW = doc(5)
HASH = document_hash(NEW)


def proposal(rules: GovernanceRules = RULES, proposer: str = "o1") -> Proposal:
    result = propose(NEW, HASH, proposer, rules, active_version=4, now=NOW)
    assert isinstance(result, Proposal)
    return result


def vote(
    p: Proposal,
    officer: str,
    *,
    at: datetime = NOW,
    rules: GovernanceRules = RULES,
    digest: str = HASH,
    active: int | None = 4,
    totp: bool = True,
) -> Proposal | Refused:
    return approve(p, officer, digest, rules, active_version=active, now=at, totp_verified=totp)


def test_m_distinct_approvals_then_the_activation_delay() -> None:
    p = proposal()
    assert (status(p, 4, NOW), p.expires_at) == (OPEN, NOW + timedelta(days=7))
    one = vote(p, "o2")
    assert isinstance(one, Proposal)
    assert one.state == OPEN
    assert not ready_to_activate(one, 4, NOW + timedelta(days=1))
    two = vote(one, "o3", at=NOW + timedelta(minutes=10))
    assert isinstance(two, Proposal)
    assert two.state == APPROVED
    assert two.activates_at == NOW + timedelta(minutes=70)
    assert status(two, 4, NOW + timedelta(minutes=69)) == APPROVED
    assert not ready_to_activate(two, 4, NOW + timedelta(minutes=69))
    assert ready_to_activate(two, 4, NOW + timedelta(minutes=70))
    assert status(two, 4, NOW + timedelta(minutes=70)) == ACTIVE
    refused = vote(two, "o4")
    assert isinstance(refused, Refused)
    assert refused.reason == NOT_OPEN


def test_one_officer_approving_twice_counts_once() -> None:
    one = vote(proposal(), "o2")
    assert isinstance(one, Proposal)
    again = vote(one, "o2", at=NOW + timedelta(minutes=1))
    assert isinstance(again, Refused)
    assert again.reason == ALREADY_APPROVED
    assert len(one.approvals) == 1
    assert one.state == OPEN


def test_proposer_does_not_count_unless_allowed() -> None:
    refused = vote(proposal(), "o1")
    assert isinstance(refused, Refused)
    assert refused.reason == OWN_PROPOSAL
    lenient = GovernanceRules.of(doc(4, allow_self_approval=True))
    p = proposal(lenient)
    step = vote(p, "o1", rules=lenient)
    assert isinstance(step, Proposal)
    step = vote(step, "o2", rules=lenient)
    assert isinstance(step, Proposal)
    assert step.state == APPROVED
    assert step.activates_at == NOW  # no delay in that version


@pytest.mark.parametrize(
    ("officer", "kwargs", "reason"),
    [
        ("mallory", {}, NOT_OFFICER),
        ("o2", {"digest": "0" * 64}, HASH_MISMATCH),
        ("o2", {"totp": False}, TOTP_REQUIRED),
        ("o2", {"active": 5}, STALE),
        ("o2", {"at": NOW + timedelta(days=7)}, NOT_OPEN),
    ],
)
def test_approvals_refused(officer: str, kwargs: dict[str, Any], reason: str) -> None:
    result = vote(proposal(), officer, **kwargs)
    assert isinstance(result, Refused)
    assert result.reason == reason


def test_proposals() -> None:
    refused = propose(NEW, HASH, "mallory", RULES, active_version=4, now=NOW)
    assert isinstance(refused, Refused)
    assert refused.reason == NOT_OFFICER
    refused = propose(doc(4), HASH, "o1", RULES, active_version=4, now=NOW)
    assert isinstance(refused, Refused)
    assert refused.reason == VERSION_NOT_NEWER
    first = propose(
        doc(1),
        document_hash(doc(1)),
        "o1",
        GovernanceRules.of(doc(1)),
        active_version=None,
        now=NOW,
    )
    assert isinstance(first, Proposal)
    assert first.base_version is None
    assert status(proposal(), 4, NOW + timedelta(days=7)) == EXPIRED


def test_another_activation_makes_a_proposal_stale() -> None:
    one = vote(proposal(), "o2")
    two = vote(one, "o3") if isinstance(one, Proposal) else one
    assert isinstance(two, Proposal)
    assert two.state == APPROVED
    assert status(two, 5, NOW + timedelta(hours=2)) == STALE
    assert not ready_to_activate(two, 5, NOW + timedelta(hours=2))


def test_cancel_during_the_activation_delay() -> None:
    one = vote(proposal(), "o2")
    two = vote(one, "o3") if isinstance(one, Proposal) else one
    assert isinstance(two, Proposal)
    refused = cancel(two, "mallory", RULES, active_version=4, now=NOW)
    assert isinstance(refused, Refused)
    cancelled = cancel(two, "o4", RULES, active_version=4, now=NOW + timedelta(minutes=30))
    assert isinstance(cancelled, Proposal)
    assert (status(cancelled, 4, NOW + timedelta(hours=2)), cancelled.cancelled_by) == (
        CANCELLED,
        "o4",
    )
    assert not ready_to_activate(cancelled, 4, NOW + timedelta(hours=2))
    too_late = cancel(two, "o4", RULES, active_version=4, now=NOW + timedelta(hours=2))
    assert isinstance(too_late, Refused)


@settings(max_examples=200, deadline=None)
@given(
    m=st.integers(1, 3),
    voters=st.lists(st.sampled_from([*OFFICERS, "mallory"]), max_size=12),
)
def test_activation_needs_m_distinct_eligible_officers(m: int, voters: list[str]) -> None:
    rules = GovernanceRules.of(doc(4, approvals_required=m))
    p = proposal(rules)
    approved_at = None
    for i, officer in enumerate(voters):
        result = vote(p, officer, rules=rules, at=NOW + timedelta(seconds=i))
        if isinstance(result, Proposal):
            p = result
            if p.state == APPROVED and approved_at is None:
                approved_at = i
    eligible = list(dict.fromkeys(v for v in voters if v in OFFICERS and v != "o1"))
    assert (p.state == APPROVED) is (len(eligible) >= m)
    assert len(p.approvals) == min(len(eligible), m)
    assert len({a.officer for a in p.approvals}) == len(p.approvals)
    if p.state != APPROVED:
        assert not ready_to_activate(p, 4, NOW + timedelta(days=365))
