"""RLP encoding (Ethereum Yellow Paper, appendix B) of the values EVM transactions hold.

Written out because it is on the signing path: the `rlp` package infers or
checks a sedes per item and costs about 12 µs for an EIP-1559 transaction; the
few shapes a transaction has (byte strings, unsigned integers, lists) take
about 2 µs here. The EVM adapter checks every value before it is encoded
(uint256 range, 20-byte addresses, 32-byte storage keys), so these functions
take only valid input. tests/unit/test_rlp_encode.py compares them with `rlp`
on generated values; the EVM tests compare whole transactions with eth-account.
"""

from __future__ import annotations

from collections.abc import Iterable

_STRING = 0x80
_LIST = 0xC0
_SHORT = 56  # payloads shorter than this have their length in the prefix byte


def _prefix(length: int, offset: int) -> bytes:
    if length < _SHORT:
        return bytes((offset + length,))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + _SHORT - 1 + len(size),)) + size


def string(data: bytes) -> bytes:
    """A byte string: itself when it is one byte below 0x80, else length-prefixed."""
    if len(data) == 1 and data[0] < _STRING:
        return data
    return _prefix(len(data), _STRING) + data


def uint(value: int) -> bytes:
    """A non-negative integer: its big-endian bytes without leading zeros (0 is empty)."""
    if value < _STRING:
        return bytes((value,)) if value else b"\x80"
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return _prefix(len(body), _STRING) + body


def list_of(encoded: bytes) -> bytes:
    """A list, from the concatenated encodings of its items."""
    return _prefix(len(encoded), _LIST) + encoded


def strings(items: Iterable[bytes]) -> bytes:
    """A list of byte strings."""
    return list_of(b"".join(string(item) for item in items))
