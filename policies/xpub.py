"""Extended public keys for watch-only wallets: parsing and public child derivation.

Policy imports nothing from hsm/ (tests/unit/test_policy_document.py holds it
to that), so this is a small second copy of the public half of hsm.bip32:
SLIP-132 versions, the BIP32 checks of a serialized key, and CKDpub.
tests/unit/test_watch_only.py checks it against bip-utils and hsm.bip32.
Only public keys are accepted: a private key (xprv, yprv, ...) is refused,
never converted, and no error carries key material.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

from coincurve import PublicKey

from custos.policies.accounts import base58check_decode

_HARDENED: Final = 0x80000000
_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class XpubError(ValueError):
    """An extended key that cannot be a watch-only wallet's; the message says why."""


@dataclass(frozen=True, slots=True)
class Version:
    name: str  # xpub, ypub, zpub, tpub, upub, vpub
    mainnet: bool
    script: str  # p2pkh | p2sh-p2wpkh | p2wpkh (SLIP-132)


_PUBLIC: Final = {
    0x0488B21E: Version("xpub", True, "p2pkh"),
    0x049D7CB2: Version("ypub", True, "p2sh-p2wpkh"),
    0x04B24746: Version("zpub", True, "p2wpkh"),
    0x043587CF: Version("tpub", False, "p2pkh"),
    0x044A5262: Version("upub", False, "p2sh-p2wpkh"),
    0x045F1CF6: Version("vpub", False, "p2wpkh"),
}
_PRIVATE: Final = frozenset(
    {0x0488ADE4, 0x049D7878, 0x04B2430C, 0x04358394, 0x044A4E28, 0x045F18BC}
)


@dataclass(frozen=True, slots=True)
class Xpub:
    key: bytes  # 33-byte compressed SEC1
    chain_code: bytes
    version: Version

    def child(self, index: int) -> Xpub | None:
        """CKDpub of a normal child; None for the (p < 2^-127) invalid one BIP32 skips."""
        if not 0 <= index < _HARDENED:
            raise XpubError(f"a public key derives no hardened child (index {index})")
        digest = hmac.digest(self.chain_code, self.key + index.to_bytes(4, "big"), "sha512")
        if int.from_bytes(digest[:32], "big") >= _N:
            return None
        try:
            point = PublicKey(self.key).add(digest[:32])
        except ValueError:  # the point at infinity
            return None
        return Xpub(point.format(compressed=True), digest[32:], self.version)


def parse_xpub(text: str) -> Xpub:
    """A serialized extended public key, checked as BIP32 test vector 5 checks it."""
    payload = base58check_decode(text.strip())
    if payload is None:
        raise XpubError("extended key is not base58check (a bad character or checksum)")
    if len(payload) != 78:
        raise XpubError(f"extended key has {len(payload)} bytes, not 78")
    version = int.from_bytes(payload[:4], "big")
    if version in _PRIVATE:
        raise XpubError("an extended private key was given; a watch-only wallet takes a public one")
    if version not in _PUBLIC:
        raise XpubError(f"unknown extended public key version 0x{version:08x}")
    depth, parent, child_number = payload[4], payload[5:9], payload[9:13]
    if depth == 0 and (parent != bytes(4) or child_number != bytes(4)):
        raise XpubError("extended key of depth 0 has a parent fingerprint or child number")
    key = payload[45:]
    if key[0] not in (2, 3):
        raise XpubError("extended public key: key data is not a compressed point")
    try:
        PublicKey(key)
    except ValueError:
        raise XpubError("extended public key: not a point on secp256k1") from None
    return Xpub(key, payload[13:45], _PUBLIC[version])


def uncompressed(key: bytes) -> bytes:
    """The 64-byte X||Y of a compressed key (EVM and Tron hash it for the account)."""
    return PublicKey(key).format(compressed=False)[1:]
