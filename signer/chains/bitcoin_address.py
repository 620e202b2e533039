"""Bitcoin addresses: bech32/bech32m (BIP173, BIP350), base58check, and their scripts.

Written out here instead of using python-bitcoinlib's address classes because
those read the process-global `bitcoin.SelectParams`, which a server signing
for several networks at once on many threads cannot share. Every function
takes its network explicitly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from Crypto.Hash import RIPEMD160


class AddressError(ValueError):
    """An address is malformed, of an unsupported type, or for another network."""


@dataclass(frozen=True, slots=True)
class NetworkParams:
    """Address prefixes of one Bitcoin network."""

    hrp: str
    p2pkh_version: int
    p2sh_version: int


NETWORKS: Final[dict[str, NetworkParams]] = {
    "mainnet": NetworkParams("bc", 0x00, 0x05),
    "testnet": NetworkParams("tb", 0x6F, 0xC4),
    "signet": NetworkParams("tb", 0x6F, 0xC4),
    "regtest": NetworkParams("bcrt", 0x6F, 0xC4),
}

# Longer than any bech32 (90) or base58check (35) address; bounds the work an
# attacker-chosen string can cause in the base58 big-integer conversion.
MAX_ADDRESS_LENGTH: Final = 100

_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
BECH32_CONST: Final = 1
BECH32M_CONST: Final = 0x2BC830A3
_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def sha256d(data: bytes) -> bytes:
    """SHA256(SHA256(data)): txids, sighashes, base58check checksums."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data))."""
    sha = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", sha).digest()
    except ValueError:
        # OpenSSL 3.0.0-3.0.6 keep RIPEMD-160 in the legacy provider only, so
        # hashlib may not have it; pycryptodome (an eth-hash extra) always does.
        return RIPEMD160.new(sha).digest()


def p2pkh_script(pubkey_hash: bytes) -> bytes:
    """OP_DUP OP_HASH160 <20> OP_EQUALVERIFY OP_CHECKSIG."""
    return b"\x76\xa9\x14" + pubkey_hash + b"\x88\xac"


def p2wpkh_script(pubkey_hash: bytes) -> bytes:
    """OP_0 <20>."""
    return b"\x00\x14" + pubkey_hash


def p2pkh_address(public_key: bytes, network: str) -> str:
    """Base58check P2PKH address of a (compressed) SEC1 public key."""
    version = NETWORKS[network].p2pkh_version
    return b58check_encode(bytes([version]) + hash160(public_key))


def p2wpkh_address(public_key: bytes, network: str) -> str:
    """Bech32 P2WPKH address of a compressed SEC1 public key."""
    return encode_segwit(NETWORKS[network].hrp, 0, hash160(public_key))


# ---- base58check ---------------------------------------------------------


