"""Issue 9's policy semantics, rule by rule: unknown amounts, allowances, fees, accounts.

Intents come from the real EVM adapter where the point is what it decodes
(calldata encoded by eth-abi, a second implementation); Bitcoin address twins
come from python-bitcointx.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bitcointx import ChainParams
from bitcointx.core.script import CScript
from bitcointx.wallet import (
    P2PKHCoinAddress,
    P2SHCoinAddress,
    P2TRCoinAddress,
    P2WPKHCoinAddress,
    P2WSHCoinAddress,
)
from eth_abi.abi import encode as abi_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.common.intent import ContractCall, Intent, Transfer
from custos.policies.accounts import account_id, account_ids
from custos.policies.evaluate import (
    COOLING_OFF,
    LIMIT_EXCEEDED,
    NO_RULE_MATCHED,
    RULE_DENIED,
    Allow,
    CompiledPolicy,
    Decision,
    Deny,
    EvaluationRequest,
    compile_policy,
)
from custos.policies.schema import PolicyValidationError, validate_document
from custos.policies.velocity import Spent, charged_totals
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.base import InvalidField
from custos.signer.chains.evm import EvmAdapter
from custos.signer.edge import requests as edge
from tests.support import LocalKey

NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=30)
KEY = LocalKey(bytes([9] * 32), "eth-hot")
TOKEN = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
VICTIM = "0x2222222222222222222222222222222222222222"
ATTACKER = "0x3333333333333333333333333333333333333333"
DENIED_EVM = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
KEY_HASH = bytes(range(20))
OTHER_HASH = bytes(range(1, 21))
GAS, FEE_PER_GAS = 100_000, 10**10
FEE = GAS * FEE_PER_GAS


def _twins(key_hash: bytes, chain: str = "bitcoin/mainnet") -> dict[str, str]:
    with ChainParams(chain):
        return {
            "p2wpkh": str(P2WPKHCoinAddress.from_bytes(key_hash)),
            "p2pkh": str(P2PKHCoinAddress.from_bytes(key_hash)),
            "p2sh-p2wpkh": str(P2SHCoinAddress.from_redeemScript(CScript(b"\x00\x14" + key_hash))),
        }


MAIN, TEST = _twins(KEY_HASH), _twins(KEY_HASH, "bitcoin/testnet")


def evm(data: str = "", *, to: str = TOKEN, value: int = 0, chain_id: int = 1) -> Intent:
    tx = pb.EvmTransaction(
        chain_id=chain_id,
        type=pb.EVM_TX_TYPE_EIP1559,
        to=to,
        value=str(value),
        data=data,
        gas_limit=GAS,
        max_fee_per_gas=str(FEE_PER_GAS),
        max_priority_fee_per_gas="1",
    )
    return EvmAdapter().prepare(edge.transaction(tx), KEY.info).intent


def call(signature: str, *args: Any) -> str:
    from eth_utils.abi import function_signature_to_4byte_selector

    types = signature[signature.index("(") + 1 : -1].split(",")
    return "0x" + (function_signature_to_4byte_selector(signature) + abi_encode(types, args)).hex()


def btc(to: str, amount: int = 10**6, fee: int = 2000, network: str = "mainnet") -> Intent:
    return Intent(
        "bitcoin", network, "btc-hot", MAIN["p2wpkh"], (Transfer(to, "native", amount),), fee,
        None, (("vsize", 200), ("fee_rate_sat_vb_milli", 10_000)),
    )  # fmt: skip


def policy(
    rules: list[dict[str, Any]],
    entries: list[dict[str, Any]] = (),  # type: ignore[assignment]
    limits: list[dict[str, Any]] = (),  # type: ignore[assignment]
    cooling_off: str = "24h",
) -> CompiledPolicy:
    doc = {
        "version": 1,
        "governance": {"officers": ["o1", "o2"], "approvals_required": 1},
        "address_book": {
            "cooling_off": cooling_off,
            "groups": ["ok", "denied"],
            "entries": list(entries),
        },
        "rules": rules,
        "limits": list(limits),
    }
    return compile_policy(validate_document(doc), activated_at=LONG_AGO)


def entry(name: str, chain: str, address: str, group: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": name,
        "chain": chain,
        "network": extra.pop("network", "mainnet"),
        "address": address,
        "groups": [group],
        **extra,
    }


def judge(
    compiled: CompiledPolicy, *items: Intent, usage: dict[str, Spent] | None = None
) -> Decision:
    request = EvaluationRequest("svc", frozenset(), items, NOW)
    if usage is None:
        usage = {d.key: Spent() for d in compiled.limit_deltas(request)}
    return compiled.evaluate(request, usage)


def rule_of(decision: Decision) -> str:
    if isinstance(decision, Deny):
        return f"deny:{decision.rule_id or decision.code}"
    assert isinstance(decision, Allow)
    return decision.rule_id


ALLOW_ALL = {"id": "all", "match": {}, "action": "allow"}


# ---- the adapter's facts --------------------------------------------------------


def test_transfer_from_is_decoded_into_a_known_transfer_to_its_recipient() -> None:
    intent = evm(call("transferFrom(address,address,uint256)", VICTIM, ATTACKER, 10**12))
    assert intent.contract_call is not None
    assert intent.contract_call.method == "transferFrom"
    assert intent.contract_call.decoded
    assert dict(intent.contract_call.args) == {
        "from": VICTIM,
        "to": ATTACKER,
        "amount": str(10**12),
    }
    assert intent.transfers == (Transfer(ATTACKER, TOKEN, 10**12),)


@pytest.mark.parametrize(
    "data",
    [
        call("transferFrom(address,address,uint256)", VICTIM, ATTACKER, 1)[:-2],
        call("transferFrom(address,address,uint256)", VICTIM, ATTACKER, 1) + "00",
        "0x23b872dd" + "00" * 11 + "01" + call("transfer(address,uint256)", VICTIM, 1)[10 + 24 :]
        + "00" * 32,
    ],
)  # fmt: skip
def test_transfer_from_calldata_a_lenient_decoder_would_misread_is_refused(data: str) -> None:
    with pytest.raises(InvalidField) as info:
        evm(data)
    assert info.value.field == "evm.data"


def test_increase_allowance_is_an_allowance_and_other_calls_are_undecoded() -> None:
    more = evm(call("increaseAllowance(address,uint256)", ATTACKER, 77))
    assert more.contract_call == ContractCall(
        TOKEN, "increaseAllowance", (("spender", ATTACKER), ("amount", "77"))
    )
    mint = evm(call("mint(address,uint256)", ATTACKER, 10**30))
    assert mint.contract_call is not None
    assert mint.contract_call.method == "0x40c10f19"
    assert not mint.contract_call.decoded
    assert mint.transfers == ()


# ---- unknown means no -----------------------------------------------------------


def test_an_amount_rule_never_matches_an_undecoded_call() -> None:
    rules = [
        {
            "id": "capped",
            "match": {
                "assets": [TOKEN],
                "contract": {"addresses": [TOKEN], "methods": ["0x40c10f19"]},
                "amount": {"max": 10**6},
            },
            "action": "allow",
        },
    ]
    mint = evm(call("mint(address,uint256)", ATTACKER, 10**30))
    decision = judge(policy(rules), mint)
    assert isinstance(decision, Deny)
    assert decision.code == NO_RULE_MATCHED
    # Not even an amount deny rule: unknown is not 0 and not "large" either.
    deny_big = {
        "id": "deny-big",
        "match": {"assets": [TOKEN], "amount": {"min": 1}},
        "action": "deny",
    }
    decision = judge(policy([deny_big, ALLOW_ALL]), mint)
    assert isinstance(decision, Deny)
    assert decision.code == NO_RULE_MATCHED


def test_an_undecoded_call_is_allowed_only_by_a_rule_naming_its_contract_and_method() -> None:
    mint = evm(call("mint(address,uint256)", ATTACKER, 10**30))
    contract_only = {"id": "c", "match": {"contract": {"addresses": [TOKEN]}}, "action": "allow"}
    method_only = {"id": "m", "match": {"contract": {"methods": ["0x40c10f19"]}}, "action": "allow"}
    both = {
        "id": "both",
        "match": {"contract": {"addresses": [TOKEN], "methods": ["0x40c10f19"]}},
        "action": "allow",
    }
    assert rule_of(judge(policy([contract_only, method_only, both]), mint)) == "both"
    assert rule_of(judge(policy([contract_only, method_only]), mint)) == f"deny:{NO_RULE_MATCHED}"
    # A deny rule naming only the contract still denies it.
    deny = {**contract_only, "id": "no-token-calls", "action": "deny"}
    assert rule_of(judge(policy([deny, both]), mint)) == "deny:no-token-calls"


def test_transfer_from_beyond_an_amount_rule_is_denied_and_within_it_allowed() -> None:
    rules = [
        {
            "id": "token-small",
            "match": {"assets": [TOKEN], "contract": {"addresses": [TOKEN]}, "amount": {"max": 1000}},
            "action": "allow",
        },
    ]  # fmt: skip
    theft = evm(call("transferFrom(address,address,uint256)", VICTIM, ATTACKER, 10**12))
    assert rule_of(judge(policy(rules), theft)) == f"deny:{NO_RULE_MATCHED}"
    small = evm(call("transferFrom(address,address,uint256)", VICTIM, ATTACKER, 1000))
    assert rule_of(judge(policy(rules), small)) == "token-small"
    # A rule for plain transfers (no contract predicate) does not cover transferFrom.
    plain = [{"id": "p", "match": {"assets": [TOKEN]}, "action": "allow"}]
    assert rule_of(judge(policy(plain), small)) == f"deny:{NO_RULE_MATCHED}"


# ---- amounts across assets ------------------------------------------------------


def test_an_amount_without_assets_is_refused() -> None:
    with pytest.raises(PolicyValidationError) as info:
        policy([{"id": "cap", "match": {"amount": {"max": 10**18}}, "action": "allow"}])
    assert info.value.errors == (
        "rules[0].match: amount needs assets: base units of different assets are not comparable",
    )
    native = policy([{"id": "cap", "match": {"assets": ["native"], "amount": {"max": 10**18}}, "action": "allow"}])  # fmt: skip
    usdt = evm(call("transfer(address,uint256)", ATTACKER, 10**12))
    assert rule_of(judge(native, usdt)) == f"deny:{NO_RULE_MATCHED}"
    assert rule_of(judge(native, evm(to=ATTACKER, value=10**18))) == "cap"


# ---- allowances and fees are spent budget ---------------------------------------


def _limit(asset: str, max_amount: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"lim-{'native' if asset == 'native' else 'token'}",
        "window": "1h",
        "per": ["key", "asset"],
        "scope": {"assets": [asset]},
        "max_amount": max_amount,
        **extra,
    }


@pytest.mark.parametrize(
    "signature", ["approve(address,uint256)", "increaseAllowance(address,uint256)"]
)
def test_allowances_are_charged_to_the_tokens_limits(signature: str) -> None:
    rules = [{"id": "t", "match": {"contract": {"addresses": [TOKEN]}}, "action": "allow"}]
    compiled = policy(rules, limits=[_limit(TOKEN, 1000)])
    assert rule_of(judge(compiled, evm(call(signature, ATTACKER, 1000)))) == "t"
    over = judge(compiled, evm(call(signature, ATTACKER, 1001)))
    assert isinstance(over, Deny)
    assert (over.code, over.limit_id) == (LIMIT_EXCEEDED, "lim-token")
    unlimited = judge(compiled, evm(call(signature, ATTACKER, 2**256 - 1)))
    assert isinstance(unlimited, Deny)
    assert unlimited.code == LIMIT_EXCEEDED


def test_the_maximum_fee_is_charged_to_native_limits_not_to_amount_rules() -> None:
    payment = evm(to=ATTACKER, value=10**16)
    assert charged_totals(payment) == {"native": 10**16 + FEE}
    rules = [{"id": "cap", "match": {"assets": ["native"], "amount": {"max": 10**16}}, "action": "allow"}]  # fmt: skip
    exact = policy(rules, limits=[_limit("native", 10**16 + FEE)])
    assert rule_of(judge(exact, payment)) == "cap"  # the rule sees 0.01 ETH, not the fee
    short = policy(rules, limits=[_limit("native", 10**16 + FEE - 1)])
    decision = judge(short, payment)
    assert isinstance(decision, Deny)
    assert decision.code == LIMIT_EXCEEDED
    # The attack: 0.01 ETH with 100 ETH of maximum fee under a 1 ETH native limit.
    greedy = replace(payment, fee=100 * 10**18)
    decision = judge(policy(rules, limits=[_limit("native", 10**18)]), greedy)
    assert isinstance(decision, Deny)
    assert decision.remaining["amount"] == 10**18


def test_a_token_transfer_pays_its_fee_from_the_native_budget() -> None:
    usdt = evm(call("transfer(address,uint256)", ATTACKER, 5))
    assert charged_totals(usdt) == {TOKEN.lower(): 5, "native": FEE}
    compiled = policy([ALLOW_ALL], limits=[_limit("native", FEE - 1)])
    assert isinstance(judge(compiled, usdt), Deny)


def test_a_bitcoin_fee_is_charged_and_change_is_not() -> None:
    spend = btc(_twins(OTHER_HASH)["p2wpkh"], amount=10**6, fee=2000)
    assert charged_totals(spend) == {"native": 10**6 + 2000}
    all_change = replace(spend, transfers=(Transfer(MAIN["p2wpkh"], "native", 10**6, True),))
    assert charged_totals(all_change) == {"native": 2000}


# ---- accounts, not spellings ----------------------------------------------------


def test_every_standard_spelling_of_a_key_hash_is_one_account() -> None:
    spellings = [*MAIN.values(), *TEST.values(), MAIN["p2wpkh"].upper()]
    own = account_ids("bitcoin", MAIN["p2wpkh"])
    assert set(own) >= {account_id("bitcoin", s) for s in spellings}
    other = account_id("bitcoin", _twins(OTHER_HASH)["p2pkh"])
    assert other not in own
    # A P2SH entry cannot know a key hash: it matches its own script only.
    assert account_ids("bitcoin", MAIN["p2sh-p2wpkh"]) == (
        account_id("bitcoin", MAIN["p2sh-p2wpkh"]),
    )
    assert account_id("bitcoin", MAIN["p2pkh"]) not in account_ids("bitcoin", MAIN["p2sh-p2wpkh"])
    with ChainParams("bitcoin/mainnet"):
        wsh = str(P2WSHCoinAddress.from_bytes(bytes(32)))
    assert account_id("bitcoin", wsh) != account_id("bitcoin", MAIN["p2wpkh"])
    # A mistyped address is nobody's twin: it keeps its own spelling.
    typo = MAIN["p2pkh"][:-1] + ("1" if MAIN["p2pkh"][-1] != "1" else "2")
    assert account_id("bitcoin", typo) not in own


def test_an_evm_account_is_one_account_on_every_evm_chain() -> None:
    assert account_id("ethereum", DENIED_EVM) == account_id("bsc", DENIED_EVM.lower())
    assert account_id("tron", "TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G") != account_id(
        "ethereum", DENIED_EVM
    )


DENY_LISTED = {
    "id": "no-denied",
    "match": {"destinations": {"groups": ["denied"], "mode": "any"}},
    "action": "deny",
}


@pytest.mark.parametrize("spelling", [*MAIN.values(), *TEST.values()])
def test_a_denied_p2wpkh_entry_denies_every_twin_on_every_network(spelling: str) -> None:
    compiled = policy([DENY_LISTED, ALLOW_ALL], [entry("d", "bitcoin", MAIN["p2wpkh"], "denied")])
    network = "mainnet" if spelling in MAIN.values() else "testnet"
    assert rule_of(judge(compiled, btc(spelling, network=network))) == "deny:no-denied"
    assert rule_of(judge(compiled, btc(_twins(OTHER_HASH)["p2pkh"]))) == "all"


def test_a_denied_p2pkh_entry_denies_its_p2wpkh_twin() -> None:
    compiled = policy([DENY_LISTED, ALLOW_ALL], [entry("d", "bitcoin", TEST["p2pkh"], "denied", network="testnet")])  # fmt: skip
    assert rule_of(judge(compiled, btc(MAIN["p2wpkh"]))) == "deny:no-denied"


def test_a_denied_ethereum_address_is_denied_on_bsc_and_every_chain_id() -> None:
    compiled = policy([DENY_LISTED, ALLOW_ALL], [entry("d", "ethereum", DENIED_EVM, "denied")])
    for chain_id in (1, 11155111, 17000, 56, 97):
        decision = judge(compiled, evm(to=DENIED_EVM.lower(), value=1, chain_id=chain_id))
        assert rule_of(decision) == "deny:no-denied", chain_id
    # As a token recipient, an approve spender and a transferFrom recipient too.
    for data in (
        call("transfer(address,uint256)", DENIED_EVM, 1),
        call("approve(address,uint256)", DENIED_EVM, 1),
        call("transferFrom(address,address,uint256)", VICTIM, DENIED_EVM, 1),
    ):
        assert rule_of(judge(compiled, evm(data, chain_id=56))) == "deny:no-denied"


def test_entries_scoped_on_purpose_stay_on_their_chain_or_network() -> None:
    pay_ok = {"id": "pay-ok", "match": {"destinations": {"groups": ["ok"]}}, "action": "allow"}
    for scope, allowed in (
        (None, {1, 11155111, 56, 97}),
        ("chain", {1, 11155111}),
        ("network", {1}),
    ):
        extra = {"scope": scope} if scope else {}
        compiled = policy([pay_ok], [entry("x", "ethereum", ATTACKER, "ok", **extra)])
        for chain_id in (1, 11155111, 56, 97):
            decision = judge(compiled, evm(to=ATTACKER, value=1, chain_id=chain_id))
            assert (rule_of(decision) == "pay-ok") is (chain_id in allowed), (scope, chain_id)


def test_cooling_off_follows_the_account_and_deny_ignores_it() -> None:
    pay_ok = {"id": "pay-ok", "match": {"destinations": {"groups": ["ok"]}}, "action": "allow"}
    doc_entries = [entry("x", "bitcoin", MAIN["p2wpkh"], "ok")]
    fresh = compile_policy(
        validate_document(
            {
                "version": 1,
                "governance": {"officers": ["o1", "o2"], "approvals_required": 1},
                "address_book": {"groups": ["ok"], "entries": doc_entries},
                "rules": [pay_ok],
            }
        ),
        activated_at=NOW,
    )
    decision = judge(fresh, btc(MAIN["p2pkh"]))
    assert isinstance(decision, Deny)
    assert decision.code == COOLING_OFF
    assert rule_of(judge(policy([pay_ok], doc_entries), btc(MAIN["p2pkh"]))) == "pay-ok"
    denied = policy(
        [DENY_LISTED], [entry("d", "bitcoin", MAIN["p2wpkh"], "denied")], cooling_off="30d"
    )
    assert rule_of(judge(denied, btc(MAIN["p2pkh"]))) == "deny:no-denied"
    decision = judge(denied, btc(MAIN["p2pkh"]))
    assert isinstance(decision, Deny)
    assert decision.code == RULE_DENIED


def test_two_entries_of_one_account_both_apply() -> None:
    pay_ok = {"id": "pay-ok", "match": {"destinations": {"groups": ["ok"]}}, "action": "allow"}
    entries = [
        entry("a", "bitcoin", MAIN["p2wpkh"], "ok"),
        entry("b", "bitcoin", MAIN["p2pkh"], "denied"),
    ]
    compiled = policy([DENY_LISTED, pay_ok], entries)
    assert rule_of(judge(compiled, btc(MAIN["p2wpkh"]))) == "deny:no-denied"


def test_changing_an_entrys_scope_starts_a_new_cooling_off() -> None:
    from custos.policies.document import since_keys
    from custos.policies.governance import carry_entry_since

    def doc(**extra: Any) -> Any:
        return validate_document(
            {
                "version": 1,
                "governance": {"officers": ["o1", "o2"], "approvals_required": 1},
                "address_book": {
                    "groups": ["ok"],
                    "entries": [entry("x", "ethereum", ATTACKER, "ok", **extra)],
                },
                "rules": [ALLOW_ALL],
            }
        )

    unscoped, scoped = doc(), doc(scope="network")
    # Documents written before scopes keep their keys (and their cooling-off).
    where = f"ethereum:mainnet:{ATTACKER.lower()}"
    assert since_keys(unscoped) == (f"{where}#entry:x", f"{where}#group:ok")
    earlier = carry_entry_since({}, scoped, LONG_AGO)
    broadened = carry_entry_since(earlier, unscoped, NOW)
    assert set(broadened.values()) == {NOW}
    assert set(carry_entry_since(broadened, unscoped, NOW + timedelta(days=1)).values()) == {NOW}


@settings(max_examples=60, deadline=None)
@given(key_hash=st.binary(min_size=20, max_size=20), flip=st.integers(0, 200))
def test_accounts_agree_with_python_bitcointx(key_hash: bytes, flip: int) -> None:
    main, test = _twins(key_hash), _twins(key_hash, "bitcoin/testnet")
    filed = account_ids("bitcoin", main["p2wpkh"])
    assert filed == (f"btc:kh:{key_hash.hex()}", account_id("bitcoin", main["p2sh-p2wpkh"]))
    for spelling in [*main.values(), *test.values()]:
        assert account_id("bitcoin", spelling) in filed
        # One character changed: a checksum failure, never some key hash's account.
        i = flip % len(spelling)
        typo = spelling[:i] + ("q" if spelling[i] != "q" else "p") + spelling[i + 1 :]
        if typo.lower() != spelling.lower():
            assert not account_id("bitcoin", typo).startswith("btc:"), typo
    with ChainParams("bitcoin/mainnet"):
        taproot = str(P2TRCoinAddress.from_bytes(key_hash + key_hash[:12]))
    assert account_id("bitcoin", taproot) == f"btc:w1:{(key_hash + key_hash[:12]).hex()}"
