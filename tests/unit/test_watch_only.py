"""Watch-only wallets in the policy: derivation checked against bip-utils, bad keys refused.

The addresses a wallet's ids must cover are derived by bip-utils (a second
BIP32/BIP44/49/84 implementation) from the same extended public key, and read
back into account ids by policies.accounts, the code destinations go through.
"""

from __future__ import annotations

import contextlib
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bip_utils import (
    Bip39SeedGenerator,
    Bip44,
    Bip44Changes,
    Bip44Coins,
    Bip49,
    Bip49Coins,
    Bip84,
    Bip84Coins,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.common.intent import Intent, Transfer
from custos.hsm.bip32 import master_key, parse_extended_public_key
from custos.policies.accounts import account_id, base58check_encode
from custos.policies.descriptors import DescriptorError, checksum, parse_descriptor
from custos.policies.document import parse_document
from custos.policies.evaluate import COOLING_OFF, NO_RULE_MATCHED, RULE_DENIED, Deny, compile_policy
from custos.policies.governance import carry_entry_since
from custos.policies.schema import PolicyValidationError, validate_document
from custos.policies.watch_only import MAX_DERIVATIONS, wallet_accounts
from custos.policies.xpub import XpubError, parse_xpub
from tests.unit.test_policy_document import base
from tests.unit.test_policy_evaluate import allowed_by, judge

# BIP84's published test vector: the "abandon ... about" account 0 key and its first addresses.
BIP84_ZPUB = (
    "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31m"
    "GDtKsAYz2oz2AGutZYs"
)
BIP84_RECEIVE_0 = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
BIP84_CHANGE_0 = "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"
SEED = Bip39SeedGenerator(
    "legal winner thank year wave sausage worth useful legal winner thank yellow"
).Generate()

# (chain, network, bip-utils class, coin, branches) for each kind of wallet.
KINDS = [
    ("bitcoin", "mainnet", Bip84, Bip84Coins.BITCOIN, (0, 1)),
    ("bitcoin", "testnet", Bip84, Bip84Coins.BITCOIN_TESTNET, (0, 1)),
    ("bitcoin", "mainnet", Bip49, Bip49Coins.BITCOIN, (0, 1)),
    ("bitcoin", "testnet", Bip44, Bip44Coins.BITCOIN_TESTNET, (0, 1)),
    ("ethereum", "mainnet", Bip44, Bip44Coins.ETHEREUM, (0,)),
    ("bsc", "testnet", Bip44, Bip44Coins.ETHEREUM, (0,)),
    ("tron", "mainnet", Bip44, Bip44Coins.TRON, (0,)),
]


def _document(wallets: dict[str, Any]) -> dict[str, Any]:
    doc = base()
    doc["watch_only"] = wallets
    doc["rules"].append(
        {"id": "cold", "match": {"destinations": {"watch_only": list(wallets)}}, "action": "allow"}
    )
    return doc


def _wallet(xpub: str, chain: str = "bitcoin", network: str = "mainnet", **more: Any) -> Any:
    return {"chain": chain, "network": network, "xpub": xpub, **more}


@pytest.mark.parametrize(("chain", "network", "bip", "coin", "branches"), KINDS)
def test_ids_are_the_addresses_bip_utils_derives_up_to_the_gap_limit(
    chain: str, network: str, bip: Any, coin: Any, branches: tuple[int, ...]
) -> None:
    account = bip.FromSeed(SEED, coin).Purpose().Coin().Account(7)
    xpub = account.PublicKey().ToExtended()
    gap = 25
    wallet = parse_document(_document({"w": _wallet(xpub, chain, network, gap_limit=gap)}))
    ids = wallet_accounts(wallet.watch_only["w"])  # type: ignore[index]
    second = bip.FromExtendedKey(xpub, coin)
    expected = set()
    for branch in branches:
        change = Bip44Changes.CHAIN_EXT if branch == 0 else Bip44Changes.CHAIN_INT
        node = second.Change(change)
        addresses = [node.AddressIndex(i).PublicKey().ToAddress() for i in range(gap + 1)]
        expected |= {account_id(chain, a) for a in addresses[:gap]}
        # One past the gap limit is not the wallet's.
        assert account_id(chain, addresses[gap]) not in ids
    assert ids == expected
    assert len(ids) == gap * len(branches)


def test_bip84_published_vector_receive_and_change() -> None:
    doc = parse_document(_document({"w": _wallet(BIP84_ZPUB, gap_limit=1)}))
    ids = wallet_accounts(doc.watch_only["w"])  # type: ignore[index]
    assert ids == {account_id("bitcoin", BIP84_RECEIVE_0), account_id("bitcoin", BIP84_CHANGE_0)}


def test_a_valid_document_with_wallets_validates_and_keeps_old_hashes() -> None:
    validate_document(_document({"cold-1": _wallet(BIP84_ZPUB, script="p2wpkh", gap_limit=100)}))
    # A document without the section hashes as before: the field is left out.
    assert "watch_only" not in parse_document(base()).model_dump(exclude_none=True)


def _errors(doc: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(PolicyValidationError) as caught:
        validate_document(doc)
    return caught.value.errors


def _tampered_checksum(text: str) -> str:
    last = "2" if text[-1] != "2" else "3"
    return text[:-1] + last


XPRV = master_key(bytes(range(32))).derive("m/84'/0'/0'").serialize("zpub")
XPRV_KEY = master_key(bytes(range(32))).derive("m/84'/0'/0'")
TPUB = master_key(bytes(range(32))).derive("m/44'/1'/0'").public().serialize("tpub")
ETH_XPUB = master_key(bytes(range(32))).derive("m/44'/60'/0'").public().serialize("xpub")


@pytest.mark.parametrize(
    ("wallet", "path", "message"),
    [
        (_wallet(_tampered_checksum(BIP84_ZPUB)), "watch_only.w.xpub", "not base58check"),
        (_wallet(XPRV), "watch_only.w.xpub", "extended private key was given"),
        (_wallet(BIP84_ZPUB, script="p2pkh"), "watch_only.w.script", "zpub key makes p2wpkh"),
        (_wallet(BIP84_ZPUB, "ethereum"), "watch_only.w.xpub", "zpub key is a Bitcoin key"),
        (_wallet(ETH_XPUB, "tron", script="p2wpkh"), "watch_only.w.script", "no script types"),
        (_wallet(TPUB), "watch_only.w.network", "tpub key is a test-network key"),
        (_wallet(BIP84_ZPUB, network="testnet"), "watch_only.w.network", "a mainnet key"),
        (_wallet(ETH_XPUB, "ethereum", "testnet"), "watch_only.w.network", "not a ethereum"),
        (_wallet(BIP84_ZPUB, gap_limit=0), "watch_only.w.gap_limit", ""),
        (_wallet(BIP84_ZPUB, gap_limit=1001), "watch_only.w.gap_limit", ""),
        (_wallet("zpub-not-base58!"), "watch_only.w.xpub", "not base58check"),
        (_wallet(BIP84_ZPUB, extra=1), "watch_only.w", ""),
    ],
)
def test_bad_wallets_are_refused_naming_the_field(
    wallet: dict[str, Any], path: str, message: str
) -> None:
    errors = _errors(_document({"w": wallet}))
    assert any(e.startswith(f"{path}") and message in e for e in errors), errors
    # No error carries the key material back.
    assert not any(wallet["xpub"][4:40] in e for e in errors), errors


def test_a_private_key_never_reaches_an_error() -> None:
    errors = _errors(_document({"w": _wallet(XPRV)}))
    assert XPRV.startswith("zprv")
    secret = XPRV_KEY.key.hex()
    assert not any(XPRV[4:] in e or secret in e for e in errors)


def test_rules_name_only_declared_wallets() -> None:
    doc = _document({"cold-1": _wallet(BIP84_ZPUB)})
    doc["rules"][-1]["match"]["destinations"]["watch_only"] = ["cold-2"]
    assert _errors(doc) == (
        "rules[4].match.destinations.watch_only: unknown watch-only wallet 'cold-2'",
    )


def test_the_total_derivation_cost_is_bounded() -> None:
    many = {f"w{i}": _wallet(BIP84_ZPUB, gap_limit=1000) for i in range(11)}
    errors = _errors(_document(many))
    assert f"watch_only: gap limits need 22000 derivations, more than {MAX_DERIVATIONS}" in errors
    fits = copy.deepcopy(many)
    del fits["w10"]
    del fits["w9"]
    for wallet in fits.values():
        wallet["gap_limit"] = 20
    validate_document(_document(fits))


def test_policy_copy_of_ckdpub_agrees_with_hsm_bip32() -> None:
    account = master_key(bytes(range(64))).derive("m/49'/0'/3'").public()
    text = account.serialize("ypub")
    ours = parse_xpub(text)
    assert (ours.key, ours.chain_code, ours.version.script) == (
        account.key,
        account.chain_code,
        "p2sh-p2wpkh",
    )
    for branch in (0, 1):
        for index in (0, 1, 56, 999):
            child = ours.child(branch)
            assert child is not None
            derived = child.child(index)
            assert derived is not None
            assert derived.key == account.derive((branch, index)).key
    with pytest.raises(XpubError, match="no hardened child"):
        ours.child(0x80000000)


# ---- output descriptors ----------------------------------------------------------

BIP84_XPUB = parse_extended_public_key(BIP84_ZPUB)[0].serialize("xpub")
ORIGIN = "[73c5da0a/84'/0'/0']"


def _described(descriptor: str, **more: Any) -> Any:
    return {"chain": "bitcoin", "network": "mainnet", "descriptor": descriptor, **more}


def _ids(wallet: dict[str, Any]) -> frozenset[str]:
    doc = validate_document(_document({"w": wallet}))
    return wallet_accounts(doc.watch_only["w"])  # type: ignore[index]


def test_descriptor_checksum_is_bip380s() -> None:
    # BIP380's test vectors.
    assert checksum("raw(deadbeef)") == "89f8spxm"
    assert parse_descriptor(f"wpkh({BIP84_XPUB}/0/*)").branches == (0,)


def test_a_descriptor_derives_what_its_key_and_script_derive() -> None:
    both = f"wpkh({ORIGIN}{BIP84_XPUB}/<0;1>/*)"
    with_sum = f"{both}#{checksum(both)}"
    assert _ids(_described(with_sum, gap_limit=30)) == _ids(_wallet(BIP84_ZPUB, gap_limit=30))
    receive = _ids(_described(f"wpkh({BIP84_XPUB}/0/*)", gap_limit=1))
    assert receive == {account_id("bitcoin", BIP84_RECEIVE_0)}
    change = _ids(_described(f"wpkh({BIP84_XPUB}/1/*)", gap_limit=1))
    assert change == {account_id("bitcoin", BIP84_CHANGE_0)}
    # The same key nested in P2SH is what its ypub (BIP49 script) derives.
    ypub = parse_extended_public_key(BIP84_ZPUB)[0].serialize("ypub")
    nested = _ids(_described(f"sh(wpkh({BIP84_XPUB}/<0;1>/*))", gap_limit=5))
    assert nested == _ids(_wallet(ypub, gap_limit=5))
    assert all(i.startswith("btc:sh:") for i in nested)


@pytest.mark.parametrize(
    ("wallet", "path", "message"),
    [
        (_described(f"wpkh({BIP84_XPUB}/0/*)#00000000"), "descriptor", "bad checksum"),
        (_described(f"tr({BIP84_XPUB}/0/*)"), "descriptor", "only wpkh(), sh(wpkh()) and pkh()"),
        (_described(f"wpkh({BIP84_XPUB}/0'/*)"), "descriptor", "must end in"),
        (_described(f"wpkh({BIP84_XPUB}/0/*')"), "descriptor", "must end in"),
        (_described(f"wpkh({BIP84_XPUB}/7/0/*)"), "descriptor", "not supported"),
        (_described(f"wpkh({XPRV}/0/*)"), "descriptor", "extended private key was given"),
        (_described(f"wpkh({BIP84_XPUB}/0/*)", network="testnet"), "network", "mainnet"),
        (_described(f"wpkh({BIP84_XPUB}/0/*)", script="p2wpkh"), "script", "leave script out"),
        ({**_described(f"wpkh({BIP84_XPUB}/0/*)"), "chain": "ethereum"}, "descriptor", "an xpub"),
        ({**_described(f"wpkh({BIP84_XPUB}/0/*)"), "xpub": BIP84_ZPUB}, "xpub", "exactly one"),
        ({"chain": "bitcoin", "network": "mainnet"}, "xpub", "exactly one"),
    ],
)
def test_bad_descriptors_are_refused_naming_the_field(
    wallet: dict[str, Any], path: str, message: str
) -> None:
    errors = _errors(_document({"w": wallet}))
    assert any(e.startswith(f"watch_only.w.{path}:") and message in e for e in errors), errors
    assert not any(XPRV[4:40] in e or BIP84_XPUB[4:40] in e for e in errors), errors


def test_an_overlong_descriptor_with_a_private_key_is_not_echoed() -> None:
    descriptor = f"wpkh({XPRV}/0/*)" + " " * 400
    errors = _errors(_document({"w": _described(descriptor)}))
    assert errors == ("watch_only.w.descriptor: is longer than 400 characters",)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=130)
    # Checksum-valid keys of random bytes, public versions and compressed-point prefixes.
    | st.tuples(
        st.sampled_from([b"\x04\xb2\x47\x46", b"\x04\x88\xb2\x1e", b"\x04\xb2\x43\x0c"]),
        st.binary(min_size=41, max_size=41),
        st.sampled_from([b"\x02", b"\x03", b"\x04"]),
        st.binary(min_size=32, max_size=32),
    ).map(lambda parts: base58check_encode(b"".join(parts)))
)
def test_any_text_is_a_key_or_a_named_refusal(text: str) -> None:
    with contextlib.suppress(XpubError):
        parse_xpub(text)
    with contextlib.suppress(DescriptorError, XpubError):
        parse_descriptor(f"wpkh({text}/0/*)")


