"""Policy for Tron staking and voting: the staking match, receivers as destinations, limits."""

from __future__ import annotations

from typing import Any

import pytest

from custos.common.intent import Intent, Staking
from custos.policies.evaluate import (
    LIMIT_EXCEEDED,
    NO_RULE_MATCHED,
    RULE_DENIED,
    Deny,
    EvaluationRequest,
)
from custos.policies.schema import PolicyValidationError, validate_document
from custos.policies.velocity import Spent, charged_totals
from tests.unit.test_policy_evaluate import (
    NOW,
    TRON_EXCHANGE,
    allowed_by,
    compiled,
    document,
    entry,
    judge,
    trc20,
)

RECEIVER = "TJRabPrwbZy45sbavfcjinPJC18kjpRTv8"  # in the address book, group "energy"
STRANGER = "TLfuw4tRywtxCusvTudbjf7PbcXjfe7qrw"  # not in it
BLOCKED = "TWa5cxQFesyCQUm17usvHrVkKce6rMCV4H"  # group "blocked"
TRX = 1_000_000  # sun
BOOK = {
    "groups": ["exchanges", "energy", "blocked"],
    "entries": [
        entry("tron-exchange", "tron", TRON_EXCHANGE, ["exchanges"]),
        entry("payout", "tron", RECEIVER, ["energy"]),
        entry("blocked", "tron", BLOCKED, ["blocked"]),
    ],
}


def staking(fact: Staking, network: str = "mainnet") -> Intent:
    return Intent("tron", network, "tron-hot", "TOwn", (), 0, staking=fact)


STAKE = staking(Staking("stake", 100 * TRX, "ENERGY"))
UNSTAKE = staking(Staking("unstake", 100 * TRX, "ENERGY"))
WITHDRAW = staking(Staking("withdraw_unfrozen"))


def delegate(
    receiver: str = RECEIVER,
    amount: int = 50 * TRX,
    lock: int | None = None,
    kind: str = "delegate",
) -> Intent:
    return staking(Staking(kind, amount, "ENERGY", receiver, lock))


def vote(*witnesses: str) -> Intent:
    return staking(Staking("vote", votes=tuple((w, 10) for w in witnesses)))


def policy(rules: list[dict[str, Any]], **extra: Any) -> Any:
    return compiled(rules, address_book=BOOK, **extra)


def test_rules_without_a_staking_match_never_allow_staking() -> None:
    # An allow-everything rule predates staking: it must not start allowing it.
    p = policy([{"id": "all", "match": {}, "action": "allow"}])
    assert allowed_by(judge(p, trc20())) == "all"
    for item in (STAKE, UNSTAKE, WITHDRAW, delegate(), vote(RECEIVER)):
        decision = judge(p, item)
        assert isinstance(decision, Deny)
        assert decision.code == NO_RULE_MATCHED
    # And a staking rule allows staking only.
    p = policy([{"id": "stake", "match": {"staking": {"kinds": ["stake"]}}, "action": "allow"}])
    assert allowed_by(judge(p, STAKE)) == "stake"
    assert isinstance(judge(p, trc20()), Deny)


@pytest.mark.parametrize(
    ("match", "hit", "miss"),
    [
        ({"kinds": ["stake"]}, STAKE, UNSTAKE),
        ({"kinds": ["unstake", "withdraw_unfrozen"]}, WITHDRAW, STAKE),
        (
            {"kinds": ["stake"], "resources": ["ENERGY"]},
            STAKE,
            staking(Staking("stake", TRX, "BANDWIDTH")),
        ),
        (
            {"kinds": ["delegate"], "max_lock_period": 86400},
            delegate(lock=86400),
            delegate(lock=86401),
        ),
        # Without a lock there is no lock period to bound.
        ({"kinds": ["delegate"], "max_lock_period": 0}, delegate(), delegate(lock=1)),
        # Votes have no resource: a resources list does not keep them out.
        ({"kinds": ["vote"], "resources": ["ENERGY"]}, vote(RECEIVER), STAKE),
    ],
)
def test_staking_predicates(match: dict[str, Any], hit: Intent, miss: Intent) -> None:
    p = policy([{"id": "r", "match": {"staking": match}, "action": "allow"}])
    assert allowed_by(judge(p, hit)) == "r"
    assert isinstance(judge(p, miss), Deny)


def test_receivers_and_witnesses_are_destinations() -> None:
    p = policy(
        [
            {
                "id": "no-blocked",
                "match": {"destinations": {"groups": ["blocked"], "mode": "any"}},
                "action": "deny",
            },
            {
                "id": "lend",
                "match": {
                    "staking": {"kinds": ["delegate", "undelegate", "vote"]},
                    "destinations": {"groups": ["energy"]},
                },
                "action": "allow",
            },
        ]
    )
    assert allowed_by(judge(p, delegate())) == "lend"
    assert allowed_by(judge(p, delegate(kind="undelegate"))) == "lend"
    assert allowed_by(judge(p, vote(RECEIVER))) == "lend"
    for item in (delegate(STRANGER), vote(RECEIVER, STRANGER)):
        decision = judge(p, item)
        assert isinstance(decision, Deny)
        assert decision.code == NO_RULE_MATCHED
    # A deny rule without a staking match still refuses a blocked receiver or witness.
    for item in (delegate(BLOCKED), vote(RECEIVER, BLOCKED)):
        decision = judge(p, item)
        assert isinstance(decision, Deny)
        assert (decision.code, decision.rule_id) == (RULE_DENIED, "no-blocked")
    # No destination at all: a destination rule never allows a stake.
    assert isinstance(judge(p, STAKE), Deny)


