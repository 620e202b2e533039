"""The narrow key store interface the service depends on.

Signing is the core ability; generation and public-key lookup are separate
protocols so that a backend (or a test double) provides only what it can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from custos.common.secp256k1 import RecoverableSignature


@dataclass(frozen=True, slots=True)
class SignRequest:
    """Sign `digest` (32 bytes, computed by the caller from a parsed transaction)."""

    key_id: str
    digest: bytes
    public_key: bytes  # 65-byte uncompressed SEC1: every signature is verified against it


class Signer(Protocol):
    """Produces verified low-S secp256k1 signatures, in request order."""

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]: ...


class KeyGenerator(Protocol):
    """Creates keys inside the token and reads their public halves."""

    def generate_secp256k1(self, key_id: str) -> bytes:
        """Create a persistent, sensitive, non-extractable key; return its public key."""
        ...

    def public_key(self, key_id: str) -> bytes:
        """The 65-byte uncompressed public key of an existing key."""
        ...


class KeyImporter(Protocol):
    """Holds an RSA import key and unwraps officers' encrypted keys under it (hsm.key_import)."""

    def create_import_key(self, key_id: str) -> bytes:
        """Generate the import key; its public key as DER SubjectPublicKeyInfo."""
        ...

    def import_key_public(self, key_id: str) -> bytes:
        """The import key's public key (DER); KeyNotFound if the token has none."""
        ...

    def unwrap_secp256k1(
        self,
        import_key_id: str,
        key_id: str,
        wrapped: bytes,
        public_key: bytes,
        *,
        dry_run: bool = False,
    ) -> None:
        """Unwrap `wrapped` into a sensitive, non-extractable signing key matching `public_key`.

        `dry_run`: only prove that it would (nothing is kept in the token).
        """
        ...

    def public_key(self, key_id: str) -> bytes:
        """The 65-byte uncompressed public key of an existing key."""
        ...
