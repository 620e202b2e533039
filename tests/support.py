"""Helpers shared by tests: an in-memory signer for pure unit tests of chain adapters."""

from __future__ import annotations

from coincurve import PrivateKey

from hsm.secp256k1 import RecoverableSignature, normalize
from signer.chains.base import KeyInfo


class LocalKey:
    """A private key held in memory (pure unit tests only; the service uses the HSM)."""

    def __init__(self, secret: bytes, key_id: str = "test-key") -> None:
        self._private = PrivateKey(secret)
        self.info = KeyInfo(key_id, self._private.public_key.format(compressed=False))

    def sign(self, digest: bytes) -> RecoverableSignature:
        # RFC 6979 deterministic nonce, so published vectors reproduce byte for byte.
        raw = self._private.sign_recoverable(digest, hasher=None)[:64]
        return normalize(raw, digest, self.info.public_key)
