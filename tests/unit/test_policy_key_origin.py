"""Rules can match where the item's key came from (`key_origins`): generated in the HSM or imported.

The service sets Intent.key_origin from the key's authenticated record; a
caller cannot name it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from custos.common.intent import Intent, Transfer
from custos.policies.evaluate import Allow, Deny, EvaluationRequest, compile_policy
from custos.policies.schema import PolicyValidationError, validate_document
from custos.policies.velocity import Spent

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _doc(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "governance": {"officers": ["o1", "o2"], "approvals_required": 1},
        "rules": rules,
    }


POLICY = compile_policy(
    validate_document(
        _doc(
            [
                {
                    "id": "imported-small",
                    "match": {
                        "key_origins": ["imported"],
                        "amount": {"max": 100},
                        "assets": ["native"],
                    },
                    "action": "allow",
                },
                {
                    "id": "no-other-imported",
                    "match": {"key_origins": ["imported"]},
                    "action": "deny",
                },
                {"id": "generated", "match": {"key_origins": ["generated"]}, "action": "allow"},
            ]
        )
    ),
    activated_at=NOW - timedelta(1),
)


def _judge(origin: str, amount: int) -> object:
    intent = Intent("ethereum", "sepolia", "k1", "from", (Transfer("to", "native", amount),), 1)
    request = EvaluationRequest(
        "svc", frozenset(), (dataclasses.replace(intent, key_origin=origin),), NOW
    )
    usage = {d.key: Spent(0, 0) for d in POLICY.limit_deltas(request)}
    return POLICY.evaluate(request, usage)


@pytest.mark.parametrize(
    ("origin", "amount", "allowed"),
    [
        ("imported", 50, True),
        ("imported", 500, False),
        ("generated", 50, True),
        ("generated", 500, True),
    ],
)
def test_a_rule_matches_the_key_origin(origin: str, amount: int, allowed: bool) -> None:
    decision = _judge(origin, amount)
    assert isinstance(decision, Allow if allowed else Deny)


def test_an_unknown_origin_is_refused_by_the_schema() -> None:
    with pytest.raises(PolicyValidationError, match="key_origins"):
        validate_document(
            _doc([{"id": "r", "match": {"key_origins": ["minted"]}, "action": "allow"}])
        )
    with pytest.raises(PolicyValidationError, match="key_origins"):
        validate_document(_doc([{"id": "r", "match": {"key_origins": []}, "action": "allow"}]))
