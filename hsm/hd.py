"""HD wallet keys in an HSM without a BIP32 mechanism: the seam and the SoftHSM way.

PKCS#11 has no standard BIP32 mechanism and SoftHSM has none. So a wallet's
BIP39 seed is kept sealed (AES-256-GCM) under an HSM-resident key, and for
one signature an HSM worker process

  1. unseals the seed (the AES key never leaves the token; the seed does, into
     this worker's memory),
  2. derives the child private key along an allowed path (hsm.hd_paths),
  3. checks that its public key is the one the caller expects,
  4. imports it into the token as a session object (CKA_TOKEN false,
     sensitive, non-extractable), signs through C_Sign, destroys the object,
  5. overwrites the seed, chain codes and private keys it holds in bytes.

What cannot be overwritten: Python integers made by the scalar additions of
step 2, the copies python-pkcs11 and coincurve make in C, and whatever the
allocator leaves behind. An attacker who can read a worker's memory during
(or shortly after) a derivation can learn the seed. The README's threat model
says so; an HSM with a vendor BIP32 mechanism removes the limit by
implementing `HdKeys` itself, so the seed never leaves the token.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from custos.common.secp256k1 import RecoverableSignature, SignatureError, normalize
from custos.hsm.bip32 import DerivationError, ExtendedPrivateKey, ExtendedPublicKey, master_key
from custos.hsm.bip39 import entropy_to_mnemonic, mnemonic_to_seed
from custos.hsm.errors import HsmError, HsmUnavailable
from custos.hsm.hd_paths import allowed_path

SEED_ENTROPY_BYTES = 32  # 24 words, 256 bits

# What crosses the pipe to a worker: plain tuples pickle fastest (hsm.pool).
HdJob = tuple[tuple[str, bytes, bytes], str, str, str, bytes, bytes]


class SeedMismatch(HsmError):
    """An imported seed unwraps, but is not the seed of the master public key named."""


@dataclass(frozen=True, slots=True)
class SealedSeed:
    """A BIP39 seed sealed under the token's AES key `seal_key_id`, bound to `aad`.

    `aad` names the wallet (its id and version, say): a sealed seed copied onto
    another wallet's record does not unseal there.
    """

    seal_key_id: str
    sealed: bytes = field(repr=False)
    aad: bytes

    def as_tuple(self) -> tuple[str, bytes, bytes]:
        return (self.seal_key_id, self.sealed, self.aad)


@dataclass(frozen=True, slots=True)
class HdSignRequest:
    """Sign `digest` with the key at `path` of a wallet, for `chain` on `network`."""

    seed: SealedSeed
    chain: str
    network: str
    path: str  # a full (depth 5) path allowed by hsm.hd_paths
    digest: bytes
    public_key: bytes  # the expected 65-byte uncompressed key (from the wallet's account key)


class HdKeys(Protocol):
    """What the service needs from the HSM for HD wallets. A backend with a vendor
    BIP32 mechanism implements this with the seed kept inside the token."""

    def hd_create_seed(self, seal_key_id: str, aad: bytes) -> SealedSeed:
        """A new seed from the HSM's random generator, sealed; it is never returned in clear."""
        ...

    def hd_account_key(
        self, seed: SealedSeed, chain: str, network: str, account_path: str
    ) -> ExtendedPublicKey:
        """The extended public key of an allowed account-level path (for watch-only use)."""
        ...

    def hd_sign(self, requests: Sequence[HdSignRequest]) -> list[RecoverableSignature]:
        """Verified low-S signatures, in request order."""
        ...


