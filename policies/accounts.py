"""Accounts, not spellings: the identity an address-book entry and a destination share.

One account has many spellings. A Bitcoin key hash is paid by P2WPKH, P2PKH
and P2SH-P2WPKH scripts, spelled differently on mainnet and the test networks;
an EVM account is the same 20 bytes on Ethereum and BNB Smart Chain, whatever
the chain id; a Tron account is one base58 address on every Tron network. The
address book files an entry under every account id it stands for, and a
destination is looked up by its one account id, so a deny entry for one
spelling denies them all.

Policy does not import the chain adapters (signer/chains); the decoding here is
a small second copy of BIP173/BIP350 and base58check, checked against the
adapters' addresses by tests/unit/test_policy_chains_agree.py. A string that
does not decode keeps its normalized spelling as its account id, which only
ever matches that same spelling.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from Crypto.Hash import RIPEMD160

EVM_CHAINS = frozenset({"ethereum", "bsc"})
_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONSTS = {1: 0, 0x2BC830A3: 1}  # checksum constant -> lowest witness version it allows
_BECH32_HRPS = ("bc", "tb", "bcrt")
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Base58check version bytes of P2PKH and P2SH on mainnet and the test networks.
_P2PKH_VERSIONS = (0x00, 0x6F)
_P2SH_VERSIONS = (0x05, 0xC4)
_MAX_CHARS = 100


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data))."""
    sha = hashlib.sha256(data).digest()
    try:
        return hashlib.new("ripemd160", sha).digest()
    except ValueError:
        # OpenSSL 3.0.0-3.0.6 keep RIPEMD-160 in the legacy provider only.
        return RIPEMD160.new(sha).digest()


def _generator_table() -> tuple[int, ...]:
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    table = []
    for top in range(32):
        value = 0
        for i, gen in enumerate(generators):
            value ^= gen if (top >> i) & 1 else 0
        table.append(value)
    return tuple(table)


# BIP173's polymod with the five generator XORs per step looked up at once.
_GENERATORS = _generator_table()


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        chk = (chk & 0x1FFFFFF) << 5 ^ value ^ _GENERATORS[chk >> 25]
    return chk


_BECH32_VALUES = {c: i for i, c in enumerate(_BECH32_CHARSET)}
# The checksum state after each known human-readable part, computed once.
_HRP_STATES = {
    hrp: _polymod([ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp])
    for hrp in _BECH32_HRPS
}


def _segwit(address: str) -> tuple[int, bytes] | None:
    """(witness version, program) of a checksum-valid segwit address, else None."""
    text = address.lower()
    pos = text.rfind("1")
    state = _HRP_STATES.get(text[:pos])
    if state is None or len(text) > 90 or pos + 8 > len(text):
        return None
    try:
        data = [_BECH32_VALUES[c] for c in text[pos + 1 :]]
    except KeyError:
        return None
    for value in data:
        state = (state & 0x1FFFFFF) << 5 ^ value ^ _GENERATORS[state >> 25]
    lowest = _BECH32_CONSTS.get(state)
    version = data[0]
    # v0 uses bech32, v1+ bech32m (BIP350); the other checksum is a different string.
    if lowest is None or version > 16 or (version > 0) != (lowest == 1):
        return None
    body = data[1:-6]
    acc = 0
    for value in body:
        acc = acc << 5 | value
    bits = 5 * len(body)
    pad = bits % 8
    if pad >= 5 or acc & ((1 << pad) - 1) or not 2 <= bits // 8 <= 40:
        return None
    return version, (acc >> pad).to_bytes(bits // 8, "big")


def base58check_encode(payload: bytes) -> str:
    """Base58 of payload + its 4-byte double-SHA256 checksum."""
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(_B58[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def base58check_decode(address: str) -> bytes | None:
    """The payload of a base58check string, or None if it is not one."""
    number = 0
    for char in address:
        digit = _B58.find(char)
        if digit < 0:
            return None
        number = number * 58 + digit
    zeros = len(address) - len(address.lstrip("1"))
    data = b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
    if len(data) < 5:
        return None
    payload, checksum = data[:-4], data[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        return None
    return payload


def _bitcoin(address: str, nested: bool) -> tuple[str, ...] | None:
    """Account ids of a Bitcoin address, its own first; with `nested`, a key hash's P2SH twin."""
    segwit = _segwit(address)
    if segwit is not None:
        version, program = segwit
        if version == 0 and len(program) == 20:
            return _key_hash(program, nested)
        return (f"btc:w{version}:{program.hex()}",)
    payload = base58check_decode(address)
    if payload is None or len(payload) != 21:
        return None
    if payload[0] in _P2PKH_VERSIONS:
        return _key_hash(payload[1:], nested)
    if payload[0] in _P2SH_VERSIONS:
        return (f"btc:sh:{payload[1:].hex()}",)
    return None


def _key_hash(key_hash: bytes, nested: bool) -> tuple[str, ...]:
    own = f"btc:kh:{key_hash.hex()}"
    if not nested:
        return (own,)
    # The P2SH-P2WPKH script of the same key: P2SH of the redeem script OP_0 <20>.
    nested_hash = hash160(b"\x00\x14" + key_hash)
    return own, f"btc:sh:{nested_hash.hex()}"


def _ids(chain: str, address: str, nested: bool) -> tuple[str, ...]:
    if len(address) > _MAX_CHARS:
        return (f"{chain}:{address}",)
    if chain in EVM_CHAINS:
        if len(address) == 42 and address[:2] == "0x":
            return ("evm:" + address[2:].lower(),)
    elif chain == "bitcoin":
        found = _bitcoin(address, nested)
        if found is not None:
            return found
        return ("bitcoin:" + (address.lower() if address[:2].lower() in ("bc", "tb") else address),)
    elif chain == "tron":
        return ("tron:" + address,)
    return (f"{chain}:{address.lower()}",)


@lru_cache(maxsize=4096)
def account_ids(chain: str, address: str) -> tuple[str, ...]:
    """Every account id an address-book entry for `address` on `chain` is filed under.

    The first is the address's own; a key-hash entry also knows its
    P2SH-P2WPKH twin (a P2SH entry cannot know the key hash behind it).
    """
    return _ids(chain, address, nested=True)


@lru_cache(maxsize=16384)
def account_id(chain: str, address: str) -> str:
    """The account id a destination on `chain` is looked up by: account_ids(...)[0]."""
    return _ids(chain, address, nested=False)[0]
