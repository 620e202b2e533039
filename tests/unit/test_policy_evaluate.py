"""Policy evaluation: every predicate matches and misses, first match, default deny, batches."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custos.common.intent import ContractCall, Intent, Multisig, Transfer
from custos.policies.document import since_keys
from custos.policies.evaluate import (
    COOLING_OFF,
    EMPTY_BATCH,
    LIMIT_EXCEEDED,
    NO_RULE_MATCHED,
    RULE_DENIED,
    Allow,
    CompiledPolicy,
    Decision,
    Deny,
    EvaluationRequest,
    Quorum,
    RequireApproval,
    compile_policy,
    evaluate,
)
from custos.policies.governance import carry_entry_since
from custos.policies.schema import load_document, validate_document
from custos.policies.velocity import Spent

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)  # a Monday, noon UTC
LONG_AGO = NOW - timedelta(days=30)
USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
VENDOR = "0x5a52E96BAcdaBb82fd05763E25335261B270Efcb"
EXCHANGE = "0x28C6c06298d514Db089934071355E5743bf21d60"
STRANGER = "0x1111111111111111111111111111111111111111"
BTC_COLD = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
BTC_OWN = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
TRON_USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
TRON_EXCHANGE = "TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G"


def document(rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "governance": {"officers": ["o1", "o2"], "approvals_required": 1},
        "identity_groups": {
            "payments": ["svc-pay"],
            "approvers": [],
            "security": [],
            "external": [],
        },
        "key_groups": {"hot": ["eth-hot", "btc-hot"]},
        "address_book": {
            "groups": ["vendors", "exchanges", "cold", "blocked"],
            "entries": [
                entry("vendor", "ethereum", VENDOR, ["vendors"]),
                entry("exchange", "ethereum", EXCHANGE, ["exchanges"]),
                entry("btc-cold", "bitcoin", BTC_COLD, ["cold"]),
                entry("tron-exchange", "tron", TRON_EXCHANGE, ["exchanges"]),
            ],
        },
        "rules": rules,
    }
    doc.update(extra)
    return doc


def entry(name: str, chain: str, address: str, groups: list[str]) -> dict[str, Any]:
    return {"id": name, "chain": chain, "network": "mainnet", "address": address, "groups": groups}


def compiled(rules: list[dict[str, Any]], **extra: Any) -> CompiledPolicy:
    return compile_policy(validate_document(document(rules, **extra)), activated_at=LONG_AGO)


def eth(
    to: str = VENDOR,
    amount: int = 10**18,
    *,
    key: str = "eth-hot",
    network: str = "mainnet",
    fee_details: tuple[tuple[str, int], ...] = (("gas_limit", 21000), ("max_fee_per_gas", 10**10)),
) -> Intent:
    return Intent(
        "ethereum", network, key, "0xfrom", (Transfer(to, "native", amount),), 21000 * 10**10,
        None, fee_details,
    )  # fmt: skip


def erc20(
    token: str = USDT, to: str = VENDOR, amount: int = 5 * 10**6, method: str = "transfer"
) -> Intent:
    if method == "transfer":
        call = ContractCall(token, "transfer", (("to", to), ("amount", str(amount))))
        transfers: tuple[Transfer, ...] = (Transfer(to, token, amount),)
    elif method == "approve":
        call = ContractCall(token, "approve", (("spender", to), ("amount", str(amount))))
        transfers = ()
    else:
        call, transfers = ContractCall(token, method), ()
    return Intent(
        "ethereum", "mainnet", "eth-hot", "0xfrom", transfers, 6 * 10**14, call,
        (("gas_limit", 60000), ("max_fee_per_gas", 10**10)),
    )  # fmt: skip


def btc(
    outputs: tuple[Transfer, ...] = (Transfer(BTC_COLD, "native", 10**8),),
    fee: int = 5000,
    rate_milli: int = 25000,
) -> Intent:
    return Intent(
        "bitcoin", "mainnet", "btc-hot", BTC_OWN, outputs, fee, None,
        (("vsize", 200), ("fee_rate_sat_vb_milli", rate_milli)),
    )  # fmt: skip


COSIGNER_A, COSIGNER_B, COSIGNER_X = "02" + "a" * 64, "03" + "b" * 64, "02" + "c" * 64


def multisig_spend(
    threshold: int = 2, cosigners: tuple[str, ...] = (COSIGNER_A, COSIGNER_B), change: bool = True
) -> Intent:
    """A 2-of-3 PSBT item as the adapter describes it (its change marked by the adapter)."""
    outputs = (Transfer(BTC_COLD, "native", 10**6), Transfer(BTC_OWN, "native", 10**5, change))
    return replace(btc(outputs), multisig=(Multisig(threshold, len(cosigners) + 1, cosigners),))


def trc20(fee_limit: int = 30_000_000) -> Intent:
    call = ContractCall(TRON_USDT, "transfer", (("to", TRON_EXCHANGE), ("amount", "1000")))
    return Intent(
        "tron", "mainnet", "tron-hot", "TOwn", (Transfer(TRON_EXCHANGE, TRON_USDT, 1000),),
        fee_limit, call, (("fee_limit", fee_limit),),
    )  # fmt: skip


def judge(
    policy: CompiledPolicy,
    *items: Intent,
    caller: str = "svc-pay",
    groups: frozenset[str] = frozenset(),
    now: datetime = NOW,
    message: bool = False,
    usage: dict[str, Spent] | None = None,
) -> Decision:
    request = EvaluationRequest(caller, groups, tuple(items), now, message)
    if usage is None:
        usage = {d.key: Spent() for d in policy.limit_deltas(request)}
    return evaluate(policy, request, usage)


def allowed_by(decision: Decision) -> str | None:
    return decision.rule_id if isinstance(decision, Allow) else None


# (match predicate, intent + request that match, intent + request that miss)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("callers", {"callers": ["svc-pay"]}, {}, {"caller": "svc-other"}),
    ("caller_groups doc", {"caller_groups": ["payments"]}, {}, {"caller": "svc-other"}),
    (
        "caller_groups outside",
        {"caller_groups": ["external"]},
        {"caller": "svc-x", "groups": frozenset({"external"})},
        {"caller": "svc-x", "groups": frozenset({"other"})},
    ),
    ("keys", {"keys": ["eth-hot"]}, {}, {"item": eth(key="eth-cold")}),
    ("key_groups", {"key_groups": ["hot"]}, {}, {"item": eth(key="eth-cold")}),
    ("chains", {"chains": ["ethereum"]}, {}, {"item": btc()}),
    ("networks", {"networks": ["mainnet"]}, {}, {"item": eth(network="sepolia")}),
    ("assets native", {"assets": ["native"]}, {}, {"item": erc20()}),
    ("assets token, any case", {"assets": [USDT.lower()]}, {"item": erc20()}, {}),
    ("destinations entry", {"destinations": {"entries": ["vendor"]}}, {}, {"item": eth(EXCHANGE)}),
    ("destinations group", {"destinations": {"groups": ["vendors"]}}, {}, {"item": eth(STRANGER)}),
    (
        "destinations all",
        {"destinations": {"groups": ["cold"]}},
        {"item": btc()},
        {
            "item": btc(
                (
                    Transfer(BTC_COLD, "native", 1),
                    Transfer("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "native", 1),
                )
            )
        },
    ),
    (
        "destinations any",
        {"destinations": {"groups": ["cold"], "mode": "any"}},
        {
            "item": btc(
                (
                    Transfer(BTC_COLD, "native", 1),
                    Transfer("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "native", 1),
                )
            )
        },
        {"item": btc((Transfer("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "native", 1),))},
    ),
    (
        "amount max inclusive",
        {"assets": ["native"], "amount": {"max": 10**18}},
        {},
        {"item": eth(amount=10**18 + 1)},
    ),
    (
        "amount min inclusive",
        {"assets": ["native"], "amount": {"min": 10**18}},
        {},
        {"item": eth(amount=10**18 - 1)},
    ),
    (
        "amount ignores change",
        {"assets": ["native"], "amount": {"max": 100}},
        {
            "item": btc(
                (Transfer(BTC_COLD, "native", 100), Transfer(BTC_OWN, "native", 10**9, True))
            )
        },
        {"item": btc((Transfer(BTC_COLD, "native", 101), Transfer(BTC_OWN, "native", 1, True)))},
    ),
    (
        "contract method and address",
        {"contract": {"addresses": [USDT], "methods": ["transfer"]}},
        {"item": erc20()},
        {"item": erc20(token=STRANGER)},
    ),
    (
        "contract approve needs a contract rule",
        {"contract": {"methods": ["approve"]}, "assets": [USDT], "amount": {"max": 10**6}},
        {"item": erc20(method="approve", amount=10**6)},
        {"item": erc20(method="approve", amount=2**256 - 1)},
    ),
    (
        "contract undecoded selector",
        {"contract": {"addresses": [EXCHANGE], "methods": ["0x12345678"]}},
        {"item": erc20(token=EXCHANGE, method="0x12345678")},
        {"item": erc20(token=EXCHANGE, method="0x87654321")},
    ),
    ("fee max_fee", {"fee": {"max_fee": 5000}}, {"item": btc(fee=5000)}, {"item": btc(fee=5001)}),
    (
        "fee rate sat/vB",
        {"fee": {"max_fee_rate_sat_vb": 25}},
        {"item": btc(rate_milli=25000)},
        {"item": btc(rate_milli=25001)},
    ),
    (
        "fee max_fee_per_gas (1559)",
        {"fee": {"max_fee_per_gas": 10**10}},
        {},
        {"item": eth(fee_details=(("gas_limit", 21000), ("max_fee_per_gas", 10**10 + 1)))},
    ),
    (
        "fee max_fee_per_gas (legacy gas_price)",
        {"fee": {"max_fee_per_gas": 10**10}},
        {"item": eth(fee_details=(("gas_limit", 21000), ("gas_price", 10**10)))},
        {"item": eth(fee_details=(("gas_limit", 21000), ("gas_price", 10**10 + 1)))},
    ),
    (
        "fee gas limit",
        {"fee": {"max_gas_limit": 21000}},
        {},
        {"item": eth(fee_details=(("gas_limit", 21001), ("max_fee_per_gas", 1)))},
    ),
    (
        "fee cap without the figure",
        {"fee": {"max_fee_limit": 10**9}},
        {"item": trc20()},
        {"item": eth()},
    ),
    (
        "fee tron fee_limit",
        {"fee": {"max_fee_limit": 30_000_000}},
        {"item": trc20()},
        {"item": trc20(30_000_001)},
    ),
    (
        "multisig cosigners",
        {"multisig": {"cosigners": [COSIGNER_A, COSIGNER_B, COSIGNER_X]}},
        {"item": multisig_spend(cosigners=(COSIGNER_A, COSIGNER_X))},
        {"item": multisig_spend(cosigners=(COSIGNER_A, "03" + "d" * 64))},
    ),
    (
        "multisig only for multisig spends",
        {"multisig": {"min_threshold": 1}},
        {"item": multisig_spend(threshold=1)},
        {"item": btc()},
    ),
    (
        "multisig min_threshold",
        {"multisig": {"min_threshold": 2}},
        {"item": multisig_spend(threshold=2)},
        {"item": multisig_spend(threshold=1)},
    ),
    (
        "multisig change same_multisig",
        {"multisig": {"change": "same_multisig"}},
        {"item": multisig_spend()},
        {"item": multisig_spend(change=False)},
    ),
    ("message signing", {"message_signing": True}, {"message": True}, {}),
    ("transactions only by default", {}, {}, {"message": True}),
    (
        "time window",
        {"time": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]},
        {"now": NOW.replace(hour=16, minute=59)},
        {"now": NOW.replace(hour=17)},
    ),
]


@pytest.mark.parametrize(
    ("match", "hit", "miss"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_every_predicate_matches_and_misses(
    match: dict[str, Any], hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    policy = compiled([{"id": "the-rule", "match": match, "action": "allow"}])
    for setup, expected in ((hit, "the-rule"), (miss, None)):
        options = dict(setup)
        item = options.pop("item", eth())
        decision = judge(policy, item, **options)
        assert allowed_by(decision) == expected, (setup, decision)
        if expected is None:
            assert isinstance(decision, Deny)
            assert decision.code == NO_RULE_MATCHED


@pytest.mark.parametrize(
    ("days", "start", "end", "when", "inside"),
    [
        (["mon"], "22:00", "06:00", datetime(2024, 5, 6, 23, 30), True),  # Monday night
        (["mon"], "22:00", "06:00", datetime(2024, 5, 7, 5, 59), True),  # Tuesday early: Monday's
        (["mon"], "22:00", "06:00", datetime(2024, 5, 7, 6, 0), False),  # end is exclusive
        (["mon"], "22:00", "06:00", datetime(2024, 5, 6, 1, 0), False),  # belongs to Sunday
        (["sun"], "22:00", "06:00", datetime(2024, 5, 6, 1, 0), True),  # ... as here
        (["mon"], "22:00", "06:00", datetime(2024, 5, 6, 21, 59), False),
        (["sun"], "23:00", "01:00", datetime(2024, 5, 6, 0, 30), True),  # Sunday to Monday
        (["mon"], "00:00", "24:00", datetime(2024, 5, 6, 23, 59), True),  # whole day
        (["mon"], "00:00", "24:00", datetime(2024, 5, 7, 0, 0), False),
        (["tue", "wed"], "09:00", "17:00", datetime(2024, 5, 7, 9, 0), True),  # start inclusive
    ],
)
def test_time_windows_across_midnight_utc(
    days: list[str], start: str, end: str, when: datetime, inside: bool
) -> None:
    policy = compiled(
        [
            {
                "id": "w",
                "match": {"time": [{"days": days, "start": start, "end": end}]},
                "action": "allow",
            }
        ]
    )
    assert (allowed_by(judge(policy, eth(), now=when.replace(tzinfo=UTC))) == "w") is inside


def test_first_match_wins_and_order_matters() -> None:
    broad = {"id": "broad", "match": {"chains": ["ethereum"]}, "action": "allow"}
    narrow = {"id": "narrow", "match": {"destinations": {"groups": ["vendors"]}}, "action": "deny"}
    assert allowed_by(judge(compiled([broad, narrow]), eth())) == "broad"
    decision = judge(compiled([narrow, broad]), eth())
    assert isinstance(decision, Deny)
    assert (decision.code, decision.rule_id, decision.item_index) == (RULE_DENIED, "narrow", 0)
    # A rule that does not match is skipped, however early it is.
    assert allowed_by(judge(compiled([narrow, broad]), eth(EXCHANGE))) == "broad"


def test_many_rules_first_match_is_the_lowest_index() -> None:
    rules = [
        {
            "id": f"r{i}",
            "match": {"assets": ["native"], "amount": {"min": i, "max": i}},
            "action": "allow",
        }
        for i in range(300)
    ]
    policy = compiled([*rules, {"id": "last", "match": {}, "action": "allow"}])
    for amount in (0, 1, 150, 299):
        assert allowed_by(judge(policy, eth(amount=amount))) == f"r{amount}"
    assert allowed_by(judge(policy, eth(amount=300))) == "last"


def test_default_deny() -> None:
    decision = judge(compiled([]), eth())
    assert decision == Deny(NO_RULE_MATCHED, "item 0: no rule allows it", item_index=0)
    only_btc = compiled([{"id": "b", "match": {"chains": ["bitcoin"]}, "action": "allow"}])
    assert isinstance(judge(only_btc, eth()), Deny)


def test_deny_reason_is_the_rule_reason() -> None:
    policy = compiled(
        [{"id": "no", "match": {}, "action": "deny", "reason": "frozen during the audit"}]
    )
    decision = judge(policy, eth())
    assert isinstance(decision, Deny)
    assert decision.reason == "frozen during the audit"


def test_contract_calls_need_rules_that_name_contracts() -> None:
    open_rule = compiled([{"id": "any", "match": {}, "action": "allow"}])
    # A decoded token transfer is an ordinary transfer of the token...
    assert allowed_by(judge(open_rule, erc20())) == "any"
    # ...but an allowance or an arbitrary call is never allowed by a rule silent on contracts.
    assert isinstance(judge(open_rule, erc20(method="approve")), Deny)
    assert isinstance(judge(open_rule, erc20(method="0x12345678")), Deny)


def test_approve_spender_is_a_destination() -> None:
    rule = {
        "id": "approve-exchanges",
        "match": {"contract": {"methods": ["approve"]}, "destinations": {"groups": ["exchanges"]}},
        "action": "allow",
    }
    policy = compiled([rule])
    assert allowed_by(judge(policy, erc20(to=EXCHANGE, method="approve"))) == "approve-exchanges"
    assert isinstance(judge(policy, erc20(to=STRANGER, method="approve")), Deny)


def test_change_outputs_are_not_destinations() -> None:
    policy = compiled(
        [{"id": "cold", "match": {"destinations": {"groups": ["cold"]}}, "action": "allow"}]
    )
    sweep = btc((Transfer(BTC_COLD, "native", 10**8), Transfer(BTC_OWN, "native", 10**6, True)))
    assert allowed_by(judge(policy, sweep)) == "cold"
    consolidation = btc((Transfer(BTC_OWN, "native", 10**8, True),))
    assert isinstance(judge(policy, consolidation), Deny)  # "all" needs at least one destination


# ---- cooling-off ------------------------------------------------------------

RULES_WITH_BOOK = [
    {
        "id": "blocked",
        "match": {"destinations": {"groups": ["blocked"], "mode": "any"}},
        "action": "deny",
    },
    {"id": "vendors", "match": {"destinations": {"groups": ["vendors"]}}, "action": "allow"},
]


def test_new_entries_wait_out_the_cooling_off() -> None:
    doc = validate_document(document(RULES_WITH_BOOK))
    added = NOW - timedelta(hours=23)
    policy = compile_policy(doc, activated_at=added)
    decision = judge(policy, eth())
    assert isinstance(decision, Deny)
    assert decision.code == COOLING_OFF
    assert decision.rule_id == "vendors"
    assert decision.details == {
        "entry": "vendor",
        "usable_from": (added + timedelta(hours=24)).isoformat(),
    }
    assert allowed_by(judge(policy, eth(), now=added + timedelta(hours=24))) == "vendors"
    # An address no rule would allow is just not allowed: no cooling-off hint.
    assert judge(policy, eth(EXCHANGE)) == Deny(
        NO_RULE_MATCHED, "item 0: no rule allows it", item_index=0
    )


def test_cooling_off_is_configurable() -> None:
    raw = document(RULES_WITH_BOOK)
    raw["address_book"]["cooling_off"] = "0s"
    policy = compile_policy(validate_document(raw), activated_at=NOW)
    assert allowed_by(judge(policy, eth())) == "vendors"


def test_deny_rules_apply_to_entries_still_cooling_off() -> None:
    raw = document(RULES_WITH_BOOK)
    raw["address_book"]["entries"].append(entry("bad", "ethereum", STRANGER, ["blocked"]))
    policy = compile_policy(validate_document(raw), activated_at=NOW)
    decision = judge(policy, eth(STRANGER))
    assert isinstance(decision, Deny)
    assert (decision.code, decision.rule_id) == (RULE_DENIED, "blocked")


def test_cooling_off_survives_versions_and_restarts_for_new_memberships() -> None:
    v1 = validate_document(document(RULES_WITH_BOOK))
    t1 = NOW - timedelta(days=3)
    since = carry_entry_since({}, v1, t1)
    assert set(since) == set(since_keys(v1))
    raw = document(RULES_WITH_BOOK, version=2)
    raw["address_book"]["entries"][1]["groups"] = ["exchanges", "vendors"]  # exchange joins vendors
    v2 = validate_document(raw)
    t2 = NOW - timedelta(hours=1)
    since2 = carry_entry_since(since, v2, t2)
    policy = compile_policy(v2, activated_at=t2, entry_since=since2)
    assert allowed_by(judge(policy, eth(VENDOR))) == "vendors"  # unchanged entry kept its time
    decision = judge(policy, eth(EXCHANGE))  # new membership: its own cooling-off
    assert isinstance(decision, Deny)
    assert decision.code == COOLING_OFF
    # An address dropped from the book and added back starts over.
    empty = document([], version=3)
    empty["address_book"] = {}
    since3 = carry_entry_since(since2, validate_document(empty), t2)
    assert since3 == {}
    since4 = carry_entry_since(since3, validate_document(document(RULES_WITH_BOOK, version=4)), NOW)
    assert set(since4.values()) == {NOW}


# ---- batches ------------------------------------------------------------

APPROVAL_RULES = [
    {
        "id": "deny-stranger",
        "match": {
            "destinations": {"entries": ["exchange"]},
            "assets": ["native"],
            "amount": {"min": 10**20},
        },
        "action": "deny",
    },
    {
        "id": "big",
        "match": {"assets": ["native"], "amount": {"min": 10**19}},
        "action": "require_approval",
        "approval": {"approvals": 2, "group": "approvers", "expires_after": "4h"},
    },
    {
        "id": "exchange",
        "match": {"destinations": {"groups": ["exchanges"]}},
        "action": "require_approval",
        "approval": {"approvals": 1, "group": "security", "totp": False, "expires_after": "1h"},
    },
    {
        "id": "big-tokens",
        "match": {"assets": [USDT]},
        "action": "require_approval",
        "approval": {"approvals": 3, "group": "approvers", "totp": False},
    },
    {"id": "small", "match": {}, "action": "allow"},
]


def test_batch_allowed_only_when_every_item_is() -> None:
    policy = compiled(APPROVAL_RULES)
    decision = judge(policy, eth(amount=1), eth(amount=2))
    assert decision == Allow(("small", "small"))


def test_batch_denied_by_any_item_reports_the_first() -> None:
    policy = compiled(APPROVAL_RULES)
    decision = judge(
        policy, eth(amount=1), eth(amount=10**19), eth(EXCHANGE, 10**21), eth(EXCHANGE, 10**22)
    )
    assert isinstance(decision, Deny)
    assert (decision.item_index, decision.rule_id) == (2, "deny-stranger")
    unmatched = compiled([{"id": "eth", "match": {"chains": ["ethereum"]}, "action": "allow"}])
    decision = judge(unmatched, eth(), btc())
    assert isinstance(decision, Deny)
    assert (decision.code, decision.item_index) == (NO_RULE_MATCHED, 1)


def test_batch_approval_takes_the_strictest_requirement() -> None:
    policy = compiled(APPROVAL_RULES)
    decision = judge(policy, eth(amount=1), eth(amount=10**19), eth(EXCHANGE, 1), erc20())
    assert decision == RequireApproval(
        rule_ids=("small", "big", "exchange", "big-tokens"),
        quorum=(Quorum("approvers", 3), Quorum("security", 1)),
        totp_required=True,
        expires_after=timedelta(hours=1),
    )


def test_empty_batch_and_naive_time() -> None:
    policy = compiled(APPROVAL_RULES)
    assert judge(policy).code == EMPTY_BATCH  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="aware UTC"):
        judge(policy, eth(), now=datetime(2024, 5, 6, 12))


# ---- velocity limits within evaluation -----------------------------------------


LIMIT = {
    "id": "eth-hourly",
    "window": "1h",
    "per": ["key", "asset"],
    "scope": {"chains": ["ethereum"]},
    "max_amount": 10**19,
    "max_count": 3,
}


ETH_FEE = 21000 * 10**10  # eth()'s maximum fee, charged to the native limits with its amount


def test_batch_counts_toward_limits_as_a_whole() -> None:
    policy = compiled([{"id": "all", "match": {}, "action": "allow"}], limits=[LIMIT])
    half = 5 * 10**18 - ETH_FEE
    assert allowed_by(judge(policy, eth(amount=half), eth(amount=half))) == "all"
    decision = judge(policy, eth(amount=half), eth(amount=half + 1))
    assert isinstance(decision, Deny)
    assert (decision.code, decision.limit_id) == (LIMIT_EXCEEDED, "eth-hourly")
    assert decision.remaining == {"window_seconds": 3600, "amount": 10**19, "count": 3}
    key = policy.limit_deltas(EvaluationRequest("svc-pay", frozenset(), (eth(),), NOW))[0].key
    spent = {key: Spent(9 * 10**18, 1)}
    decision = judge(policy, eth(amount=10**18 - ETH_FEE), usage=spent)
    assert allowed_by(decision) == "all"
    assert isinstance(judge(policy, eth(amount=10**18 - ETH_FEE + 1), usage=spent), Deny)
    decision = judge(policy, eth(amount=1), eth(amount=1), eth(amount=1), usage=spent)
    assert isinstance(decision, Deny)
    assert decision.remaining == {"window_seconds": 3600, "amount": 10**18, "count": 2}
    with pytest.raises(KeyError):  # the store must read every bucket: no silent zero
        judge(policy, eth(), usage={})


def test_denials_do_not_reveal_other_callers() -> None:
    rules = [
        {"id": "pay", "match": {"callers": ["svc-secret-partner"]}, "action": "allow"},
        {"id": "mine", "match": {"callers": ["svc-pay"]}, "action": "allow"},
    ]
    per_caller = {**LIMIT, "per": ["caller", "asset"]}
    policy = compiled(rules, limits=[per_caller])
    decisions = [
        judge(policy, eth(), caller="svc-nobody"),
        judge(policy, eth(amount=10**20)),
    ]
    for decision in decisions:
        assert isinstance(decision, Deny)
        assert "svc-secret-partner" not in repr(decision)
        assert "svc-pay" not in repr(decision)


def test_message_signing_rules_and_limits() -> None:
    policy = compiled(
        [{"id": "msg", "match": {"keys": ["eth-hot"], "message_signing": True}, "action": "allow"}],
        limits=[LIMIT],
    )
    message = replace(eth(), transfers=(), fee=0, fee_details=())
    request = EvaluationRequest("svc-pay", frozenset(), (message,), NOW, message_signing=True)
    assert policy.limit_deltas(request) == ()
    assert allowed_by(judge(policy, message, message=True)) == "msg"
    assert isinstance(judge(policy, replace(message, key_id="other"), message=True), Deny)


def test_the_example_policy_behaves_as_its_comments_say() -> None:
    example = Path(__file__).resolve().parents[2] / "policies" / "examples" / "default.yaml"
    policy = compile_policy(load_document(example.read_text()), activated_at=LONG_AGO)
    payments = "CN=svc-payments,O=Custos Dev"
    treasury = "CN=svc-treasury,O=Custos Dev"

    def hot(item: Intent) -> Intent:
        return replace(item, key_id="eth-hot-1")

    usdt = hot(erc20(amount=1_000 * 10**6))
    assert allowed_by(judge(policy, usdt, caller=payments)) == "usdt-to-vendors"
    evening = judge(policy, usdt, caller=payments, now=NOW.replace(hour=21))
    assert isinstance(evening, Deny)
    assert evening.code == NO_RULE_MATCHED
    sanctioned = hot(eth("0x8589427373D6D84E98730D7795D8f6f8731FDA16"))
    decision = judge(policy, hot(eth(EXCHANGE, 10**18)), sanctioned, caller=treasury)
    assert isinstance(decision, Deny)
    assert (decision.item_index, decision.rule_id) == (1, "no-sanctioned")
    assert (
        allowed_by(judge(policy, hot(eth(EXCHANGE, 10**18)), caller=treasury))
        == "eth-to-exchanges-small"
    )
    big = judge(policy, hot(eth(EXCHANGE, 6 * 10**18)), caller=treasury)
    assert isinstance(big, RequireApproval)
    assert big.quorum == (Quorum("treasury-approvers", 2),)
    assert big.expires_after == timedelta(hours=4)
    # One batch is summed against the hot key's hourly 20 ETH: 3 x 7 ETH is over.
    over = judge(policy, *[hot(eth(EXCHANGE, 7 * 10**18))] * 3, caller=treasury)
    assert isinstance(over, Deny)
    assert (over.code, over.limit_id) == (LIMIT_EXCEEDED, "hot-eth-hourly")