class SoftToken(Protocol):
    """The part of hsm.pkcs11_token.Pkcs11Token the worker side uses."""

    def random_bytes(self, size: int) -> bytes: ...

    def seal(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes: ...

    def unseal(self, key_id: str, sealed: bytes, aad: bytes) -> bytes: ...

    def sign_with_session_key(self, private_key: bytes, digest: bytes) -> bytes: ...

    def unwrap_seed(self, import_key_id: str, wrapped: bytes) -> bytes: ...


# ---- overwriting secrets -------------------------------------------------------

_BYTES_HEADER = sys.getsizeof(b"") - 1  # offset of the data in a CPython bytes object


def wipe(buffer: bytes | bytearray) -> None:
    """Overwrite a secret's bytes with zeros in place.

    A bytes object is immutable to Python but is only a buffer to C: this writes
    into CPython's object directly. Only for fresh objects nothing else shares
    (HMAC outputs, unsealed plaintexts); bytes of length 0 and 1 are shared
    singletons and are left alone.
    """
    if isinstance(buffer, bytearray):
        buffer[:] = bytes(len(buffer))
    elif type(buffer) is bytes and len(buffer) > 1 and sys.implementation.name == "cpython":
        ctypes.memset(id(buffer) + _BYTES_HEADER, 0, len(buffer))


def _derive(seed: bytes, steps: tuple[int, ...]) -> ExtendedPrivateKey:
    """The extended key at `steps`, overwriting every intermediate key and chain code."""
    key = master_key(seed)
    for index in steps:
        child = key.child(index)
        wipe(key.key)
        wipe(key.chain_code)
        key = child
    return key


def _unsealed_seed(token: SoftToken, seed: tuple[str, bytes, bytes]) -> bytes:
    seal_key_id, sealed, aad = seed
    try:
        return token.unseal(seal_key_id, sealed, aad)
    except HsmUnavailable as exc:
        # A wrong aad, a tampered or foreign sealed seed: GCM's tag does not verify.
        raise HsmUnavailable("the wallet's sealed seed does not unseal under its key") from exc


# ---- worker side (runs in an HSM worker process, see hsm.pool) -------------------


def create_seed(token: SoftToken, seal_key_id: str, aad: bytes) -> bytes:
    """Seal the BIP39 seed of a fresh 24-word mnemonic from the token's random generator."""
    entropy = token.random_bytes(SEED_ENTROPY_BYTES)
    mnemonic = entropy_to_mnemonic(entropy)
    seed = mnemonic_to_seed(mnemonic)
    try:
        return token.seal(seal_key_id, seed, aad)
    finally:
        wipe(entropy)
        wipe(seed)
        # The mnemonic is a str: CPython gives no safe way to overwrite it.
        del mnemonic


def import_seed(  # noqa: PLR0917 - the job's fields, as the pool sends them
    token: SoftToken,
    import_key_id: str,
    wrapped: bytes,
    master_public_key: bytes,
    seal_key_id: str,
    aad: bytes,
) -> bytes:
    """Seal an officer's seed, unwrapped from its RSA-OAEP blob, once it proves to be the
    seed of `master_public_key` (the compressed BIP32 master public key the officer's
    client computed and the approvers saw)."""
    seed = token.unwrap_seed(import_key_id, wrapped)
    try:
        if not 16 <= len(seed) <= 64:
            raise DerivationError(f"a BIP32 seed has 16 to 64 bytes, not {len(seed)}")
        master = master_key(seed)
        try:
            if master.public().key != master_public_key:
                # Another seed than the proposal named: seal nothing.
                raise SeedMismatch("the wrapped seed is not the seed of the master key named")
        finally:
            wipe(master.key)
            wipe(master.chain_code)
        return token.seal(seal_key_id, seed, aad)
    finally:
        wipe(seed)


def account_key(
    token: SoftToken, seed: tuple[str, bytes, bytes], chain: str, network: str, path: str
) -> tuple[bytes, bytes, int, bytes, int]:
    """The fields of the account-level extended public key at `path`."""
    hd = allowed_path(chain, network, path)
    if hd.change is not None:
        raise DerivationError(f"path {hd.text} is not an account-level path")
    plain = _unsealed_seed(token, seed)
    try:
        key = _derive(plain, hd.indexes)
    finally:
        wipe(plain)
    public = key.public()
    wipe(key.key)  # not the chain code: it is part of the public extended key
    return (
        public.key,
        public.chain_code,
        public.depth,
        public.parent_fingerprint,
        public.child_number,
    )


def sign(token: SoftToken, jobs: list[HdJob]) -> list[tuple[int, int, int]]:
    """Sign each job with its derived key, imported into the token for that one signature."""
    out = []
    for seed, chain, network, path, digest, public_key in jobs:
        hd = allowed_path(chain, network, path)
        if hd.change is None:
            raise DerivationError(f"path {hd.text} is an account, not a key: it signs nothing")
        plain = _unsealed_seed(token, seed)
        try:
            key = _derive(plain, hd.indexes)
        finally:
            wipe(plain)
        try:
            if key.public().uncompressed() != public_key:
                # The wrong wallet, seed or path: never sign with a key nobody expects.
                raise HsmUnavailable(f"the key derived at {hd.text} is not the expected key")
            raw = token.sign_with_session_key(key.key, digest)
        finally:
            wipe(key.key)
            wipe(key.chain_code)
        try:
            sig = normalize(raw, digest, public_key)
        except SignatureError as exc:
            raise HsmUnavailable(f"HSM returned an invalid signature at {hd.text}") from exc
        out.append((sig.r, sig.s, sig.recovery_id))
    return out
