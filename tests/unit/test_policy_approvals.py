"""Approvals of pending requests: no self-approval, distinct approvers, expiry, digest binding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from custos.policies.approvals import (
    ALREADY_APPROVED,
    APPROVED,
    DIGEST_MISMATCH,
    EXPIRED,
    NOT_IN_GROUP,
    NOT_PENDING,
    OWN_REQUEST,
    PENDING,
    REJECTED,
    TOTP_REQUIRED,
    PendingRequest,
    Refused,
    missing,
    open_request,
    record_approval,
    record_rejection,
    releases_budget,
    request_digest,
    status,
)
from custos.policies.evaluate import Quorum, RequireApproval

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
DIGEST = request_digest("svc-pay", "req-1", b"payload")
TREASURY = frozenset({"treasury"})


def pending(*quorum: Quorum, totp: bool = True) -> PendingRequest:
    requirement = RequireApproval(
        rule_ids=("big",),
        quorum=quorum or (Quorum("treasury", 2),),
        totp_required=totp,
        expires_after=timedelta(hours=4),
    )
    return open_request("ap-1", DIGEST, "svc-pay", requirement, NOW)


def approve(
    request: PendingRequest,
    who: str,
    groups: frozenset[str] = TREASURY,
    *,
    digest: bytes = DIGEST,
    at: datetime = NOW,
    totp: bool = True,
) -> PendingRequest | Refused:
    return record_approval(request, who, groups, digest, at, totp_verified=totp)


def ok(result: PendingRequest | Refused) -> PendingRequest:
    assert isinstance(result, PendingRequest), result
    return result


def test_quorum_reached_with_distinct_approvers() -> None:
    request = pending()
    assert (request.expires_at, status(request, NOW)) == (NOW + timedelta(hours=4), PENDING)
    once = ok(approve(request, "ann"))
    assert once.state == PENDING
    assert missing(once) == (Quorum("treasury", 1),)
    twice = ok(approve(once, "bob", at=NOW + timedelta(minutes=5)))
    assert twice.state == APPROVED
    assert missing(twice) == ()
    assert [a.approver for a in twice.approvals] == ["ann", "bob"]
    assert request.approvals == ()  # inputs are never mutated


def test_requester_cannot_approve_own_request() -> None:
    result = approve(pending(), "svc-pay")
    assert isinstance(result, Refused)
    assert result.reason == OWN_REQUEST


def test_each_approver_counts_once() -> None:
    once = ok(approve(pending(), "ann"))
    result = approve(once, "ann", at=NOW + timedelta(minutes=1))
    assert isinstance(result, Refused)
    assert result.reason == ALREADY_APPROVED
    assert missing(once) == (Quorum("treasury", 1),)


@pytest.mark.parametrize("late", [timedelta(hours=4), timedelta(hours=5)])
def test_expired_requests_cannot_be_approved(late: timedelta) -> None:
    once = ok(approve(pending(), "ann"))
    result = approve(once, "bob", at=NOW + late)
    assert isinstance(result, Refused)
    assert result.reason == EXPIRED
    assert status(once, NOW + late) == EXPIRED
    assert releases_budget(once, NOW + late)
    assert not releases_budget(once, once.expires_at - timedelta(seconds=1))


def test_approval_is_bound_to_the_request_digest() -> None:
    other = request_digest("svc-pay", "req-2", b"payload")
    result = approve(pending(), "ann", digest=other)
    assert isinstance(result, Refused)
    assert result.reason == DIGEST_MISMATCH
    # A request that is not pending any more says so only to someone with its digest.
    done = ok(approve(ok(approve(pending(), "ann")), "bob"))
    assert isinstance(r := approve(done, "cat", digest=other), Refused)
    assert r.reason == DIGEST_MISMATCH
    assert isinstance(r := approve(done, "cat"), Refused)
    assert r.reason == NOT_PENDING


def test_request_digest_separates_its_fields() -> None:
    digests = {
        request_digest("ab", "c", b""),
        request_digest("a", "bc", b""),
        request_digest("a", "b", b"c"),
        request_digest("a", "", b"bc"),
    }
    assert len(digests) == 4
    assert all(len(d) == 32 for d in digests)


def test_approvers_must_be_in_a_quorum_group_and_use_totp() -> None:
    result = approve(pending(), "eve", frozenset({"marketing"}))
    assert isinstance(result, Refused)
    assert result.reason == NOT_IN_GROUP
    result = approve(pending(), "ann", totp=False)
    assert isinstance(result, Refused)
    assert result.reason == TOTP_REQUIRED
    assert ok(approve(pending(totp=False), "ann", totp=False)).approvals[0].approver == "ann"


def test_several_groups_each_need_their_quorum() -> None:
    request = pending(Quorum("security", 1), Quorum("treasury", 2))
    both = frozenset({"treasury", "security"})
    step = ok(approve(request, "ann", both))  # counts in both groups
    assert missing(step) == (Quorum("treasury", 1),)
    step = ok(approve(step, "bob", frozenset({"treasury", "marketing"})))
    assert step.state == APPROVED
    assert step.approvals[1].groups == TREASURY  # only the groups that counted are kept
    request = pending(Quorum("security", 1), Quorum("treasury", 2))
    step = ok(approve(ok(approve(request, "ann")), "bob"))
    assert step.state == PENDING
    assert missing(step) == (Quorum("security", 1),)


def test_rejection_settles_the_request_and_releases_budget() -> None:
    once = ok(approve(pending(), "ann"))
    refused = record_rejection(once, "eve", frozenset(), DIGEST, NOW)
    assert isinstance(refused, Refused)
    assert refused.reason == NOT_IN_GROUP
    rejected = record_rejection(once, "bob", TREASURY, DIGEST, NOW)
    assert isinstance(rejected, PendingRequest)
    assert (rejected.state, rejected.settled_by) == (REJECTED, "bob")
    assert releases_budget(rejected, NOW)
    late = approve(rejected, "cat")
    assert isinstance(late, Refused)
    assert late.reason == NOT_PENDING
    withdrawn = record_rejection(pending(), "svc-pay", frozenset(), DIGEST, NOW)
    assert isinstance(withdrawn, PendingRequest)
    assert withdrawn.state == REJECTED
    wrong = record_rejection(pending(), "bob", TREASURY, b"\0" * 32, NOW)
    assert isinstance(wrong, Refused)
    assert wrong.reason == DIGEST_MISMATCH