# ---- evaluation: cooling-off and deny lists, as for address-book entries ----------

NOW = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)


def _btc(*addresses: str) -> Intent:
    outputs = tuple(Transfer(a, "native", 10_000) for a in addresses)
    return Intent("bitcoin", "mainnet", "btc-hot", "bc1qown", outputs, 500, None, ())


def _vault_policy(action: str = "allow", mode: str = "all", version: int = 1) -> dict[str, Any]:
    doc = _document({"vault": _wallet(BIP84_ZPUB, gap_limit=60)})
    doc["version"] = version
    doc["limits"] = []
    doc["rules"] = [
        {
            "id": "vault",
            "match": {
                "chains": ["bitcoin"],
                "destinations": {"watch_only": ["vault"], "mode": mode},
            },
            "action": action,
        },
        {"id": "rest", "match": {"chains": ["bitcoin"]}, "action": "allow"},
    ]
    return doc


def test_a_new_wallet_waits_out_the_cooling_off_and_a_changed_one_starts_again() -> None:
    first = validate_document(_vault_policy())
    since = carry_entry_since({}, first, NOW - timedelta(days=3))
    allow_only = _vault_policy()
    allow_only["rules"].pop()  # only the vault is payable
    doc = validate_document(allow_only)
    policy = compile_policy(doc, activated_at=NOW - timedelta(hours=1), entry_since=since)
    assert allowed_by(judge(policy, _btc(BIP84_RECEIVE_0), now=NOW)) == "vault"
    # A new gap limit is a new wallet to approve and wait for.
    allow_only["watch_only"]["vault"]["gap_limit"] = 61
    changed = validate_document(allow_only)
    policy = compile_policy(
        changed,
        activated_at=NOW - timedelta(hours=1),
        entry_since=carry_entry_since(since, changed, NOW),
    )
    decision = judge(policy, _btc(BIP84_RECEIVE_0), now=NOW)
    assert isinstance(decision, Deny)
    assert (decision.code, decision.details["entry"]) == (COOLING_OFF, "vault")


def test_a_deny_rule_naming_a_wallet_denies_every_address_of_it() -> None:
    policy = compile_policy(validate_document(_vault_policy("deny", "any")), activated_at=NOW)
    stranger = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
    decision = judge(policy, _btc(stranger, BIP84_CHANGE_0), now=NOW)
    assert isinstance(decision, Deny)
    assert (decision.code, decision.rule_id) == (RULE_DENIED, "vault")
    assert allowed_by(judge(policy, _btc(stranger), now=NOW)) == "rest"


def test_mode_all_needs_every_output_to_be_the_wallets() -> None:
    doc = _vault_policy()
    doc["rules"].pop()
    policy = compile_policy(validate_document(doc), activated_at=NOW - timedelta(days=2))
    assert allowed_by(judge(policy, _btc(BIP84_RECEIVE_0, BIP84_CHANGE_0), now=NOW)) == "vault"
    mixed = judge(
        policy, _btc(BIP84_RECEIVE_0, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"), now=NOW
    )
    assert isinstance(mixed, Deny)
    assert mixed.code == NO_RULE_MATCHED
