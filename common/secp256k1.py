"""secp256k1 signature normalization: low-S, recovery id, verification.

SoftHSM's raw CKM_ECDSA returns r||s with about half of the s values in the
upper half of the curve order; Bitcoin (BIP62/BIP146) and Ethereum (EIP-2)
reject those. We flip s to n - s *before* finding the recovery id, because the
flip changes which of the two candidate points recovers the key.

Recovering the public key from (digest, r, s, v) and comparing it with the
key's known public key is also a full ECDSA verification: the recovered point
is the unique key for which the signature verifies under that recovery id.

normalize() runs once per signature in the HSM workers, so it calls
libsecp256k1 (coincurve's build) directly: recover, then compare with the
key's parsed point (parsed once per key), with no Python objects or encodings
in between; that halves its cost against coincurve's PublicKey wrappers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from coincurve import PublicKey
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

# Order of the secp256k1 group.
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = N // 2


class SignatureError(Exception):
    """A signature from the HSM did not verify against the key's public key."""


@dataclass(frozen=True, slots=True)
class RecoverableSignature:
    """A low-S secp256k1 signature with its recovery id (0 or 1)."""

    r: int
    s: int
    recovery_id: int

    def compact(self) -> bytes:
        """r||s, 64 bytes."""
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big")

    def rsv(self) -> bytes:
        """r||s||v with v the recovery id: Tron's and coincurve's layout."""
        return self.compact() + bytes([self.recovery_id])

    def der(self) -> bytes:
        """Strict DER (BIP66), as Bitcoin scripts carry it (without sighash byte)."""
        return _der_sequence(_der_integer(self.r) + _der_integer(self.s))


def _der_integer(value: int) -> bytes:
    body = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    if body[0] & 0x80:
        body = b"\x00" + body
    return b"\x02" + bytes([len(body)]) + body


def _der_sequence(body: bytes) -> bytes:
    return b"\x30" + bytes([len(body)]) + body


def uncompressed(public_key: bytes) -> bytes:
    """65-byte SEC1 uncompressed form of any SEC1 public key encoding."""
    return PublicKey(public_key).format(compressed=False)


def compressed(public_key: bytes) -> bytes:
    """33-byte SEC1 compressed form of any SEC1 public key encoding."""
    return PublicKey(public_key).format(compressed=True)


def normalize(raw: bytes, digest: bytes, public_key: bytes) -> RecoverableSignature:
    """Turn a raw 64-byte r||s from CKM_ECDSA into a verified low-S recoverable signature.

    `public_key` is the key's 65-byte uncompressed SEC1 encoding. Raises
    SignatureError when no recovery id yields that key (a faulty HSM or a
    signature made by another key): such a signature must never leave.
    """
    if len(raw) != 64 or len(digest) != 32:
        raise SignatureError("raw signature must be 64 bytes over a 32-byte digest")
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:], "big")
    if not (0 < r < N and 0 < s < N):
        raise SignatureError("signature scalar out of range")
    if s > HALF_N:
        s = N - s
    compact = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    key = _parsed_key(public_key)
    ctx = GLOBAL_CONTEXT.ctx
    # Per call, not shared: cffi releases the GIL inside each libsecp256k1 call.
    signature = ffi.new("secp256k1_ecdsa_recoverable_signature *")
    recovered = ffi.new("secp256k1_pubkey *")
    for recovery_id in (0, 1):
        if (
            lib.secp256k1_ecdsa_recoverable_signature_parse_compact(
                ctx, signature, compact, recovery_id
            )
            and lib.secp256k1_ecdsa_recover(ctx, recovered, signature, digest)
            and lib.secp256k1_ec_pubkey_cmp(ctx, recovered, key) == 0
        ):
            return RecoverableSignature(r, s, recovery_id)
    # Recovery ids 2 and 3 need r >= n - p, probability ~2^-128: treat as failure.
    raise SignatureError("signature does not verify against the key's public key")


@lru_cache(maxsize=4096)
def _parsed_key(public_key: bytes) -> Any:
    """libsecp256k1's parsed form of a 65-byte uncompressed key (only read once made)."""
    parsed = ffi.new("secp256k1_pubkey *")
    # Only the uncompressed encoding, as before: it alone equals a recovered key's.
    if (
        len(public_key) != 65
        or public_key[0] != 4
        or not lib.secp256k1_ec_pubkey_parse(GLOBAL_CONTEXT.ctx, parsed, public_key, 65)
    ):
        raise SignatureError("the key's public key is not a 65-byte uncompressed point")
    return parsed


def _der_scalars(der: bytes) -> tuple[int, int] | None:
    """(r, s) of a DER signature encoded exactly as der() would encode it, else None."""
    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2 or der[2] != 0x02:
        return None
    r_end = 4 + der[3]
    if r_end + 2 > len(der) or der[r_end] != 0x02 or r_end + 2 + der[r_end + 1] != len(der):
        return None
    r = int.from_bytes(der[4:r_end], "big")
    s = int.from_bytes(der[r_end + 2 :], "big")
    # Re-encoding rejects every non-canonical form (padding, negative values): BIP66.
    if _der_sequence(_der_integer(r) + _der_integer(s)) != der:
        return None
    return r, s


def verify_der(der: bytes, digest: bytes, public_key: bytes) -> bool:
    """Whether `der` is a strict-DER (BIP66), low-S signature of `digest` by `public_key`.

    For signatures made elsewhere (a cosigner's), which the service must not
    take on trust: anything malformed, high-S or out of range is simply False.
    """
    scalars = _der_scalars(der)
    if scalars is None or len(digest) != 32:
        return False
    r, s = scalars
    if not (0 < r < N and 0 < s <= HALF_N):
        return False
    try:
        return bool(PublicKey(public_key).verify(der, digest, hasher=None))
    except Exception:  # noqa: BLE001 - coincurve raises bare Exception on a bad point
        return False
