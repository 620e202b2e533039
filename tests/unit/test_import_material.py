"""The officer's side of key import (hsm.import_material), against second implementations.

eth-account reads the same keys (Account.from_key, Account.decrypt of keystores
it wrote, Account.from_mnemonic), python-bitcointx writes the WIF keys, and
bip-utils derives the BIP84 key; the wrapped blob opens with the import key's
private half (cryptography) into the same PKCS#8 key.
"""

from __future__ import annotations

import json

import pytest
from bip_utils import Bip39SeedGenerator, Bip44Changes, Bip84, Bip84Coins
from bitcointx import ChainParams
from bitcointx.wallet import CBitcoinKey
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from eth_account import Account

from custos.hsm.import_material import (
    OAEP,
    ImportMaterialError,
    SecretKey,
    from_hex,
    from_keystore,
    from_mnemonic,
    from_wif,
    import_key_fingerprint,
    wrap_for_import,
)
from custos.signer.chains.evm import key_address

MNEMONIC = "abandon " * 11 + "about"  # BIP39's all-zero entropy vector
SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def _eth(secret: SecretKey) -> str:
    return key_address(secret.public_key)


def test_hex_with_and_without_prefix_is_eth_accounts_key() -> None:
    expected = Account.from_key(SECRET).address
    assert _eth(from_hex(SECRET.hex())) == expected
    assert _eth(from_hex("0x" + SECRET.hex().upper())) == expected


@pytest.mark.parametrize("chain", ["bitcoin", "bitcoin/testnet"])
@pytest.mark.parametrize("compressed", [True, False])
def test_wif_written_by_bitcointx(chain: str, compressed: bool) -> None:
    with ChainParams(chain):
        wif = str(CBitcoinKey.from_secret_bytes(SECRET, compressed=compressed))
    read = from_wif(wif)
    assert read.value == SECRET
    assert read.source == "wif"


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_keystore_written_by_eth_account(kdf: str) -> None:
    keystore = Account.encrypt(SECRET, "correct horse", kdf=kdf, iterations=2**12)
    data = json.dumps(keystore).encode()
    read = from_keystore(data, "correct horse")
    assert read.value == bytes(Account.decrypt(keystore, "correct horse"))
    assert _eth(read) == Account.from_key(SECRET).address
    with pytest.raises(ImportMaterialError, match="wrong password"):
        from_keystore(data, "wrong horse")


def test_mnemonic_paths_and_passphrase_match_eth_account_and_bip_utils() -> None:
    Account.enable_unaudited_hdwallet_features()
    default = from_mnemonic(MNEMONIC)
    assert default.path == "m/44'/60'/0'/0/0"
    assert _eth(default) == Account.from_mnemonic(MNEMONIC).address
    path = "m/44'/60'/3'/0/7"
    with_pass = from_mnemonic(MNEMONIC, "TREZOR", path)
    assert _eth(with_pass) == Account.from_mnemonic(MNEMONIC, "TREZOR", path).address
    assert with_pass.value != from_mnemonic(MNEMONIC, "", path).value
    bip84 = from_mnemonic(MNEMONIC, "", "m/84'/1'/0'/0/2")
    seed = Bip39SeedGenerator(MNEMONIC).Generate("")
    node = (
        Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET)
        .Purpose()
        .Coin()
        .Account(0)
        .Change(Bip44Changes.CHAIN_EXT)
        .AddressIndex(2)
    )
    assert bip84.value == node.PrivateKey().Raw().ToBytes()


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda: from_hex("12" * 31), "62 hex digits"),
        (lambda: from_hex("zz" * 32), "not hexadecimal"),
        (lambda: from_hex("00" * 32), "not a secp256k1 private key"),
        (lambda: from_hex("ff" * 32), "not a secp256k1 private key"),
        (
            lambda: from_wif("5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ"[:-1] + "K"),
            "checksum",
        ),
        (lambda: from_mnemonic(MNEMONIC.replace("about", "abandon")), "bad checksum"),
        (lambda: from_mnemonic(MNEMONIC.replace("about", "aboutx")), "word 12"),
        (lambda: from_mnemonic(MNEMONIC, path="m/44'/60'/0'"), "not a standard address path"),
        (lambda: from_mnemonic(MNEMONIC, path="m/0/1"), "not a standard address path"),
        (lambda: from_mnemonic(MNEMONIC, path="44'/60'"), "must start with 'm'"),
        (lambda: from_keystore(b"{}", "x"), "version 3"),
        (lambda: from_keystore(b"[", "x"), "not JSON"),
        (lambda: from_keystore(b"[]", "x"), "not a JSON object"),
    ],
)
def test_bad_input_names_the_defect_never_the_secret(read: object, message: str) -> None:
    with pytest.raises(ImportMaterialError, match=message) as caught:
        read()  # type: ignore[operator]
    for secret in ("abandon", "about", "12" * 31, SECRET.hex()):
        assert secret not in str(caught.value)


def test_keystore_with_expensive_kdf_is_refused_before_work() -> None:
    keystore = Account.encrypt(SECRET, "pw", kdf="scrypt", iterations=2**10)
    keystore["crypto"]["kdfparams"]["n"] = 2**30
    with pytest.raises(ImportMaterialError, match="out of bounds"):
        from_keystore(json.dumps(keystore).encode(), "pw")


def test_wrapped_key_opens_only_with_the_import_key_into_the_same_pkcs8_key() -> None:
    private = rsa.generate_private_key(65537, 3072)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    secret = from_hex(SECRET.hex())
    blob = wrap_for_import(secret, der)
    assert SECRET not in blob
    assert len(blob) == 384
    opened = serialization.load_der_private_key(private.decrypt(blob, OAEP), None)
    assert isinstance(opened, ec.EllipticCurvePrivateKey)
    assert opened.private_numbers().private_value == int.from_bytes(SECRET, "big")
    assert wrap_for_import(secret, der) != blob  # OAEP is randomized
    fingerprint = import_key_fingerprint(der)
    assert len(fingerprint.replace(":", "")) == 64
    assert fingerprint.count(":") == 15
    small = rsa.generate_private_key(65537, 2048).public_key()
    small_der = small.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ImportMaterialError, match="3072"):
        wrap_for_import(secret, small_der)
