"""Byte-level mutation of serialized protobuf messages: `mutated()` works below the schema."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

# Most random edits of a serialized message break its framing (a length prefix
# no longer matches), and protobuf refuses it before any parser runs: one raw
# edit leaves about 20% of these messages decodable. So most edits go through
# the wire format instead: the bytes are split into (field number, wire type,
# value) records, nested messages too; one record's value, or the record list,
# is edited; and the records are written back with correct lengths. The values
# themselves (the bytes of a string, a varint) get the same flips, inserts and
# deletions. Raw edits of the final bytes still happen, at a lower rate.

_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A, 0x22, 0x08, 0x10)
_INTERESTING_VARINTS = (
    0, 1, 2, 3, 127, 128, 20_999, 21_000, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
    2**53, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1,
)  # fmt: skip


_BYTE_OPS = st.sampled_from(("flip", "set", "insert", "delete", "repeat", "truncate", "append"))
_BYTE = st.sampled_from(_INTERESTING_BYTES) | st.integers(0, 255)
_SOME_BYTES = st.binary(min_size=1, max_size=16)
_RECORD_OPS = st.sampled_from(
    ("value", "value", "value", "delete", "duplicate", "swap", "insert", "wire_type")
)
_FIELD_NUMBER = st.integers(1, 16) | st.integers(1, 2**29 - 1)
_WIRE_TYPES = st.sampled_from((0, 1, 2, 5))
_OTHER_WIRE_TYPE = {w: st.sampled_from([v for v in (0, 1, 2, 5) if v != w]) for w in (0, 1, 2, 5)}
_VARINT = st.sampled_from(_INTERESTING_VARINTS) | st.integers(0, 2**64 - 1)
_WIRE_VALUE: dict[int, SearchStrategy[int] | SearchStrategy[bytes]] = {
    0: _VARINT,
    1: st.binary(min_size=8, max_size=8),
    2: st.binary(max_size=40),
    5: st.binary(min_size=4, max_size=4),
}
_EDIT_COUNT = st.sampled_from((1, 1, 1, 2, 2, 3, 4))


@dataclass
class _Record:
    number: int
    wire: int  # 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
    value: int | bytes


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return result, pos


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _parse_wire(data: bytes) -> list[_Record] | None:
    """The records of a serialized message, or None if it is not well framed."""
    records: list[_Record] = []
    pos = 0
    try:
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                return None
            value: int | bytes
            if wire == 0:
                value, pos = _read_varint(data, pos)
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                value, pos = data[pos : pos + size], pos + size
            elif wire == 2:
                length, pos = _read_varint(data, pos)
                value, pos = data[pos : pos + length], pos + length
            else:
                return None
            if pos > len(data):
                return None
            records.append(_Record(number, wire, value))
    except ValueError:
        return None
    return records


def _write_wire(records: Sequence[_Record]) -> bytes:
    out = bytearray()
    for record in records:
        out += _varint(record.number << 3 | record.wire)
        if isinstance(record.value, int):
            out += _varint(record.value)
        elif record.wire == 2:
            out += _varint(len(record.value)) + record.value
        else:
            out += record.value
    return bytes(out)


def _edit_bytes(draw: st.DrawFn, value: bytes) -> bytes:
    """One raw edit: flip a bit, set, insert, delete or repeat bytes, truncate, append."""
    data = bytearray(value)
    op = draw(_BYTE_OPS)
    at = draw(st.integers(0, len(data)))
    if op == "flip" and at < len(data):
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "set" and at < len(data):
        data[at] = draw(_BYTE)
    elif op == "insert":
        data[at:at] = draw(_SOME_BYTES)
    elif op == "delete":
        del data[at : at + draw(st.integers(1, 16))]
    elif op == "repeat":
        end = min(len(data), at + draw(st.integers(1, 64)))
        data[at:at] = data[at:end] * draw(st.integers(1, 4))
    elif op == "truncate":
        del data[at:]
    else:
        data += draw(_SOME_BYTES)
    return bytes(data)


def _edit_records(draw: st.DrawFn, records: list[_Record], depth: int = 0) -> None:
    """One edit somewhere in `records`: of a value, or of the list itself."""
    op = draw(_RECORD_OPS)
    if not records or op == "insert":
        wire = draw(_WIRE_TYPES)
        record = _Record(draw(_FIELD_NUMBER), wire, draw(_WIRE_VALUE[wire]))
        records.insert(draw(st.integers(0, len(records))), record)
        return
    at = draw(st.integers(0, len(records) - 1))
    record = records[at]
    if op == "delete":
        del records[at]
    elif op == "duplicate":
        records.insert(draw(st.integers(0, len(records))), _Record(**vars(record)))
    elif op == "swap":
        other = draw(st.integers(0, len(records) - 1))
        records[at], records[other] = records[other], records[at]
    elif op == "wire_type":
        record.wire = draw(_OTHER_WIRE_TYPE[record.wire])
        record.value = draw(_WIRE_VALUE[record.wire])
    elif isinstance(record.value, int):
        flip = draw(st.booleans())
        record.value = record.value ^ (1 << draw(st.integers(0, 63))) if flip else draw(_VARINT)
    elif record.wire == 2:
        nested = _parse_wire(record.value) if depth < 4 else None
        if nested and draw(st.booleans()):
            _edit_records(draw, nested, depth + 1)
            record.value = _write_wire(nested)
        else:
            record.value = _edit_bytes(draw, record.value)
    else:  # fixed-size: keep the size
        size = len(record.value)
        record.value = _edit_bytes(draw, record.value)[:size].ljust(size, b"\0")


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` after one to four edits, most through the wire format, some raw."""
    data = seed
    for _ in range(draw(_EDIT_COUNT)):
        records = _parse_wire(data)
        if records is not None and draw(st.integers(0, 9)) < 8:
            _edit_records(draw, records)
            data = _write_wire(records)
        else:
            data = _edit_bytes(draw, data)
    return data


def mutations_of(
    seeds: Sequence[bytes], valid: SearchStrategy[Message] | None = None
) -> SearchStrategy[bytes]:
    """Mutated serializations of fixed seeds and (if given) of generated valid messages."""
    source: SearchStrategy[bytes] = st.sampled_from(list(seeds))
    if valid is not None:
        serialize: Callable[[Message], bytes] = operator.methodcaller("SerializeToString")
        source = source | valid.map(serialize)
    return source.flatmap(mutated)
