"""BIP32/BIP39 derivation (hsm.bip32, hsm.bip39, hsm.hd_paths) and HD addresses
(signer.chains.hd) against the BIPs' own vectors and two second implementations:
bip-utils (Bitcoin, Ethereum, Tron) and eth-account's HD wallet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bip_utils import (
    Bip32Secp256k1,
    Bip44,
    Bip44Changes,
    Bip44Coins,
    Bip49,
    Bip49Coins,
    Bip84,
    Bip84Coins,
)
from coincurve import PrivateKey
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.hsm.bip32 import (
    HARDENED,
    DerivationError,
    ExtendedPrivateKey,
    ExtendedPublicKey,
    format_path,
    master_key,
    parse_extended_key,
    parse_extended_public_key,
    parse_path,
)
from custos.hsm.bip39 import (
    MnemonicError,
    entropy_to_mnemonic,
    mnemonic_to_seed,
    normalize_mnemonic,
)
from custos.hsm.hd_paths import PathNotAllowed, allowed_path
from custos.signer.chains import evm, tron
from custos.signer.chains.bitcoin_address import b58check_decode
from custos.signer.chains.hd import derive_addresses

VECTORS = Path(__file__).parent.parent / "vectors"
ABANDON = "abandon " * 11 + "about"
# A fixed, well-known test mnemonic (the Hardhat/Foundry default).
TEST_MNEMONIC = "test test test test test test test test test test test junk"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


BIP32 = _load("bip32.json")
BIP84 = _load("bip84_bip49.json")
BIP39 = _load("bip39_trezor.json")


@pytest.mark.parametrize("vector", BIP32["vectors"], ids=lambda v: f"vector{v['vector']}")
def test_bip32_vectors(vector: dict[str, Any]) -> None:
    master = master_key(bytes.fromhex(vector["seed"]))
    for chain in vector["chains"]:
        key = master.derive(chain["path"])
        assert key.serialize("xpub") == chain["xprv"], chain["path"]
        assert key.public().serialize("xpub") == chain["xpub"], chain["path"]
        # Round trip through the parser.
        parsed, version = parse_extended_key(chain["xprv"])
        assert parsed == key
        assert version.name == "xpub"
        public, _ = parse_extended_public_key(chain["xpub"])
        assert public == key.public()


def test_public_derivation_matches_private_on_normal_steps() -> None:
    # Vector 1: m/0'/1/2'/2/1000000000 from the public key of m/0'/1/2' (CKDpub).
    vector = BIP32["vectors"][0]
    master = master_key(bytes.fromhex(vector["seed"]))
    parent = master.derive("m/0'/1/2'").public()
    assert parent.derive("m/2/1000000000").serialize() == vector["chains"][-1]["xpub"]


@pytest.mark.parametrize("case", BIP32["invalid"], ids=lambda c: c["reason"])
def test_bip32_vector5_invalid_keys_refused(case: dict[str, str]) -> None:
    with pytest.raises(DerivationError):
        parse_extended_key(case["key"])


def test_public_key_refuses_hardened_child() -> None:
    public = master_key(bytes(16)).public()
    with pytest.raises(DerivationError, match="hardened"):
        public.child(HARDENED)


def test_private_key_repr_hides_secret() -> None:
    key = master_key(bytes(range(32)))
    assert key.key.hex() not in repr(key)
    assert key.chain_code.hex() not in repr(key)


def test_extended_private_key_refused_where_public_expected() -> None:
    with pytest.raises(DerivationError, match="private key was given"):
        parse_extended_public_key(BIP32["vectors"][0]["chains"][0]["xprv"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m", ()),
        ("m/0'/1/2h/3H", (HARDENED, 1, HARDENED + 2, HARDENED + 3)),
        ("m/2147483647'", (HARDENED + 2147483647,)),
    ],
)
def test_parse_path(text: str, expected: tuple[int, ...]) -> None:
    assert parse_path(text) == expected
    assert parse_path(format_path(expected)) == expected


@pytest.mark.parametrize(
    "text", ["", "n/0", "m/", "m//1", "m/-1", "m/+1", "m/01", "m/2147483648", "m/1''", "m/\u0661"]
)
def test_parse_path_refuses(text: str) -> None:
    with pytest.raises(DerivationError):
        parse_path(text)


# ---- BIP39 ------------------------------------------------------------------


@pytest.mark.parametrize("case", BIP39["english"], ids=lambda c: c[0][:8] + str(len(c[0])))
def test_bip39_trezor_vectors(case: list[str]) -> None:
    entropy, mnemonic, seed, xprv = case
    assert entropy_to_mnemonic(bytes.fromhex(entropy)) == mnemonic
    got = mnemonic_to_seed(mnemonic, BIP39["passphrase"])
    assert got.hex() == seed
    assert master_key(got).serialize() == xprv


def test_bip39_errors_name_the_defect_not_the_words() -> None:
    bad_checksum = "abandon " * 12
    with pytest.raises(MnemonicError, match="checksum") as info:
        mnemonic_to_seed(bad_checksum.strip())
    assert "abandon" not in str(info.value)
    with pytest.raises(MnemonicError, match="word 3 is not") as info:
        mnemonic_to_seed(
            ABANDON.replace("abandon", "zzsecret", 3).replace("zzsecret", "abandon", 2)
        )
    assert "zzsecret" not in str(info.value)
    with pytest.raises(MnemonicError, match="has 11 words"):
        mnemonic_to_seed("abandon " * 10 + "about")
    with pytest.raises(MnemonicError, match="entropy"):
        entropy_to_mnemonic(bytes(15))


def test_bip39_normalizes_case_and_spacing() -> None:
    assert normalize_mnemonic("  " + ABANDON.upper().replace(" ", "   ") + "\n") == ABANDON


# ---- BIP84 / BIP49 vectors --------------------------------------------------


def test_bip84_vectors() -> None:
    case = BIP84["bip84"]
    root = master_key(mnemonic_to_seed(case["mnemonic"], case["passphrase"]))
    assert root.serialize("zpub") == case["rootpriv"]
    assert root.public().serialize("zpub") == case["rootpub"]
    account = root.derive(case["account_path"])
    assert account.serialize("zpub") == case["account_xprv"]
    assert account.public().serialize("zpub") == case["account_xpub"]
    for entry in case["addresses"]:
        key = root.derive(entry["path"])
        assert key.public().key.hex() == entry["pubkey"]
        # WIF: 0x80 || key || 0x01 (compressed).
        assert b58check_decode(entry["wif"]) == b"\x80" + key.key + b"\x01"
        change, index = (int(x) for x in entry["path"].split("/")[-2:])
        (derived,) = derive_addresses(
            case["account_xpub"],
            "bitcoin",
            "mainnet",
            case["account_path"],
            start=index,
            count=1,
            change=change,
        )
        assert derived.address == entry["address"]
        assert derived.path == entry["path"]


def test_bip49_vectors() -> None:
    case = BIP84["bip49"]
    root = master_key(mnemonic_to_seed(case["mnemonic"], case["passphrase"]))
    assert root.serialize("upub") == case["rootpriv"]
    account = root.derive(case["account_path"])
    assert account.serialize("upub") == case["account_xprv"]
    assert account.public().serialize("upub") == case["account_xpub"]
    (entry,) = case["addresses"]
    key = root.derive(entry["path"])
    assert key.key.hex() == entry["privkey"]
    assert key.public().key.hex() == entry["pubkey"]
    (derived,) = derive_addresses(
        case["account_xpub"], "bitcoin", "testnet", case["account_path"], start=0, count=1
    )
    assert derived.address == entry["address"]


# ---- second implementations ------------------------------------------------

_BIP_UTILS = {
    44: (Bip44, Bip44Coins.BITCOIN, Bip44Coins.BITCOIN_TESTNET),
    49: (Bip49, Bip49Coins.BITCOIN, Bip49Coins.BITCOIN_TESTNET),
    84: (Bip84, Bip84Coins.BITCOIN, Bip84Coins.BITCOIN_TESTNET),
}


@pytest.mark.parametrize("purpose", [44, 49, 84])
@pytest.mark.parametrize("network", ["mainnet", "testnet"])
@pytest.mark.parametrize("passphrase", ["", "correct horse"])
def test_bitcoin_against_bip_utils(purpose: int, network: str, passphrase: str) -> None:
    seed = mnemonic_to_seed(TEST_MNEMONIC, passphrase)
    cls, main_coin, test_coin = _BIP_UTILS[purpose]
    ctx = cls.FromSeed(seed, main_coin if network == "mainnet" else test_coin)
    coin = 0 if network == "mainnet" else 1
    account_path = f"m/{purpose}'/{coin}'/2'"
    hd = allowed_path("bitcoin", network, account_path)
    account = master_key(seed).derive(account_path)
    theirs = ctx.Purpose().Coin().Account(2)
    xpub = account.public().serialize(hd.key_version)
    assert xpub == theirs.PublicKey().ToExtended()
    assert account.serialize(hd.key_version) == theirs.PrivateKey().ToExtended()
    for change, branch in ((0, Bip44Changes.CHAIN_EXT), (1, Bip44Changes.CHAIN_INT)):
        ours = derive_addresses(
            xpub, "bitcoin", network, account_path, start=5, count=3, change=change
        )
        for offset, derived in enumerate(ours):
            other = theirs.Change(branch).AddressIndex(5 + offset)
            assert derived.address == other.PublicKey().ToAddress()
            assert derived.public_key == other.PublicKey().RawCompressed().ToBytes()


@pytest.mark.parametrize(
    ("chain", "coin"),
    [
        ("ethereum", Bip44Coins.ETHEREUM),
        ("bsc", Bip44Coins.BINANCE_SMART_CHAIN),
        ("tron", Bip44Coins.TRON),
    ],
)
def test_account_chains_against_bip_utils(chain: str, coin: Bip44Coins) -> None:
    seed = mnemonic_to_seed(TEST_MNEMONIC, "pass")
    theirs = Bip44.FromSeed(seed, coin).Purpose().Coin().Account(1)
    account_path = allowed_path(
        chain, "mainnet", f"m/44'/{60 if chain != 'tron' else 195}'/1'"
    ).text
    xpub = master_key(seed).derive(account_path).public().serialize()
    assert xpub == theirs.PublicKey().ToExtended()
    ours = derive_addresses(xpub, chain, "mainnet", account_path, start=0, count=4)
    for index, derived in enumerate(ours):
        other = theirs.Change(Bip44Changes.CHAIN_EXT).AddressIndex(index).PublicKey().ToAddress()
        assert derived.address == other


@pytest.mark.parametrize("passphrase", ["", "TREZOR"])
def test_ethereum_against_eth_account(passphrase: str) -> None:
    Account.enable_unaudited_hdwallet_features()
    seed = mnemonic_to_seed(TEST_MNEMONIC, passphrase)
    xpub = master_key(seed).derive("m/44'/60'/0'").public().serialize()
    ours = derive_addresses(xpub, "ethereum", "mainnet", "m/44'/60'/0'", start=0, count=3)
    for index, derived in enumerate(ours):
        path = f"m/44'/60'/0'/0/{index}"
        account = Account.from_mnemonic(TEST_MNEMONIC, passphrase, account_path=path)
        assert derived.address == account.address
        private = master_key(seed).derive(path).key
        assert private == bytes(account.key)
    if not passphrase:
        # Hardhat's well-known first account, independent of both libraries.
        assert ours[0].address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_tron_address_matches_private_key_route() -> None:
    seed = mnemonic_to_seed(TEST_MNEMONIC)
    private = master_key(seed).derive("m/44'/195'/0'/0/0").key
    public = PrivateKey(private).public_key.format(compressed=False)
    (derived,) = derive_addresses(
        master_key(seed).derive("m/44'/195'/0'").public().serialize(),
        "tron",
        "mainnet",
        "m/44'/195'/0'",
        start=0,
        count=1,
    )
    assert derived.address == tron.key_address(public)
    assert evm.key_address(public)[2:].lower() in tron.key_raw_address(public).hex()


# ---- allow-list --------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "network", "path"),
    [
        ("bitcoin", "mainnet", "m/84'/0'/0'/0/0"),
        ("bitcoin", "mainnet", "m/49'/0'/3'/1/17"),
        ("bitcoin", "testnet", "m/44'/1'/0'"),
        ("bitcoin", "regtest", "m/84'/1'/0'/1/2147483647"),
        ("ethereum", "mainnet", "m/44'/60'/0'/0/5"),
        ("bsc", "mainnet", "m/44'/60'/7'"),
        ("tron", "nile", "m/44'/195'/0'/0/0"),
    ],
)
def test_allowed_paths(chain: str, network: str, path: str) -> None:
    hd = allowed_path(chain, network, path)
    assert hd.text == path


@pytest.mark.parametrize(
    ("chain", "network", "path", "why"),
    [
        ("bitcoin", "mainnet", "m/86'/0'/0'/0/0", "purpose 86"),
        ("bitcoin", "mainnet", "m/84'/1'/0'/0/0", "coin type 1"),
        ("bitcoin", "testnet", "m/84'/0'/0'/0/0", "coin type 0"),
        ("bitcoin", "mainnet", "m/84'/0'/0'/2/0", "change 2"),
        ("bitcoin", "mainnet", "m/84'/0'/0'/0/0'", "not hardened"),
        ("bitcoin", "mainnet", "m/84'/0'/0/0/0", "hardened"),
        ("bitcoin", "mainnet", "m/84'/0'", "account level"),
        ("bitcoin", "mainnet", "m/84'/0'/0'/0/0/0", "account level"),
        ("ethereum", "mainnet", "m/44'/60'/0'/1/0", "change 1"),
        ("ethereum", "mainnet", "m/44'/195'/0'/0/0", "coin type 195"),
        ("bsc", "mainnet", "m/44'/714'/0'/0/0", "coin type 714"),
        ("tron", "mainnet", "m/84'/195'/0'/0/0", "purpose 84"),
        ("tron", "mainnet", "m/44'/195'/1001'/0/0", "account 1001"),
    ],
)
def test_refused_paths_name_the_path(chain: str, network: str, path: str, why: str) -> None:
    with pytest.raises(PathNotAllowed) as info:
        allowed_path(chain, network, path)
    assert path in str(info.value)
    assert why in str(info.value)
    assert chain in str(info.value)


def test_unknown_chain_refused() -> None:
    with pytest.raises(DerivationError, match="solana"):
        allowed_path("solana", "mainnet", "m/44'/501'/0'/0'")


def test_watch_only_refuses_mismatched_account_key() -> None:
    seed = mnemonic_to_seed(TEST_MNEMONIC)
    account = master_key(seed).derive("m/84'/0'/0'").public()
    # An xpub (P2PKH family) offered for a BIP84 path: the addresses would differ.
    with pytest.raises(DerivationError, match="needs a zpub"):
        derive_addresses(
            account.serialize("xpub"), "bitcoin", "mainnet", "m/84'/0'/0'", start=0, count=1
        )
    # The key of account 0 offered as account 1.
    with pytest.raises(DerivationError, match="not of account 1"):
        derive_addresses(
            account.serialize("zpub"), "bitcoin", "mainnet", "m/84'/0'/1'", start=0, count=1
        )
    # A leaf key is not an account key.
    leaf = master_key(seed).derive("m/84'/0'/0'/0/0").public().serialize("zpub")
    with pytest.raises(DerivationError, match="depth 5"):
        derive_addresses(leaf, "bitcoin", "mainnet", "m/84'/0'/0'", start=0, count=1)
    with pytest.raises(DerivationError, match="count"):
        derive_addresses(
            account.serialize("zpub"), "bitcoin", "mainnet", "m/84'/0'/0'", start=0, count=0
        )
    with pytest.raises(DerivationError, match="2147483648 is 2"):
        derive_addresses(
            account.serialize("zpub"),
            "bitcoin",
            "mainnet",
            "m/84'/0'/0'",
            start=HARDENED - 1,
            count=2,
        )


def test_types_are_frozen() -> None:
    key = master_key(bytes(16))
    assert isinstance(key, ExtendedPrivateKey)
    assert isinstance(key.public(), ExtendedPublicKey)
    with pytest.raises(AttributeError):
        key.depth = 3  # type: ignore[misc]


_STEP = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=16, max_size=64), steps=st.lists(_STEP, max_size=5))
def test_random_seeds_and_paths_match_bip_utils(seed: bytes, steps: list[int]) -> None:
    path = format_path(tuple(steps))
    ours = master_key(seed).derive(path)
    theirs = Bip32Secp256k1.FromSeed(seed).DerivePath(path)
    assert ours.serialize() == theirs.PrivateKey().ToExtended()
    assert ours.public().serialize() == theirs.PublicKey().ToExtended()
    # CKDpub agrees with CKDpriv below the last hardened step.
    last_hardened = max((i + 1 for i, s in enumerate(steps) if s >= HARDENED), default=0)
    base = master_key(seed).derive(tuple(steps[:last_hardened])).public()
    assert base.derive(tuple(steps[last_hardened:])) == ours.public()
