"""HD signing through a real SoftHSM token (hsm.hd): seeds sealed under a token AES key,
children derived in a worker, imported as session objects for one C_Sign, destroyed.

Every signature is checked by second implementations: eth-keys recovers the
signer and eth-account derives the address from the mnemonic; python-bitcointx
verifies the DER signature; bip-utils derives the expected public key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from bip_utils import Bip44Changes, Bip84, Bip84Coins
from bitcointx.core.key import CPubKey
from eth_account import Account
from eth_keys import keys
from pkcs11 import Attribute, ObjectClass

from custos.common.secp256k1 import RecoverableSignature
from custos.hsm import hd
from custos.hsm.bip32 import DerivationError, master_key
from custos.hsm.bip39 import mnemonic_to_seed
from custos.hsm.errors import HsmUnavailable
from custos.hsm.hd_paths import PathNotAllowed
from custos.hsm.pkcs11_token import Pkcs11Token
from custos.hsm.pool import SigningPool
from custos.signer.chains import evm
from custos.signer.chains.hd import derive_addresses
from tests.conftest import SOFTHSM_LIBRARY, DevEnv

pytestmark = pytest.mark.integration

SEAL_KEY = "hd-seal-test"
VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "bip84_bip49.json").read_text())
TEST_MNEMONIC = "test test test test test test test test test test test junk"


@pytest.fixture(scope="module")
def pool(dev_env: DevEnv) -> Iterator[SigningPool]:
    pool = SigningPool(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin(), workers=2)
    pool.ensure_aes_key(SEAL_KEY)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def token(dev_env: DevEnv) -> Pkcs11Token:
    return Pkcs11Token(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin())


def _imported(pool: SigningPool, seed: bytes, wallet: bytes) -> hd.SealedSeed:
    # What an import ceremony will do once the seed reached a worker: seal it.
    return hd.SealedSeed(SEAL_KEY, pool.seal(SEAL_KEY, seed, wallet), wallet)


def test_generated_seed_signs_for_ethereum_verified_by_eth_keys(pool: SigningPool) -> None:
    seed = pool.hd_create_seed(SEAL_KEY, b"wallet:gen-1")
    assert len(seed.sealed) == 12 + 64 + 16  # nonce, BIP39 seed, GCM tag: nothing else
    account = pool.hd_account_key(seed, "ethereum", "mainnet", "m/44'/60'/0'")
    assert account.depth == 3
    derived = derive_addresses(
        account.serialize(), "ethereum", "mainnet", "m/44'/60'/0'", start=0, count=3
    )
    digests = [hashlib.sha256(f"tx {i}".encode()).digest() for i in range(3)]
    requests = [
        hd.HdSignRequest(
            seed, "ethereum", "mainnet", d.path, digest, account.child(0).child(i).uncompressed()
        )
        for i, (d, digest) in enumerate(zip(derived, digests, strict=True))
    ]
    sigs = pool.hd_sign(requests)
    for d, digest, sig in zip(derived, digests, sigs, strict=True):
        recovered = keys.Signature(
            vrs=(sig.recovery_id, sig.r, sig.s)
        ).recover_public_key_from_msg_hash(digest)
        assert recovered.to_checksum_address() == d.address
    # Two generated seeds differ (the HSM's random generator, not a constant).
    other = pool.hd_create_seed(SEAL_KEY, b"wallet:gen-2")
    assert pool.hd_account_key(other, "ethereum", "mainnet", "m/44'/60'/0'") != account


def test_imported_mnemonic_signs_bip84_vector_key_verified_by_bitcointx(
    pool: SigningPool,
) -> None:
    case = VECTORS["bip84"]
    seed = _imported(pool, mnemonic_to_seed(case["mnemonic"]), b"wallet:bip84")
    account = pool.hd_account_key(seed, "bitcoin", "mainnet", case["account_path"])
    assert account.serialize("zpub") == case["account_xpub"]
    entry = case["addresses"][0]
    expected = bytes.fromhex(entry["pubkey"])
    # bip-utils, from the mnemonic on its own.
    theirs = (
        Bip84.FromSeed(mnemonic_to_seed(case["mnemonic"]), Bip84Coins.BITCOIN)
        .Purpose()
        .Coin()
        .Account(0)
        .Change(Bip44Changes.CHAIN_EXT)
        .AddressIndex(0)
    )
    assert theirs.PublicKey().RawCompressed().ToBytes() == expected
    digest = hashlib.sha256(b"a bitcoin sighash").digest()
    public = account.child(0).child(0)
    assert public.key == expected
    (sig,) = pool.hd_sign(
        [hd.HdSignRequest(seed, "bitcoin", "mainnet", entry["path"], digest, public.uncompressed())]
    )
    assert CPubKey(expected).verify(digest, sig.der())


def test_eth_account_from_mnemonic_agrees_with_hsm_signature(pool: SigningPool) -> None:
    Account.enable_unaudited_hdwallet_features()
    seed = _imported(pool, mnemonic_to_seed(TEST_MNEMONIC, "pp"), b"wallet:eth")
    path = "m/44'/60'/3'/0/9"
    expected = Account.from_mnemonic(TEST_MNEMONIC, "pp", account_path=path)
    public = master_key(mnemonic_to_seed(TEST_MNEMONIC, "pp")).derive(path).public()
    assert evm.key_address(public.uncompressed()) == expected.address
    digest = hashlib.sha256(b"an evm signing hash").digest()
    (sig,) = pool.hd_sign(
        [hd.HdSignRequest(seed, "bsc", "mainnet", path, digest, public.uncompressed())]
    )
    recovered = keys.Signature(
        vrs=(sig.recovery_id, sig.r, sig.s)
    ).recover_public_key_from_msg_hash(digest)
    assert recovered.to_checksum_address() == expected.address


def test_refusals_sign_nothing(pool: SigningPool) -> None:
    seed = _imported(pool, mnemonic_to_seed(TEST_MNEMONIC), b"wallet:refuse")
    digest = bytes(range(32))
    right = master_key(mnemonic_to_seed(TEST_MNEMONIC)).derive("m/44'/195'/0'/0/0").public()
    wrong = master_key(mnemonic_to_seed(TEST_MNEMONIC)).derive("m/44'/195'/0'/0/1").public()

    def attempt(**change: Any) -> None:
        fields: dict[str, Any] = {
            "seed": seed,
            "chain": "tron",
            "network": "mainnet",
            "path": "m/44'/195'/0'/0/0",
            "digest": digest,
            "public_key": right.uncompressed(),
        }
        fields.update(change)
        pool.hd_sign([hd.HdSignRequest(**fields)])

    attempt()  # the baseline signs
    with pytest.raises(HsmUnavailable, match="not the expected key"):
        attempt(public_key=wrong.uncompressed())
    with pytest.raises(HsmUnavailable, match="does not unseal"):
        attempt(seed=hd.SealedSeed(SEAL_KEY, seed.sealed, b"wallet:other"))
    tampered = bytearray(seed.sealed)
    tampered[20] ^= 1
    with pytest.raises(HsmUnavailable, match="does not unseal"):
        attempt(seed=hd.SealedSeed(SEAL_KEY, bytes(tampered), seed.aad))
    with pytest.raises(PathNotAllowed, match="m/44'/60'/0'/0/0 is not allowed for tron"):
        attempt(path="m/44'/60'/0'/0/0")
    with pytest.raises(DerivationError, match="signs nothing"):
        attempt(path="m/44'/195'/0'")
    with pytest.raises(PathNotAllowed, match="account level"):
        pool.hd_account_key(seed, "tron", "mainnet", "m/44'/195'")
    # The pool still works after the refusals (no worker left out of step).
    attempt()
    # No refusal message carries the seed, a private key or a word of the mnemonic.
    messages = []
    for change in (
        {"public_key": wrong.uncompressed()},
        {"seed": hd.SealedSeed(SEAL_KEY, seed.sealed, b"wallet:other")},
        {"path": "m/44'/60'/0'/0/0"},
    ):
        with pytest.raises(Exception) as info:  # noqa: PT011 - each checked above
            attempt(**change)
        messages.append(repr(info.value) + str(info.value.__cause__))
    plain = mnemonic_to_seed(TEST_MNEMONIC)
    private = master_key(plain).derive("m/44'/195'/0'/0/0").key
    for text in messages:
        for secret in (plain.hex(), private.hex(), plain.hex()[:16], private.hex()[:16]):
            assert secret not in text
        assert "junk" not in text


def test_session_key_is_sensitive_and_gone_after_signing(
    token: Pkcs11Token, monkeypatch: pytest.MonkeyPatch
) -> None:
    token.ensure_aes_key(SEAL_KEY)
    session = token._session
    seen: list[dict[str, Any]] = []
    create = session.create_object

    def recording_create(attrs: dict[Any, Any]) -> Any:
        obj = create(attrs)
        seen.append(
            {
                "token": obj[Attribute.TOKEN],
                "sensitive": obj[Attribute.SENSITIVE],
                "extractable": obj[Attribute.EXTRACTABLE],
                "always_sensitive": obj[Attribute.ALWAYS_SENSITIVE],
            }
        )
        with pytest.raises(pkcs11.PKCS11Error):
            obj[Attribute.VALUE]  # sensitive: the token never gives the value back
        return obj

    class Recording:
        # python-pkcs11's Session is a C type whose methods cannot be patched.
        def __getattr__(self, name: str) -> Any:
            return recording_create if name == "create_object" else getattr(session, name)

    monkeypatch.setattr(token, "_session", Recording())
    plain = mnemonic_to_seed(TEST_MNEMONIC)
    sealed = (SEAL_KEY, token.seal(SEAL_KEY, plain, b"w"), b"w")
    path = "m/84'/0'/0'/0/4"
    public = master_key(plain).derive(path).public()
    digest = hashlib.sha256(b"x").digest()
    before = len(list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})))
    ((r, s, _v),) = hd.sign(
        token, [(sealed, "bitcoin", "mainnet", path, digest, public.uncompressed())]
    )
    assert seen == [
        {"token": False, "sensitive": True, "extractable": False, "always_sensitive": False}
    ]
    after = len(list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})))
    assert after == before  # destroyed, not left in the session
    assert CPubKey(public.key).verify(digest, _der(r, s))


def _der(r: int, s: int) -> bytes:
    return RecoverableSignature(r, s, 0).der()


def test_wipe_overwrites_fresh_buffers() -> None:
    secret = hashlib.sha512(b"seed").digest()
    hd.wipe(secret)
    assert secret == bytes(64)
    buf = bytearray(b"abc")
    hd.wipe(buf)
    assert buf == bytearray(3)
    one = b"\x07"
    hd.wipe(one)  # a shared singleton: left alone
    assert one == b"\x07"