def b58check_encode(payload: bytes) -> str:
    """Base58 of payload || first 4 bytes of sha256d(payload)."""
    data = payload + sha256d(payload)[:4]
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(_B58_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def b58check_decode(text: str) -> bytes:
    """The payload of a base58check string; AddressError on any defect."""
    number = 0
    for char in text:
        digit = _B58_ALPHABET.find(char)
        if digit < 0:
            raise AddressError(f"invalid base58 character {char!r}")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    data = b"\0" * zeros + body
    if len(data) < 5:
        raise AddressError("base58check string too short")
    payload, checksum = data[:-4], data[-4:]
    if sha256d(payload)[:4] != checksum:
        raise AddressError("bad base58check checksum")
    return payload


# ---- bech32 / bech32m (reference algorithm of BIP173 and BIP350) ---------


def _polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_decode(text: str) -> tuple[str, list[int], int]:
    """Split a bech32/bech32m string into (hrp, 5-bit data without checksum, constant)."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise AddressError("character out of range")
    if text.lower() != text and text.upper() != text:
        raise AddressError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1:
        raise AddressError("missing separator or empty human-readable part")
    if pos + 7 > len(text):
        raise AddressError("checksum too short")
    if len(text) > 90:
        raise AddressError("longer than 90 characters")
    hrp = text[:pos]
    data = [_CHARSET.find(c) for c in text[pos + 1 :]]
    if -1 in data:
        raise AddressError("invalid bech32 data character")
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (BECH32_CONST, BECH32M_CONST):
        raise AddressError("bad bech32 checksum")
    return hrp, data[:-6], const


def bech32_encode(hrp: str, data: list[int], const: int) -> str:
    """hrp + "1" + data + checksum, lowercase."""
    poly = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ const
    checksum = [(poly >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out = []
    maxv = (1 << tobits) - 1
    max_acc = (1 << (frombits + tobits - 1)) - 1
    for value in data:
        acc = ((acc << frombits) | value) & max_acc
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits:
        raise AddressError("more than 4 padding bits")
    elif (acc << (tobits - bits)) & maxv:
        raise AddressError("non-zero padding bits")
    return out


def decode_segwit(address: str) -> tuple[str, int, bytes]:
    """(hrp, witness version, program) of any BIP173/BIP350-valid segwit address."""
    hrp, data, const = bech32_decode(address)
    if not data:
        raise AddressError("empty data section")
    version = data[0]
    if version > 16:
        raise AddressError(f"invalid witness version {version}")
    program = bytes(_convertbits(data[1:], 5, 8, pad=False))
    if not 2 <= len(program) <= 40:
        raise AddressError(f"invalid witness program length {len(program)}")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError("witness v0 program must be 20 or 32 bytes")
    # BIP350: v0 keeps bech32, v1+ must use bech32m; the other checksum would
    # let a v0 typo (BIP173's insertion weakness) pass as some v1+ program.
    if version == 0 and const != BECH32_CONST:
        raise AddressError("witness v0 address must use bech32, not bech32m")
    if version > 0 and const != BECH32M_CONST:
        raise AddressError(f"witness v{version} address must use bech32m, not bech32")
    return hrp, version, program


def encode_segwit(hrp: str, version: int, program: bytes) -> str:
    """Segwit address (bech32 for v0, bech32m for v1+)."""
    const = BECH32_CONST if version == 0 else BECH32M_CONST
    return bech32_encode(hrp, [version, *_convertbits(program, 8, 5, pad=True)], const)


def segwit_script(version: int, program: bytes) -> bytes:
    """OP_n <program>: the scriptPubKey of a witness program."""
    return bytes([version + 0x50 if version else 0, len(program)]) + program


# ---- addresses of a network ---------------------------------------------


def _owners(matches: Callable[[NetworkParams], bool]) -> str:
    return "/".join(name for name, params in NETWORKS.items() if matches(params))


def script_for_address(address: str, network: str) -> tuple[str, bytes]:
    """(canonical address, scriptPubKey) of a payable address on `network`.

    Accepts P2PKH, P2SH, P2WPKH, P2WSH and P2TR. Other witness programs are
    valid addresses but refused: v1 programs of other lengths and v2+ are
    spendable by anyone until a soft fork gives them meaning.
    """
    params = NETWORKS[network]
    if not address or len(address) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"must be 1 to {MAX_ADDRESS_LENGTH} characters")
    lowered = address.lower()
    if any(lowered.startswith(p.hrp + "1") for p in NETWORKS.values()):
        hrp, version, program = decode_segwit(address)
        if hrp != params.hrp:
            raise AddressError(f"address is for {_owners(lambda p: p.hrp == hrp)}, not {network}")
        if (version, len(program)) not in ((0, 20), (0, 32), (1, 32)):
            raise AddressError(
                f"witness v{version} {len(program)}-byte program is not a supported output"
            )
        # Bech32 is case-insensitive; one spelling per script keeps policy
        # allowlists and audit records comparable as strings.
        return encode_segwit(hrp, version, program), segwit_script(version, program)
    try:
        payload = b58check_decode(address)
    except AddressError as exc:
        raise AddressError(
            f"not a bech32 address ({params.hrp}1...) nor valid base58check: {exc}"
        ) from None
    if len(payload) != 21:
        raise AddressError(f"base58check payload is {len(payload)} bytes, expected 21")
    version, body = payload[0], payload[1:]
    if version == params.p2pkh_version:
        return address, p2pkh_script(body)
    if version == params.p2sh_version:
        return address, b"\xa9\x14" + body + b"\x87"
    owners = _owners(lambda p: version in (p.p2pkh_version, p.p2sh_version))
    if owners:
        raise AddressError(f"address is for {owners}, not {network}")
    raise AddressError(f"unknown base58 version byte 0x{version:02x}")
