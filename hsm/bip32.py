"""BIP32 hierarchical deterministic keys on secp256k1: pure curve math, no HSM access.

PKCS#11 has no standard BIP32 mechanism, so where the HSM cannot derive, the
HSM worker (hsm.hd) runs this code on a seed it has just unsealed. Nothing here
logs, and no error message carries key material: errors name paths, versions
and positions only.

Extended keys are (de)serialized with the SLIP-132 version bytes so that an
account-level public key says which addresses it makes: xpub (BIP44, P2PKH),
ypub (BIP49, P2SH-P2WPKH), zpub (BIP84, P2WPKH), and their testnet forms.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Final

from coincurve import PrivateKey, PublicKey
from Crypto.Hash import RIPEMD160

HARDENED: Final = 0x80000000
# Order of the secp256k1 group.
N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_DEPTH: Final = 255
_B58: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class DerivationError(ValueError):
    """A seed, path or extended key cannot be used; the message names which and why."""


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """The version bytes of one family of extended keys (BIP32, SLIP-132)."""

    name: str  # the prefix of the public form: xpub, ypub, zpub, tpub, upub, vpub
    public: int
    private: int
    mainnet: bool
    script: str  # p2pkh | p2sh-p2wpkh | p2wpkh: the addresses the family makes


VERSIONS: Final[dict[str, KeyVersion]] = {
    v.name: v
    for v in (
        KeyVersion("xpub", 0x0488B21E, 0x0488ADE4, True, "p2pkh"),
        KeyVersion("ypub", 0x049D7CB2, 0x049D7878, True, "p2sh-p2wpkh"),
        KeyVersion("zpub", 0x04B24746, 0x04B2430C, True, "p2wpkh"),
        KeyVersion("tpub", 0x043587CF, 0x04358394, False, "p2pkh"),
        KeyVersion("upub", 0x044A5262, 0x044A4E28, False, "p2sh-p2wpkh"),
        KeyVersion("vpub", 0x045F1CF6, 0x045F18BC, False, "p2wpkh"),
    )
}
_BY_PUBLIC: Final = {v.public: v for v in VERSIONS.values()}
_BY_PRIVATE: Final = {v.private: v for v in VERSIONS.values()}


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data)), as signer.chains.bitcoin_address computes it."""
    sha = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", sha).digest()
    except ValueError:  # OpenSSL 3 builds without the legacy provider
        return RIPEMD160.new(sha).digest()