LIMIT = {
    "id": "trx-daily",
    "window": "24h",
    "per": ["key", "asset"],
    "scope": {"chains": ["tron"], "assets": ["native"]},
    "max_amount": str(200 * TRX),
    "max_count": 100,
}


def test_stake_and_delegate_are_charged_to_the_native_limit_the_rest_is_not() -> None:
    assert charged_totals(STAKE) == {"native": 100 * TRX}
    assert charged_totals(delegate()) == {"native": 50 * TRX}
    for item in (UNSTAKE, WITHDRAW, delegate(kind="undelegate"), vote(RECEIVER)):
        assert charged_totals(item) == {"native": 0}  # counted, not charged
    p = policy(
        [
            {
                "id": "any-staking",
                "match": {"staking": {"kinds": ["stake", "delegate", "unstake"]}},
                "action": "allow",
            }
        ],
        limits=[LIMIT],
    )
    # 100 + 50 + 50 TRX fits 200 TRX; one sun more does not.
    assert allowed_by(judge(p, STAKE, delegate(), delegate())) == "any-staking"
    decision = judge(p, STAKE, delegate(), delegate(amount=50 * TRX + 1))
    assert isinstance(decision, Deny)
    assert (decision.code, decision.limit_id) == (LIMIT_EXCEEDED, "trx-daily")
    # Unstaking is free of the amount: a spent budget does not stop taking TRX back.
    request = EvaluationRequest("svc-pay", frozenset(), (UNSTAKE,), NOW)
    [delta] = p.limit_deltas(request)
    assert (delta.amount, delta.count) == (0, 1)
    spent = {delta.key: Spent(200 * TRX, 1)}
    assert allowed_by(judge(p, UNSTAKE, usage=spent)) == "any-staking"
    assert isinstance(judge(p, STAKE, usage=spent), Deny)


def test_amount_predicates_judge_the_charged_amount() -> None:
    rule = {
        "id": "small",
        "match": {
            "staking": {"kinds": ["stake"]},
            "assets": ["native"],
            "amount": {"max": str(100 * TRX)},
        },
        "action": "allow",
    }
    p = policy([rule])
    assert allowed_by(judge(p, STAKE)) == "small"
    assert isinstance(judge(p, staking(Staking("stake", 100 * TRX + 1, "ENERGY"))), Deny)


@pytest.mark.parametrize(
    ("match", "path", "words"),
    [
        (
            {"staking": {"kinds": ["stake"]}, "message_signing": True},
            "rules[0].match.staking",
            "message_signing",
        ),
        (
            {"staking": {"kinds": ["stake"]}, "contract": {"methods": ["transfer"]}},
            "rules[0].match.staking",
            "contract",
        ),
        (
            {"staking": {"kinds": ["stake"]}, "chains": ["ethereum"]},
            "rules[0].match.staking",
            "tron",
        ),
        ({"staking": {}}, "rules[0].match.staking", "kinds"),
        ({"staking": {"kinds": []}}, "rules[0].match.staking.kinds", ""),
        ({"staking": {"kinds": ["freeze"]}}, "rules[0].match.staking.kinds[0]", "freeze"),
        ({"staking": {"kinds": ["stake"], "resources": ["TRON_POWER"]}}, "resources", ""),
    ],
)
def test_bad_staking_matches_are_refused_naming_the_path(
    match: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(PolicyValidationError) as caught:
        validate_document(
            document([{"id": "r", "match": match, "action": "allow"}], address_book=BOOK)
        )
    text = "; ".join(caught.value.errors)
    assert path in text
    assert words in text


def test_approvers_and_the_audit_record_see_the_staking_fact(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from custos.proto.custos.v1 import policy_pb2
    from custos.signer.tools.cli_policy import _print_batch
    from custos.signer.usecases.admission import summarize
    from custos.signer.usecases.approval_view import _item

    locked = delegate(lock=86400)
    text = f"delegate {50 * TRX} sun ENERGY to {RECEIVER} locked 86400 blocks"
    assert summarize(locked, "tron-hot")["staking"] == text
    assert "staking" not in summarize(trc20(), "tron-hot")
    shown = _item(locked)
    assert shown.staking == text
    assert list(shown.destinations) == []  # no transfer: the receiver is in the staking line
    _print_batch(policy_pb2.PendingBatch(approval_id="a", items=[shown]), full=False)
    assert f"      staking: {text}" in capsys.readouterr().out
