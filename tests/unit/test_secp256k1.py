"""Low-S normalization and recovery ids, checked against coincurve (libsecp256k1)."""

from __future__ import annotations

import hashlib

import pytest
from coincurve import PrivateKey, PublicKey, verify_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.common.secp256k1 import HALF_N, N, SignatureError, normalize


def _high_s(raw: bytes) -> bytes:
    s = int.from_bytes(raw[32:], "big")
    return raw[:32] + (N - s).to_bytes(32, "big")


@settings(max_examples=200, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), message=st.binary())
def test_normalized_signature_is_low_s_and_recovers_the_key(secret: bytes, message: bytes) -> None:
    scalar = int.from_bytes(secret, "big")
    if not 0 < scalar < N:
        return
    key = PrivateKey(secret)
    public = key.public_key.format(compressed=False)
    digest = hashlib.sha256(message).digest()
    raw = key.sign_recoverable(digest, hasher=None)[:64]
    for variant in (raw, _high_s(raw)):  # what an HSM may return: either half
        sig = normalize(variant, digest, public)
        assert sig.s <= HALF_N
        recovered = PublicKey.from_signature_and_message(sig.rsv(), digest, hasher=None)
        assert recovered.format(compressed=False) == public
        # Second check through libsecp256k1's own DER verifier.
        assert verify_signature(sig.der(), digest, public, hasher=None)


def test_signature_from_another_key_is_refused() -> None:
    digest = hashlib.sha256(b"x").digest()
    raw = PrivateKey(b"\x01" * 32).sign_recoverable(digest, hasher=None)[:64]
    other = PrivateKey(b"\x02" * 32).public_key.format(compressed=False)
    with pytest.raises(SignatureError):
        normalize(raw, digest, other)


def test_signature_of_another_digest_is_refused_for_either_recovery_id() -> None:
    key = PrivateKey(b"\x03" * 32)
    public = key.public_key.format(compressed=False)
    ids = set()
    for n in range(16):  # both recovery ids turn up among these
        digest = hashlib.sha256(bytes([n])).digest()
        raw = key.sign_recoverable(digest, hasher=None)[:64]
        ids.add(normalize(raw, digest, public).recovery_id)
        with pytest.raises(SignatureError):
            normalize(raw, hashlib.sha256(b"other" + bytes([n])).digest(), public)
    assert ids == {0, 1}


@pytest.mark.parametrize("form", ["compressed", "truncated", "hybrid", "off-curve"])
def test_the_key_must_be_a_valid_uncompressed_point(form: str) -> None:
    key = PrivateKey(b"\x04" * 32)
    digest = hashlib.sha256(b"y").digest()
    raw = key.sign_recoverable(digest, hasher=None)[:64]
    public = key.public_key.format(compressed=False)
    bad = {
        "compressed": key.public_key.format(compressed=True),
        "truncated": public[:64],
        "hybrid": bytes([6 + (public[-1] & 1)]) + public[1:],
        "off-curve": public[:-1] + bytes([public[-1] ^ 1]),
    }[form]
    with pytest.raises(SignatureError):
        normalize(raw, digest, bad)
    assert normalize(raw, digest, public).r == int.from_bytes(raw[:32], "big")


@pytest.mark.parametrize("raw", [b"", b"\x00" * 64, b"\xff" * 64, b"\x01" * 63])
def test_malformed_raw_signatures_are_refused(raw: bytes) -> None:
    public = PrivateKey(b"\x01" * 32).public_key.format(compressed=False)
    with pytest.raises(SignatureError):
        normalize(raw, b"\x00" * 32, public)


def test_der_is_strict_and_minimal() -> None:
    from custos.common.secp256k1 import RecoverableSignature

    der = RecoverableSignature(r=0x80, s=1, recovery_id=0).der()
    # r needs a 0x00 pad because its top bit is set; s is one byte.
    assert der == bytes.fromhex("3007020200800201" + "01")
