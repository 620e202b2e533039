"""Key ceremony rules: quorum per kind from the policy, M others, digest-bound, final states."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from custos.policies import ceremonies as c
from custos.policies.approvals import Refused
from custos.policies.document import PolicyDocument, document_hash
from custos.policies.governance import (
    ALREADY_APPROVED,
    HASH_MISMATCH,
    NOT_OFFICER,
    NOT_OPEN,
    OWN_PROPOSAL,
    STALE,
    TOTP_REQUIRED,
)
from custos.policies.schema import PolicyValidationError, validate_document

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
    assert [c.required_approvals(plain, k) for k in c.KINDS] == [3, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
    assert c.required_approvals(doc(m=1), c.DISABLE_KEY) == 1
    chosen = doc({"create_key": 2, "disable_key": 0, "create_wallet": 1, "export_wallet": 2})
    assert [c.required_approvals(chosen, k) for k in c.KINDS] == [
        *(2, 0, 3, 3, 3, 3, 3, 3, 3, 1, 3, 2)
    ]


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
        c.UNKNOWN_KIND: ("wipe_key", {"key_id": "k1"}, "o1"),
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


def _executed(kind: str, params: dict[str, str]) -> c.Ceremony:
    proposed = c.propose("cer-9", kind, params, "o1", c.CeremonyRules.of(doc(), kind), now=NOW)
    assert isinstance(proposed, c.Ceremony)
    return c.finish(proposed, executed=True, outcome="done", now=NOW)


def test_a_backup_or_export_goes_to_its_proposer_once() -> None:
    for kind, params in (
        (c.BACKUP, {}),
        (
            c.EXPORT_KEY,
            {"key_id": "k1", "recipient_public_key": "AA", "recipient_fingerprint": "f"},
        ),
    ):
        done = _executed(kind, params)
        assert c.deliverable(done, "o1") is None
        lifetime = done.expires_at - done.proposed_at
        assert c.deliverable(done, "o1", now=NOW + lifetime - timedelta(seconds=1)) is None
        late = c.deliverable(done, "o1", now=NOW + lifetime)
        assert isinstance(late, Refused)
        assert late.reason == c.EXPIRED
        refused = c.deliverable(done, "o2")
        assert isinstance(refused, Refused)
        assert refused.reason == c.NOT_YOURS
        again = c.deliverable(c.delivered(done, "o1"), "o1")
        assert isinstance(again, Refused)
        assert again.reason == c.FETCHED
        still_open = c.propose(
            "cer-8", kind, params, "o1", c.CeremonyRules.of(doc(), kind), now=NOW
        )
        assert isinstance(still_open, c.Ceremony)
        not_yet = c.deliverable(still_open, "o1")
        assert isinstance(not_yet, Refused)
        assert not_yet.reason == NOT_OPEN


def test_each_share_holder_fetches_only_their_own_share_once() -> None:
    done = _executed(c.BACKUP_KEY_INIT, {"threshold": "2", "holders": '["o2", "o3", "o4"]'})
    done = dataclasses.replace(done, sealed=(("o2", "s2"), ("o3", "s3"), ("o4", "s4")))
    proposer = c.deliverable(done, "o1")  # proposed it, holds no share
    assert isinstance(proposer, Refused)
    assert proposer.reason == c.NOT_YOURS
    assert c.deliverable(done, "o3") is None
    handed = c.delivered(done, "o3")
    assert handed.sealed == (("o2", "s2"), ("o4", "s4"))  # the fetched share is gone
    assert handed.delivered_to == ("o3",)
    again = c.deliverable(handed, "o3")
    assert isinstance(again, Refused)
    assert again.reason == c.FETCHED
    assert c.deliverable(handed, "o2") is None
    assert c.deliverable(handed, "o2", now=NOW + timedelta(days=400)) is None  # no deadline


def test_kinds_without_a_result_have_nothing_to_fetch() -> None:
    refused = c.deliverable(_executed(c.IMPORT_KEY_INIT, {}), "o1")
    assert isinstance(refused, Refused)
    assert refused.reason == c.NOT_FETCHABLE
