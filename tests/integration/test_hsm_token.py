"""The PKCS#11 key store against a real SoftHSM2 token."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pkcs11
import pytest
from coincurve import PublicKey
from pkcs11 import Attribute, ObjectClass

from custos.common.secp256k1 import HALF_N, RecoverableSignature
from custos.hsm.errors import KeyExists, KeyNotFound
from custos.hsm.keystore import SignRequest
from custos.hsm.pkcs11_token import Pkcs11Token
from custos.hsm.pool import SigningPool
from tests.conftest import SOFTHSM_LIBRARY, DevEnv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def token(dev_env: DevEnv) -> Pkcs11Token:
    # Shares the process-wide login with the in-process server fixture if it runs.
    return Pkcs11Token(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin())


def test_generated_key_is_sensitive_and_extractable_only_wrapped(token: Pkcs11Token) -> None:
    public = token.generate_secp256k1("attr-check")
    assert len(public) == 65
    assert public[0] == 4
    assert token.public_key("attr-check") == public
    private = token._find(ObjectClass.PRIVATE_KEY, b"attr-check")
    assert private[Attribute.SENSITIVE] is True
    # Extractable so that it can be backed up (hsm.backup_file), never readable.
    assert private[Attribute.EXTRACTABLE] is True
    assert private[Attribute.ALWAYS_SENSITIVE] is True
    assert private[Attribute.TOKEN] is True
    assert private[Attribute.ID] == b"attr-check"
    with pytest.raises(pkcs11.PKCS11Error):
        private[Attribute.VALUE]
    with pytest.raises(KeyExists):
        token.generate_secp256k1("attr-check")
    with pytest.raises(KeyNotFound):
        token.public_key("no-such-key")


def test_concurrent_threads_on_one_token_do_not_crash(token: Pkcs11Token) -> None:
    public = token.generate_secp256k1("thread-check")
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(400)]
    with ThreadPoolExecutor(8) as pool:
        raws = list(pool.map(lambda d: token.sign_raw("thread-check", d), digests))
    for digest, raw in zip(digests, raws, strict=True):
        assert any(
            PublicKey.from_signature_and_message(raw + bytes([v]), digest, hasher=None).format(
                compressed=False
            )
            == public
            for v in (0, 1)
            if _recoverable(raw, v, digest)
        )


def _recoverable(raw: bytes, v: int, digest: bytes) -> bool:
    try:
        PublicKey.from_signature_and_message(raw + bytes([v]), digest, hasher=None)
    except Exception:  # noqa: BLE001
        return False
    return True


def test_pool_signs_low_s_verified_signatures_in_order(dev_env: DevEnv, token: Pkcs11Token) -> None:
    public = token.generate_secp256k1("pool-check")
    pool = SigningPool(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin(), workers=2)
    try:
        digests = [hashlib.sha256(str(i).encode()).digest() for i in range(200)]
        sigs = pool.sign([SignRequest("pool-check", d, public) for d in digests])
        assert len(sigs) == 200
        for digest, sig in zip(digests, sigs, strict=True):
            assert sig.s <= HALF_N
            recovered = PublicKey.from_signature_and_message(sig.rsv(), digest, hasher=None)
            assert recovered.format(compressed=False) == public
    finally:
        pool.close()


def test_keys_survive_a_new_process_login(dev_env: DevEnv, token: Pkcs11Token) -> None:
    public = token.generate_secp256k1("persist-check")
    script = textwrap.dedent(
        f"""
        from custos.hsm.pkcs11_token import Pkcs11Token
        t = Pkcs11Token({SOFTHSM_LIBRARY!r}, "custos-dev", open({str(dev_env.dir / "hsm.pin")!r}).read())
        print(t.public_key("persist-check").hex())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"SOFTHSM2_CONF": str(dev_env.dir / "softhsm2.conf"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == public.hex()


def test_aes_gcm_seal_binds_the_aad_and_ed25519_signs(token: Pkcs11Token) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from custos.hsm.errors import HsmUnavailable

    token.ensure_aes_key("wrap-check")
    sealed = token.seal("wrap-check", b"totp secret", b"CN=alice")
    assert b"totp secret" not in sealed
    assert token.unseal("wrap-check", sealed, b"CN=alice") == b"totp secret"
    with pytest.raises(HsmUnavailable):
        token.unseal("wrap-check", sealed, b"CN=mallory")  # bound to its identity
    with pytest.raises(KeyNotFound):
        token.ed25519_public_key("ed-check")  # a lookup never creates the key
    public = token.ensure_ed25519("ed-check")
    assert token.ensure_ed25519("ed-check") == public  # created once
    assert token.ed25519_public_key("ed-check") == public
    signature = token.sign_eddsa("ed-check", b"checkpoint body")
    Ed25519PublicKey.from_public_bytes(public).verify(signature, b"checkpoint body")


def _assert_verified(sigs: list[RecoverableSignature], digests: list[bytes], public: bytes) -> None:
    assert len(sigs) == len(digests)
    for digest, sig in zip(digests, sigs, strict=True):
        assert sig.s <= HALF_N
        recovered = PublicKey.from_signature_and_message(sig.rsv(), digest, hasher=None)
        assert recovered.format(compressed=False) == public


def test_pool_batches_signed_concurrently_come_back_whole_and_in_order(
    dev_env: DevEnv, token: Pkcs11Token
) -> None:
    # Batches share the workers chunk by chunk (a worker with no chunk left
    # serves another batch at once): none may get another's signatures.
    publics = [token.generate_secp256k1(f"share-check-{n}") for n in range(4)]
    pool = SigningPool(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin(), workers=2)
    try:
        plans = [
            [hashlib.sha256(f"{n}-{i}".encode()).digest() for i in range(size)]
            for n, size in enumerate((1, 37, 100, 64))
        ]

        def sign(n: int) -> list[RecoverableSignature]:
            return pool.sign([SignRequest(f"share-check-{n}", d, publics[n]) for d in plans[n]])

        with ThreadPoolExecutor(4) as threads:
            for _round in range(3):
                for n, sigs in enumerate(threads.map(sign, range(4))):
                    _assert_verified(sigs, plans[n], publics[n])
    finally:
        pool.close()


def test_pool_error_in_one_chunk_leaves_no_reply_behind(
    dev_env: DevEnv, token: Pkcs11Token
) -> None:
    # A missing key in the middle of a batch fails the batch; the chunks already
    # sent are answered before it returns, so the next batch pairs its own replies.
    public = token.generate_secp256k1("drain-check")
    pool = SigningPool(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin(), workers=2)
    try:
        digests = [hashlib.sha256(str(i).encode()).digest() for i in range(100)]
        requests = [SignRequest("drain-check", d, public) for d in digests]
        requests[50] = SignRequest("no-such-key", digests[50], public)
        with pytest.raises(KeyNotFound):
            pool.sign(requests)
        sigs = pool.sign([SignRequest("drain-check", d, public) for d in digests])
        _assert_verified(sigs, digests, public)
        pool.ping()  # every worker still answers in step
    finally:
        pool.close()
