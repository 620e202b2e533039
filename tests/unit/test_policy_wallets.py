"""Rules and limits can name HD wallets (`wallets`) and wallet accounts (`wallet_accounts`),
and velocity limits can count per wallet (`per: [wallet]`).

The service sets Intent.wallet_id and wallet_account from the wallet's authenticated
record and the path it resolved; a caller cannot name them.
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


def _doc(rules: list[dict[str, Any]], limits: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "version": 1,
        "governance": {"officers": ["o1", "o2"], "approvals_required": 1},
        "rules": rules,
        **({"limits": limits} if limits else {}),
    }


POLICY = compile_policy(
    validate_document(
        _doc(
            [
                {
                    "id": "treasury-account-1",
                    "match": {"wallet_accounts": [{"wallet": "treasury", "account": 1}]},
                    "action": "allow",
                },
                {"id": "no-other-treasury", "match": {"wallets": ["treasury"]}, "action": "deny"},
                {
                    "id": "hot-small",
                    "match": {"wallets": ["hot"], "amount": {"max": 100}, "assets": ["native"]},
                    "action": "allow",
                },
                {"id": "plain-keys", "match": {"keys": ["k1"]}, "action": "allow"},
            ],
            [
                {
                    "id": "per-wallet",
                    "window": "1h",
                    "per": ["wallet", "asset"],
                    "scope": {"chains": ["ethereum"]},
                    "max_amount": "150",
                },
                {
                    "id": "hot-count",
                    "window": "1h",
                    "scope": {"wallets": ["hot"]},
                    "max_count": 3,
                },
            ],
        )
    ),
    activated_at=NOW - timedelta(1),
)


def _intent(wallet: str, account: int | None, amount: int, index: int = 0) -> Intent:
    key_id = f"{wallet}/m/44'/60'/{account}'/0/{index}" if wallet else "k1"
    intent = Intent("ethereum", "sepolia", key_id, "from", (Transfer("to", "native", amount),), 1)
    return dataclasses.replace(intent, wallet_id=wallet, wallet_account=account)


def _judge(*intents: Intent, spent: dict[str, Spent] | None = None) -> object:
    request = EvaluationRequest("svc", frozenset(), intents, NOW)
    usage = {d.key: (spent or {}).get(d.key, Spent(0, 0)) for d in POLICY.limit_deltas(request)}
    return POLICY.evaluate(request, usage)


@pytest.mark.parametrize(
    ("wallet", "account", "amount", "allowed"),
    [
        ("treasury", 1, 99, True),
        ("treasury", 0, 1, False),  # another account of the wallet
        ("treasury", 2, 1, False),
        ("hot", 0, 99, True),
        ("hot", 7, 99, True),  # every account of the wallet
        ("hot", 0, 101, False),
        ("cold", 0, 1, False),  # a wallet no rule names
        ("", None, 99, True),  # a plain key
    ],
)
def test_rules_match_the_wallet_and_account(
    wallet: str, account: int | None, amount: int, allowed: bool
) -> None:
    assert isinstance(_judge(_intent(wallet, account, amount)), Allow if allowed else Deny)


def test_a_plain_key_with_a_wallet_name_in_its_id_is_no_wallet_key() -> None:
    # Only the service's wallet_id counts, never what a key id looks like.
    intent = dataclasses.replace(_intent("", None, 1), key_id="treasury")
    decision = _judge(intent)
    assert isinstance(decision, Deny)  # no rule allows key "treasury"


def test_limits_count_per_wallet_across_its_addresses() -> None:
    # Two addresses of one wallet draw on one bucket; another wallet has its own.
    one, two = _intent("hot", 0, 80, index=1), _intent("hot", 3, 80, index=2)
    assert isinstance(_judge(one), Allow)
    decision = _judge(one, two)
    assert isinstance(decision, Deny)
    assert decision.limit_id == "per-wallet"
    assert isinstance(_judge(one, _intent("treasury", 1, 80)), Allow)
    request = EvaluationRequest("svc", frozenset(), (one, _intent("treasury", 1, 80)), NOW)
    buckets = sorted(d.key for d in POLICY.limit_deltas(request) if d.limit_id == "per-wallet")
    assert buckets == [
        "per-wallet|wallet=hot|asset=ethereum:sepolia:native",
        "per-wallet|wallet=treasury|asset=ethereum:sepolia:native",
    ]
    plain = EvaluationRequest("svc", frozenset(), (_intent("", None, 1),), NOW)
    (bucket,) = [d.key for d in POLICY.limit_deltas(plain) if d.limit_id == "per-wallet"]
    assert bucket == "per-wallet|wallet=key:k1|asset=ethereum:sepolia:native"


def test_a_limit_scoped_to_a_wallet_counts_only_its_keys() -> None:
    spent = {"hot-count": Spent(0, 3)}
    assert isinstance(_judge(_intent("hot", 0, 1), spent=spent), Deny)
    assert isinstance(_judge(_intent("treasury", 1, 1), spent=spent), Allow)


@pytest.mark.parametrize(
    "match",
    [
        {"wallets": []},
        {"wallets": ["Not A Wallet"]},
        {"wallet_accounts": [{"wallet": "hot"}]},
        {"wallet_accounts": [{"wallet": "hot", "account": 1001}]},
        {"wallet_accounts": [{"wallet": "hot", "account": 1, "change": 0}]},
    ],
)
def test_bad_wallet_names_are_refused_by_the_schema(match: dict[str, Any]) -> None:
    with pytest.raises(PolicyValidationError, match="wallet"):
        validate_document(_doc([{"id": "r", "match": match, "action": "allow"}]))
