"""Rules and limits can match the key's network class (`network_classes`), issue 9 item 2.

The service refuses an item for a network outside its key's class before
policy runs, so the class of the item's network is the key's class.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from custos.common.intent import Intent, Transfer
from custos.policies.document import canonical_json
from custos.policies.evaluate import (
    Allow,
    CompiledPolicy,
    Decision,
    Deny,
    EvaluationRequest,
    compile_policy,
)
from custos.policies.schema import PolicyValidationError, validate_document
from custos.policies.velocity import Spent

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _doc(rules: list[dict[str, Any]], limits: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "version": 1,
        "governance": {"officers": ["o1", "o2"], "approvals_required": 1},
        "rules": rules,
        "limits": list(limits),
    }


def _compile(rules: list[dict[str, Any]], limits: list[dict[str, Any]] = ()) -> CompiledPolicy:  # type: ignore[assignment]
    return compile_policy(validate_document(_doc(rules, limits)), activated_at=NOW - timedelta(1))


def _intent(chain: str, network: str, amount: int = 10) -> Intent:
    return Intent(chain, network, "k1", "from", (Transfer("to", "native", amount),), 1)


def judge(policy: CompiledPolicy, *items: Intent, spent: int = 0) -> Decision:
    request = EvaluationRequest("svc", frozenset(), items, NOW)
    usage = {d.key: Spent(spent, 0) for d in policy.limit_deltas(request)}
    return policy.evaluate(request, usage)


TESTNETS_ONLY = _compile(
    [{"id": "tests", "match": {"network_classes": ["testnet"]}, "action": "allow"}]
)


@pytest.mark.parametrize(
    ("chain", "network", "allowed"),
    [
        ("bitcoin", "testnet", True),
        ("bitcoin", "regtest", True),
        ("ethereum", "sepolia", True),
        ("bsc", "testnet", True),
        ("tron", "nile", True),
        ("bitcoin", "mainnet", False),
        ("ethereum", "mainnet", False),
        ("bsc", "mainnet", False),
        ("tron", "mainnet", False),
    ],
)
def test_a_rule_matches_the_network_class(chain: str, network: str, allowed: bool) -> None:
    assert isinstance(judge(TESTNETS_ONLY, _intent(chain, network)), Allow) is allowed


def test_networks_and_classes_both_hold_and_limits_take_classes_too() -> None:
    policy = _compile(
        [
            {
                "id": "main-eth",
                "match": {"chains": ["ethereum"], "network_classes": ["mainnet"]},
                "action": "allow",
            }
        ],
        [
            {
                "id": "main-cap",
                "window": "1h",
                "per": ["asset"],
                "max_amount": 100,
                "scope": {"network_classes": ["mainnet"]},
            }
        ],
    )
    assert isinstance(judge(policy, _intent("ethereum", "mainnet")), Allow)
    assert isinstance(judge(policy, _intent("ethereum", "sepolia")), Deny)
    over = judge(policy, _intent("ethereum", "mainnet"), spent=95)
    assert isinstance(over, Deny)
    assert over.limit_id == "main-cap"


def test_unknown_classes_and_contradictions_are_refused() -> None:
    with pytest.raises(PolicyValidationError) as info:
        validate_document(
            _doc([{"id": "r", "match": {"network_classes": ["devnet"]}, "action": "allow"}])
        )
    assert any(e.startswith("rules[0].match.network_classes") for e in info.value.errors)
    with pytest.raises(PolicyValidationError) as info:
        validate_document(
            _doc(
                [
                    {
                        "id": "r",
                        "match": {"networks": ["sepolia"], "network_classes": ["mainnet"]},
                        "action": "allow",
                    }
                ]
            )
        )
    assert info.value.errors == (
        "rules[0].match.networks: 'sepolia' is not in the scope's network_classes",
    )


def test_documents_without_classes_keep_their_canonical_form() -> None:
    plain = canonical_json(validate_document(_doc([{"id": "r", "action": "allow"}])))
    assert b"network_classes" not in plain
