"""Lock-time bounds in the policy (issue 9 item 7): a lock too far ahead is denied by default.

The facts come from the intent (lock_time, sequences, expiration_ms); the
bound from the document's `locks` (defaults: 1 h, 6 blocks). Denied before
any rule, so no allow rule can let such a signature out.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from custos.common.intent import Intent, Transfer
from custos.policies import locks
from custos.policies.document import canonical_json
from custos.policies.evaluate import Allow, CompiledPolicy, Decision, Deny, EvaluationRequest
from custos.policies.evaluate import compile_policy as _compile
from custos.policies.schema import PolicyValidationError, validate_document
from custos.policies.velocity import Spent
from custos.signer.chains import bitcoin

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())
TIP = locks.height_upper_estimate(NOW_S)
BTC = Intent(
    "bitcoin", "mainnet", "btc-hot", "bc1qown", (Transfer("bc1qdest", "native", 10**6),), 2000
)
TRON = Intent("tron", "mainnet", "tron-hot", "TOwn", (Transfer("TDest", "native", 10**6),), 0)
ALLOW_ALL = {"id": "all", "match": {}, "action": "allow"}
DISABLED = 1 << 31
SECONDS = 1 << 22


def _doc(**extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "governance": {"officers": ["o1", "o2"], "approvals_required": 1},
        "rules": [ALLOW_ALL],
        **extra,
    }


def compile_policy(**extra: Any) -> CompiledPolicy:
    return _compile(validate_document(_doc(**extra)), activated_at=NOW - timedelta(days=1))


DEFAULT = compile_policy()


def judge(policy: CompiledPolicy, *items: Intent) -> Decision:
    request = EvaluationRequest("svc", frozenset(), items, NOW)
    return policy.evaluate(request, {d.key: Spent() for d in policy.limit_deltas(request)})


def denied_field(decision: Decision) -> str | None:
    """The field a lock_too_far denial names; None when the batch is allowed."""
    if isinstance(decision, Allow):
        return None
    assert isinstance(decision, Deny), decision
    assert decision.code == locks.LOCK_TOO_FAR, decision
    assert decision.rule_id is None  # no rule decided: the bound comes first
    assert decision.reason.startswith(f"item {decision.item_index}: {decision.details['field']}")
    return decision.details["field"]


# (intent, allowed under the defaults, the field named when denied)
DEFAULT_CASES: list[tuple[str, Intent, str | None]] = [
    ("no lock", BTC, None),
    ("time lock 1 h ahead", replace(BTC, lock_time=NOW_S + 3600), None),
    ("time lock 1 h 1 s ahead", replace(BTC, lock_time=NOW_S + 3601), "bitcoin.lock_time"),
    ("time lock in the past", replace(BTC, lock_time=NOW_S - 10**6), None),
    ("height at the tip + 6", replace(BTC, lock_time=TIP + 6), None),
    ("height at the tip + 7", replace(BTC, lock_time=TIP + 7), "bitcoin.lock_time"),
    ("height just below the time split", replace(BTC, lock_time=499_999_999), "bitcoin.lock_time"),
    ("BIP68 6 blocks", replace(BTC, sequences=(0xFFFFFFFD, 6)), None),
    ("BIP68 7 blocks", replace(BTC, sequences=(0xFFFFFFFD, 7)), "bitcoin.inputs[1].sequence"),
    ("BIP68 7 x 512 s", replace(BTC, sequences=(SECONDS | 7,)), None),
    ("BIP68 8 x 512 s", replace(BTC, sequences=(SECONDS | 8,)), "bitcoin.inputs[0].sequence"),
    ("BIP68 disabled", replace(BTC, sequences=(DISABLED | SECONDS | 0xFFFF,)), None),
    ("final sequences", replace(BTC, sequences=(0xFFFFFFFF, 0xFFFFFFFE)), None),
    ("tron expiring in 1 h", replace(TRON, expiration_ms=(NOW_S + 3600) * 1000), None),
    (
        "tron expiring in 1 h 1 s",
        replace(TRON, expiration_ms=(NOW_S + 3601) * 1000),
        "tron.expiration",
    ),
]


@pytest.mark.parametrize(
    ("intent", "field"), [pytest.param(i, f, id=name) for name, i, f in DEFAULT_CASES]
)
def test_default_bounds_refuse_locks_too_far_ahead_even_under_an_allow_all_rule(
    intent: Intent, field: str | None
) -> None:
    assert denied_field(judge(DEFAULT, intent)) == field


def test_the_bounds_are_the_documents() -> None:
    tight = compile_policy(locks={"max_ahead": "10m", "max_ahead_blocks": 0})
    loose = compile_policy(locks={"max_ahead": "12h", "max_ahead_blocks": 72})
    far = replace(BTC, lock_time=NOW_S + 3 * 3600)
    assert denied_field(judge(tight, replace(BTC, lock_time=NOW_S + 601))) == "bitcoin.lock_time"
    assert denied_field(judge(tight, replace(BTC, lock_time=NOW_S + 600))) is None
    assert denied_field(judge(tight, replace(BTC, lock_time=TIP + 1))) == "bitcoin.lock_time"
    assert denied_field(judge(tight, replace(BTC, lock_time=TIP))) is None
    assert denied_field(judge(DEFAULT, far)) == "bitcoin.lock_time"
    assert denied_field(judge(loose, far)) is None
    assert denied_field(judge(loose, replace(BTC, sequences=(72,)))) is None
    assert denied_field(judge(loose, replace(BTC, sequences=(73,)))) == "bitcoin.inputs[0].sequence"
    # Only locks.max_ahead given: the block bound keeps its default.
    partial = compile_policy(locks={"max_ahead": "10m"})
    assert denied_field(judge(partial, replace(BTC, lock_time=TIP + 7))) == "bitcoin.lock_time"


def test_the_first_item_too_far_ahead_denies_the_batch_and_is_named() -> None:
    decision = judge(DEFAULT, BTC, replace(TRON, expiration_ms=(NOW_S + 7200) * 1000))
    assert isinstance(decision, Deny)
    assert decision.item_index == 1
    assert decision.reason.startswith("item 1: tron.expiration: expiration ")
    assert "locks.max_ahead = 1h" in decision.reason


def test_a_document_without_locks_keeps_its_canonical_form() -> None:
    # Versions stored before `locks` existed must keep their hash.
    assert b"locks" not in canonical_json(validate_document(_doc()))
    given = canonical_json(validate_document(_doc(locks={})))
    assert b'"locks":{"max_ahead":"1h","max_ahead_blocks":6}' in given


@pytest.mark.parametrize(
    ("locks_value", "path"),
    [
        ({"max_ahead": "soon"}, "locks.max_ahead"),
        ({"max_ahead_blocks": -1}, "locks.max_ahead_blocks"),
        ({"max_ahead_blocks": "6"}, "locks.max_ahead_blocks"),
        ({"max_ahead_blocks": 52_561}, "locks.max_ahead_blocks"),
        ({"max_behind": "1h"}, "locks"),
        ("1h", "locks"),
    ],
)
def test_bad_bounds_are_refused_naming_the_field(locks_value: object, path: str) -> None:
    with pytest.raises(PolicyValidationError) as info:
        validate_document(_doc(locks=locks_value))
    assert any(line.startswith(path) for line in info.value.errors), info.value.errors


@pytest.mark.parametrize(
    "at", [0, bitcoin._HEIGHT_ANCHOR[1] - 1, bitcoin._HEIGHT_ANCHOR[1] + 539, NOW_S, 4_102_444_800]
)
def test_policy_and_the_bitcoin_adapter_agree_on_heights_and_fields(at: int) -> None:
    assert locks.height_upper_estimate(at) == bitcoin._height_upper_estimate(at)
    assert locks.HEIGHT_ANCHOR == bitcoin._HEIGHT_ANCHOR
    assert locks.ESTIMATE_BLOCK_SECONDS == bitcoin._ESTIMATE_BLOCK_SECONDS
    assert locks.LOCKTIME_THRESHOLD == bitcoin.LOCKTIME_THRESHOLD
    assert (locks.SEQ_DISABLE, locks.SEQ_TYPE_SECONDS, locks.SEQ_MASK) == (
        bitcoin._SEQ_DISABLE,
        bitcoin._SEQ_TYPE_SECONDS,
        bitcoin._SEQ_MASK,
    )
    assert locks.SEQ_GRANULARITY_S == bitcoin._SEQ_GRANULARITY_S
