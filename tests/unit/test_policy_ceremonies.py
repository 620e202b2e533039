"""Key ceremony rules: quorum per kind from the policy, M others, digest-bound, final states."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policies import ceremonies as c
from policies.approvals import Refused
from policies.document import PolicyDocument, document_hash
from policies.governance import (
    ALREADY_APPROVED,
    HASH_MISMATCH,
    NOT_OFFICER,
    NOT_OPEN,
    OWN_PROPOSAL,
    STALE,
    TOTP_REQUIRED,
)
from policies.schema import PolicyValidationError, validate_document

NOW = datetime(2026, 5, 6, 12, 0, tzinfo=UTC)
OFFICERS = ["o1", "o2", "o3", "o4"]


def doc(ceremonies: dict[str, Any] | None = None, m: int = 3, version: int = 4) -> PolicyDocument:
    data: dict[str, Any] = {
        "version": version,
        "governance": {"officers": OFFICERS, "approvals_required": m},
        "rules": [{"id": "r", "action": "deny"}],
    }
    if ceremonies is not None:
        data["ceremonies"] = ceremonies
    return validate_document(data)


def opened(kind: str = c.CREATE_KEY, quorum: dict[str, Any] | None = None) -> c.Ceremony:
    params = (
        {"key_id": "k1", "network_class": "testnet"} if kind == c.CREATE_KEY else {"key_id": "k1"}
    )
    result = c.propose("cer-1", kind, params, "o1", c.CeremonyRules.of(doc(quorum), kind), now=NOW)
    assert isinstance(result, c.Ceremony)
    return result


def approve(ceremony: c.Ceremony, officer: str, **kw: Any) -> c.Ceremony | Refused:
    args: dict[str, Any] = {"now": NOW, "totp_verified": True, **kw}
    digest = args.pop("digest", ceremony.digest)
    rules = c.CeremonyRules.of(args.pop("doc", doc()), ceremony.kind)
    return c.approve(ceremony, officer, digest, rules, **args)


def test_defaults_follow_governance_and_disabling_needs_one() -> None:
    plain = doc(m=3)
    assert [c.required_approvals(plain, k) for k in c.KINDS] == [3, 1, 3, 3, 3, 3, 3]
    assert c.required_approvals(doc(m=1), c.DISABLE_KEY) == 1
    chosen = doc({"create_key": 2, "disable_key": 0, "create_wallet": 1})
    assert [c.required_approvals(chosen, k) for k in c.KINDS] == [2, 0, 3, 3, 3, 1, 3]


def test_a_section_left_out_keeps_the_hash_of_older_versions() -> None:
    assert "ceremonies" not in doc(None).model_dump(exclude_none=True)
    assert document_hash(doc(None)) != document_hash(doc({"create_key": 1}))


def test_a_quorum_no_officer_set_can_reach_is_refused() -> None:
    with pytest.raises(PolicyValidationError) as info:
        doc({"retire_key": 4})
    assert any("ceremonies.retire_key" in e for e in info.value.errors)
    with pytest.raises(PolicyValidationError) as wallet:
        doc({"create_wallet": 4})
    assert any("ceremonies.create_wallet" in e for e in wallet.value.errors)
    doc({"retire_key": 3})  # the four officers but the proposer


def test_m_others_with_the_exact_digest_and_a_fresh_code() -> None:
    ceremony = opened()
    assert (ceremony.state, ceremony.approvals_required) == (c.OPEN, 3)
    assert c.recomputed_digest(ceremony) == ceremony.digest
    refusals = {
        OWN_PROPOSAL: approve(ceremony, "o1"),
        NOT_OFFICER: approve(ceremony, "mallory"),
        HASH_MISMATCH: approve(ceremony, "o2", digest="0" * 64),
        TOTP_REQUIRED: approve(ceremony, "o2", totp_verified=False),
        STALE: approve(ceremony, "o2", doc=doc(version=5)),
    }
    for reason, result in refusals.items():
        assert isinstance(result, Refused)
        assert result.reason == reason
    once = approve(ceremony, "o2")
    assert isinstance(once, c.Ceremony)
    twice = approve(once, "o2")
    assert isinstance(twice, Refused)
    assert twice.reason == ALREADY_APPROVED
    two = approve(once, "o3")
    assert isinstance(two, c.Ceremony)
    assert two.state == c.OPEN
    three = approve(two, "o4")
    assert isinstance(three, c.Ceremony)
    assert three.state == c.APPROVED
    late = approve(three, "o1")
    assert isinstance(late, Refused)
    assert late.reason == NOT_OPEN


@pytest.mark.parametrize(
    "field",
    [
        "ceremony_id",
        "kind",
        "params",
        "proposer",
        "proposed_at",
        "expires_at",
        "approvals_required",
        "policy_version",
    ],
)
def test_the_digest_covers_every_field(field: str) -> None:
    ceremony = opened()
    changed = {
        "ceremony_id": "cer-2",
        "kind": c.RETIRE_KEY,
        "params": (("key_id", "k2"), ("network_class", "testnet")),
        "proposer": "o2",
        "proposed_at": NOW + timedelta(milliseconds=1),
        "expires_at": NOW,
        "approvals_required": 1,
        "policy_version": 9,
    }[field]
    assert c.recomputed_digest(dataclasses.replace(ceremony, **{field: changed})) != ceremony.digest


def test_bad_proposals_are_refused() -> None:
    rules = c.CeremonyRules.of(doc(), c.CREATE_KEY)
    cases = {
        c.UNKNOWN_KIND: ("export_key", {"key_id": "k1"}, "o1"),
        c.BAD_PARAMS: (c.CREATE_KEY, {"key_id": "k1"}, "o1"),
        NOT_OFFICER: (c.CREATE_KEY, {"key_id": "k1", "network_class": "testnet"}, "x"),
    }
    for reason, (kind, params, who) in cases.items():
        result = c.propose("cer-1", kind, params, who, rules, now=NOW)
        assert isinstance(result, Refused)
        assert result.reason == reason


def test_quorum_zero_is_approved_as_proposed_and_expiry_and_cancel() -> None:
    assert opened(c.DISABLE_KEY, {"disable_key": 0}).state == c.APPROVED
    ceremony = opened(c.ENABLE_KEY)
    assert c.status(ceremony, 4, ceremony.expires_at) == c.EXPIRED
    late = approve(ceremony, "o2", now=ceremony.expires_at)
    assert isinstance(late, Refused)
    assert late.reason == NOT_OPEN
    rules = c.CeremonyRules.of(doc(), c.ENABLE_KEY)
    cancelled = c.cancel(ceremony, "o3", rules, now=NOW)
    assert isinstance(cancelled, c.Ceremony)
    assert (cancelled.state, cancelled.cancelled_by) == (c.CANCELLED, "o3")
    again = c.cancel(cancelled, "o2", rules, now=NOW)
    assert isinstance(again, Refused)
    assert isinstance(c.cancel(ceremony, "mallory", rules, now=NOW), Refused)