def _b58check_encode(payload: bytes) -> str:
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(_B58[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def _b58check_decode(text: str) -> bytes:
    if len(text) > 120:  # an extended key has 111 characters; bounds the big-int work
        raise DerivationError(f"extended key too long ({len(text)} characters)")
    number = 0
    for position, char in enumerate(text):
        digit = _B58.find(char)
        if digit < 0:
            raise DerivationError(f"extended key: invalid base58 character at position {position}")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    data = b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
    payload, checksum = data[:-4], data[-4:]
    if len(data) < 5 or hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        raise DerivationError("extended key: bad base58check checksum")
    return payload


# ---- paths -------------------------------------------------------------------


def parse_path(text: str) -> tuple[int, ...]:
    """`m/44'/0'/0'/0/7` (or with h/H for hardened) as child numbers; DerivationError if bad."""
    parts = text.strip().split("/")
    if parts[0] != "m":
        raise DerivationError(f"derivation path {text!r} must start with 'm'")
    if len(parts) - 1 > MAX_DEPTH:
        raise DerivationError(f"derivation path {text!r} is deeper than {MAX_DEPTH}")
    out = []
    for part in parts[1:]:
        hardened = part[-1:] in ("'", "h", "H")
        digits = part[:-1] if hardened else part
        # isdecimal() and ascii: no '+1', ' 1', nor the non-ASCII digits int() accepts.
        if not (digits.isascii() and digits.isdecimal()) or (len(digits) > 1 and digits[0] == "0"):
            raise DerivationError(f"derivation path {text!r}: {part!r} is not a child index")
        index = int(digits)
        if index >= HARDENED:
            raise DerivationError(f"derivation path {text!r}: index {digits} is 2^31 or more")
        out.append(index + HARDENED if hardened else index)
    return tuple(out)


def format_path(indexes: tuple[int, ...]) -> str:
    """The canonical text of a path: hardened steps with an apostrophe."""
    steps = [f"{i - HARDENED}'" if i >= HARDENED else str(i) for i in indexes]
    return "/".join(["m", *steps])


# ---- keys ----------------------------------------------------------------------


def _point(private_key: bytes) -> bytes:
    return PrivateKey(private_key).public_key.format(compressed=True)


@dataclass(frozen=True, slots=True)
class ExtendedPublicKey:
    """A compressed public key with its chain code and place in the tree."""

    key: bytes  # 33-byte compressed SEC1
    chain_code: bytes
    depth: int = 0
    parent_fingerprint: bytes = bytes(4)
    child_number: int = 0

    @property
    def fingerprint(self) -> bytes:
        return hash160(self.key)[:4]

    def uncompressed(self) -> bytes:
        """65-byte uncompressed SEC1, the form hsm.keystore and the chain adapters take."""
        return PublicKey(self.key).format(compressed=False)

    def child(self, index: int) -> ExtendedPublicKey:
        """CKDpub: only normal (non-hardened) children derive from a public key."""
        if not 0 <= index < HARDENED:
            raise DerivationError(f"a public key derives no hardened child (index {index})")
        if self.depth >= MAX_DEPTH:
            raise DerivationError(f"extended keys are at most {MAX_DEPTH} deep")
        digest = hmac.digest(self.chain_code, self.key + index.to_bytes(4, "big"), "sha512")
        tweak, chain_code = digest[:32], digest[32:]
        if int.from_bytes(tweak, "big") >= N:
            raise DerivationError(f"child {index} is invalid (BIP32: use the next index)")
        try:
            child = PublicKey(self.key).add(tweak)
        except ValueError as exc:  # the point at infinity
            raise DerivationError(f"child {index} is invalid (BIP32: use the next index)") from exc
        return ExtendedPublicKey(
            child.format(compressed=True), chain_code, self.depth + 1, self.fingerprint, index
        )

    def derive(self, path: str | tuple[int, ...]) -> ExtendedPublicKey:
        """Descendant along a relative path of normal steps (`m/0/5` or (0, 5))."""
        key = self
        for index in parse_path(path) if isinstance(path, str) else path:
            key = key.child(index)
        return key

    def serialize(self, version: str = "xpub") -> str:
        """Base58check extended public key with the version family `version` (xpub, zpub, ...)."""
        if version not in VERSIONS:
            raise DerivationError(f"unknown extended key version {version!r}")
        return _b58check_encode(self._payload(VERSIONS[version].public, self.key))

    def _payload(self, version: int, key: bytes) -> bytes:
        return (
            version.to_bytes(4, "big")
            + bytes([self.depth])
            + self.parent_fingerprint
            + self.child_number.to_bytes(4, "big")
            + self.chain_code
            + key
        )


@dataclass(frozen=True, slots=True)
class ExtendedPrivateKey:
    """A private key with its chain code and place in the tree. repr() shows no secret."""

    key: bytes = field(repr=False)  # 32-byte scalar in 1..n-1
    chain_code: bytes = field(repr=False)
    depth: int = 0
    parent_fingerprint: bytes = bytes(4)
    child_number: int = 0

    def public(self) -> ExtendedPublicKey:
        return ExtendedPublicKey(
            _point(self.key),
            self.chain_code,
            self.depth,
            self.parent_fingerprint,
            self.child_number,
        )

    def child(self, index: int) -> ExtendedPrivateKey:
        """CKDpriv: hardened when index >= 2^31."""
        if not 0 <= index < 2**32:
            raise DerivationError(f"child index {index} is out of range")
        if self.depth >= MAX_DEPTH:
            raise DerivationError(f"extended keys are at most {MAX_DEPTH} deep")
        parent_point = _point(self.key)
        data = b"\0" + self.key if index >= HARDENED else parent_point
        digest = hmac.digest(self.chain_code, data + index.to_bytes(4, "big"), "sha512")
        tweak = int.from_bytes(digest[:32], "big")
        scalar = (tweak + int.from_bytes(self.key, "big")) % N
        if tweak >= N or scalar == 0:
            raise DerivationError(f"child {index} is invalid (BIP32: use the next index)")
        return ExtendedPrivateKey(
            scalar.to_bytes(32, "big"),
            digest[32:],
            self.depth + 1,
            hash160(parent_point)[:4],
            index,
        )

    def derive(self, path: str | tuple[int, ...]) -> ExtendedPrivateKey:
        """Descendant along `path` (text from m, or child numbers) relative to this key."""
        key = self
        for index in parse_path(path) if isinstance(path, str) else path:
            key = key.child(index)
        return key

    def serialize(self, version: str = "xpub") -> str:
        """Base58check extended private key (xprv, zprv, ...) of the family named by its xpub."""
        if version not in VERSIONS:
            raise DerivationError(f"unknown extended key version {version!r}")
        public = self.public()
        return _b58check_encode(public._payload(VERSIONS[version].private, b"\0" + self.key))


def master_key(seed: bytes | bytearray) -> ExtendedPrivateKey:
    """BIP32 master key of a 16- to 64-byte seed."""
    if not 16 <= len(seed) <= 64:
        raise DerivationError(f"a BIP32 seed has 16 to 64 bytes, not {len(seed)}")
    digest = hmac.digest(b"Bitcoin seed", bytes(seed), "sha512")
    if not 0 < int.from_bytes(digest[:32], "big") < N:
        raise DerivationError("this seed makes no valid master key (BIP32)")
    return ExtendedPrivateKey(digest[:32], digest[32:])


def parse_extended_key(text: str) -> tuple[ExtendedPublicKey | ExtendedPrivateKey, KeyVersion]:
    """Decode and validate an extended key (all the checks of BIP32 test vector 5)."""
    payload = _b58check_decode(text.strip())
    if len(payload) != 78:
        raise DerivationError(f"extended key has {len(payload)} bytes, not 78")
    version = int.from_bytes(payload[:4], "big")
    depth, parent, child_number = payload[4], payload[5:9], int.from_bytes(payload[9:13], "big")
    chain_code, key = payload[13:45], payload[45:]
    if depth == 0 and (parent != bytes(4) or child_number != 0):
        raise DerivationError("extended key of depth 0 has a parent fingerprint or child number")
    if version in _BY_PRIVATE:
        if key[0] != 0:
            raise DerivationError("extended private key: key data does not start with 0x00")
        if not 0 < int.from_bytes(key[1:], "big") < N:
            raise DerivationError("extended private key: private key not in 1..n-1")
        prv = ExtendedPrivateKey(key[1:], chain_code, depth, parent, child_number)
        return prv, _BY_PRIVATE[version]
    if version in _BY_PUBLIC:
        if key[0] not in (2, 3):
            raise DerivationError("extended public key: key data is not a compressed point")
        try:
            PublicKey(key)
        except ValueError as exc:
            raise DerivationError("extended public key: not a point on secp256k1") from exc
        return ExtendedPublicKey(key, chain_code, depth, parent, child_number), _BY_PUBLIC[version]
    raise DerivationError(f"unknown extended key version 0x{version:08x}")


def parse_extended_public_key(text: str) -> tuple[ExtendedPublicKey, KeyVersion]:
    """An extended public key (watch-only); an extended private key is refused, not converted."""
    key, version = parse_extended_key(text)
    if not isinstance(key, ExtendedPublicKey):
        raise DerivationError("an extended private key was given where a public one is expected")
    return key, version
