"""EIP-712 typed structured data (eth_signTypedData_v4): strict parsing and hashing.

The service computes the digest itself from the JSON a caller sends:
keccak256(0x19 0x01 || domainSeparator || hashStruct(message)). Anything a
lenient encoder would accept but a wallet or a contract could read
differently is refused, naming the field: a value that does not match its
declared type, a field missing from or added to a struct (an added field is
not signed, so it would be a label the signature ignores), an unknown type, a
domain field outside EIP-712's five. Sizes are bounded before the JSON is
parsed (signer/chains/limits.py).

Tests check the digests against the specification's `Mail` example and
against eth-account's encode_typed_data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_hash.auto import keccak

from custos.signer.chains.base import InvalidField
from custos.signer.chains.evm import checksum_address

UINT256_MAX = 2**256 - 1
DOMAIN = "EIP712Domain"
# EIP-712's domain fields, in the order the specification lists them, with their types.
DOMAIN_FIELDS: dict[str, str] = {
    "name": "string",
    "version": "string",
    "chainId": "uint256",
    "verifyingContract": "address",
    "salt": "bytes32",
}
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}")
_TYPE = re.compile(r"([A-Za-z_$][A-Za-z0-9_$]{0,63})((?:\[[0-9]{0,6}\])*)")
_ARRAY_SUFFIX = re.compile(r"\[([0-9]{0,6})\]")
_ATOMIC_INT = re.compile(r"(u?)int([0-9]{1,3})")
_FIXED_BYTES = re.compile(r"bytes([0-9]{1,2})")
_HEX = re.compile(r"0x[0-9a-fA-F]*")
_DECIMAL = re.compile(r"-?[0-9]{1,78}")
# A JSON string (its end optional, so an unterminated one is consumed once,
# keeping the scan linear) or a bracket. A pattern requiring the closing quote
# rescanned to the end from every quote: 32 s for 64 KB of \" (found by test).
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)
# Encoding a type walks its dependencies; real documents (Permit2, Seaport) have
# about ten struct types, and this bound keeps that walk small.
MAX_STRUCT_TYPES = 256


@dataclass(frozen=True, slots=True)
class TypedData:
    """A validated typed-data request: its digest and the values policy reads."""

    digest: bytes
    domain_separator: bytes
    message_hash: bytes
    primary_type: str
    domain: dict[str, Any]  # parsed values: str, int, 20-byte address as checksummed str, bytes
    message: dict[str, Any]  # parsed values of the primary struct, nested likewise
    size: int
    types: dict[str, list[tuple[str, str]]]  # struct name -> (field name, type), in order


def _show(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


def _member(key: str) -> str:
    """A JSON member name for an error's field path: as is when an identifier, else escaped.

    The path reaches the caller in the gRPC status: a lone surrogate could not
    be encoded there, and a long name must not be echoed whole.
    """
    return key if _IDENT.fullmatch(key) else ascii(key)[:80]


def _is_atomic(name: str) -> bool:
    if name in ("address", "bool", "string", "bytes"):
        return True
    m = _ATOMIC_INT.fullmatch(name)
    if m:
        bits = int(m.group(2))
        return 8 <= bits <= 256 and bits % 8 == 0 and not m.group(2).startswith("0")
    fixed = _FIXED_BYTES.fullmatch(name)
    return fixed is not None and 1 <= int(fixed.group(1)) <= 32 and fixed.group(1)[0] != "0"


def check_depth(text: str, max_depth: int, field: str) -> None:
    """Refuse JSON nested deeper than max_depth before parsing it (json.loads recurses)."""
    depth = 0
    for m in _TOKENS.finditer(text):
        first = m.group()[0]
        if first == '"':
            continue
        if first in "[{":
            depth += 1
            if depth > max_depth:
                raise InvalidField(
                    field,
                    f"JSON nests deeper than limits.typed_data_max_depth = {max_depth}",
                )
        else:
            depth -= 1


class _Encoder:
    """One typed-data document's types, with their encodings cached."""

    def __init__(self, types: Mapping[str, list[tuple[str, str]]], field: str) -> None:
        self.types = types
        self.field = field
        self._encoded: dict[str, bytes] = {}
        self._hashes: dict[str, bytes] = {}

    def _deps(self, name: str) -> list[str]:
        seen = [name]
        todo = [name]
        while todo:
            for _, ftype in self.types[todo.pop()]:
                base = _TYPE.fullmatch(ftype).group(1)  # type: ignore[union-attr]
                if base in self.types and base not in seen:
                    seen.append(base)
                    todo.append(base)
        return seen

    def encode_type(self, name: str) -> bytes:
        cached = self._encoded.get(name)
        if cached is None:
            primary, *rest = self._deps(name)
            parts = [primary, *sorted(rest)]
            cached = "".join(
                f"{n}({','.join(f'{t} {f}' for f, t in self.types[n])})" for n in parts
            ).encode()
            self._encoded[name] = cached
        return cached

    def type_hash(self, name: str) -> bytes:
        cached = self._hashes.get(name)
        if cached is None:
            cached = self._hashes[name] = keccak(self.encode_type(name))
        return cached

    def hash_struct(self, name: str, value: Any, path: str) -> tuple[bytes, dict[str, Any]]:
        if not isinstance(value, dict):
            raise InvalidField(path, f"must be a JSON object of type {name}")
        fields = self.types[name]
        names = {f for f, _ in fields}
        extra = [k for k in value if k not in names]
        if extra:
            raise InvalidField(
                f"{path}.{_member(extra[0])}",
                f"is not a field of type {name} (it would not be signed)",
            )
        parts = [self.type_hash(name)]
        parsed: dict[str, Any] = {}
        for fname, ftype in fields:
            if fname not in value:
                raise InvalidField(f"{path}.{fname}", f"missing: type {name} declares it")
            word, parsed[fname] = self.encode_value(ftype, value[fname], f"{path}.{fname}")
            parts.append(word)
        return keccak(b"".join(parts)), parsed

    def encode_value(self, ftype: str, value: Any, path: str) -> tuple[bytes, Any]:
        m = _TYPE.fullmatch(ftype)
        assert m is not None  # checked when the types were parsed
        suffixes = _ARRAY_SUFFIX.findall(m.group(2))
        if suffixes:
            inner = ftype[: ftype.rindex("[")]
            size = suffixes[-1]
            if not isinstance(value, list):
                raise InvalidField(path, f"must be a JSON array ({ftype})")
            if size and len(value) != int(size):
                raise InvalidField(path, f"must have {size} elements ({ftype}), got {len(value)}")
            words, parsed = [], []
            for i, element in enumerate(value):
                word, item = self.encode_value(inner, element, f"{path}[{i}]")
                words.append(word)
                parsed.append(item)
            return keccak(b"".join(words)), parsed
        base = m.group(1)
        if base in self.types:
            return self.hash_struct(base, value, path)
        return _atomic(base, value, path)


def _int_value(value: Any, path: str, ftype: str) -> int:
    if isinstance(value, bool):
        raise InvalidField(path, f"must be an integer ({ftype}), got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if _DECIMAL.fullmatch(value):
            return int(value)
        if _HEX.fullmatch(value) and 2 < len(value) <= 66:
            return int(value, 16)
    shown = _show(str(value))
    raise InvalidField(
        path, f"must be an integer ({ftype}): a JSON number, decimal or 0x hex, got {shown}"
    )


def _atomic(ftype: str, value: Any, path: str) -> tuple[bytes, Any]:
    if ftype == "string":
        if not isinstance(value, str):
            raise InvalidField(path, "must be a JSON string")
        try:
            return keccak(value.encode("utf-8")), value
        except UnicodeEncodeError:
            raise InvalidField(path, "is not valid Unicode (a lone surrogate)") from None
    if ftype == "bool":
        if not isinstance(value, bool):
            raise InvalidField(path, "must be true or false")
        return int(value).to_bytes(32, "big"), value
    if ftype == "address":
        if not isinstance(value, str) or len(value) != 42 or not _HEX.fullmatch(value):
            raise InvalidField(path, "must be a 0x-prefixed 20-byte hex address")
        raw = bytes.fromhex(value[2:])
        body = value[2:]
        if body not in (body.lower(), body.upper()) and checksum_address(raw) != value:
            raise InvalidField(path, "bad checksum (EIP-55): mixed-case address is mistyped")
        return bytes(12) + raw, checksum_address(raw)
    if ftype == "bytes" or ftype.startswith("bytes"):
        if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) % 2:
            raise InvalidField(
                path, f"must be 0x-prefixed hex with an even number of digits ({ftype})"
            )
        raw = bytes.fromhex(value[2:])
        if ftype == "bytes":
            return keccak(raw), raw
        size = int(ftype[5:])
        if len(raw) != size:
            raise InvalidField(path, f"must be exactly {size} bytes ({ftype}), got {len(raw)}")
        return raw.ljust(32, b"\0"), raw
    m = _ATOMIC_INT.fullmatch(ftype)
    assert m is not None
    bits = int(m.group(2))
    number = _int_value(value, path, ftype)
    if m.group(1):
        if not 0 <= number < 2**bits:
            raise InvalidField(path, f"out of range for {ftype}")
        return number.to_bytes(32, "big"), number
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise InvalidField(path, f"out of range for {ftype}")
    return (number % 2**256).to_bytes(32, "big"), number


class _Duplicate(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A duplicate member shows a wallet one value while another is signed.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_types(raw: Any, field: str) -> dict[str, list[tuple[str, str]]]:
    if not isinstance(raw, dict) or not raw:
        raise InvalidField(f"{field}.types", "must be a non-empty JSON object of struct types")
    if len(raw) > MAX_STRUCT_TYPES:
        raise InvalidField(f"{field}.types", f"more than {MAX_STRUCT_TYPES} struct types")
    types: dict[str, list[tuple[str, str]]] = {}
    for name, members in raw.items():
        path = f"{field}.types.{_member(name)}"
        if not _IDENT.fullmatch(name) or _is_atomic(name):
            raise InvalidField(path, f"not a valid struct type name: {_show(name)}")
        if not isinstance(members, list):
            raise InvalidField(path, "must be a JSON array of {name, type} objects")
        fields: list[tuple[str, str]] = []
        seen: set[str] = set()
        for i, member in enumerate(members):
            where = f"{path}[{i}]"
            if not isinstance(member, dict) or set(member) != {"name", "type"}:
                raise InvalidField(where, 'must be an object with exactly "name" and "type"')
            fname, ftype = member["name"], member["type"]
            if not isinstance(fname, str) or not _IDENT.fullmatch(fname):
                raise InvalidField(f"{where}.name", f"not a valid field name: {_show(str(fname))}")
            if fname in seen:
                raise InvalidField(f"{where}.name", f"duplicate field {fname!r}")
            seen.add(fname)
            m = _TYPE.fullmatch(ftype) if isinstance(ftype, str) else None
            if m is None:
                raise InvalidField(f"{where}.type", f"not a valid type: {_show(str(ftype))}")
            base = m.group(1)
            if not (_is_atomic(base) or base in raw) or base == DOMAIN:
                raise InvalidField(f"{where}.type", f"unknown type {base!r}")
            if any(s.startswith("0") for s in _ARRAY_SUFFIX.findall(m.group(2)) if s):
                raise InvalidField(f"{where}.type", f"array sizes must be positive: {ftype!r}")
            fields.append((fname, ftype))
        types[name] = fields
    return types


def parse_typed_data(text: str, field: str, max_bytes: int, max_depth: int) -> TypedData:
    """Validate eth_signTypedData_v4 JSON text and compute its EIP-712 digest."""
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidField(field, f"{size} bytes exceed limits.typed_data_max_bytes = {max_bytes}")
    if not text:
        raise InvalidField(field, "required: eth_signTypedData_v4 JSON text")
    check_depth(text, max_depth, field)
    try:
        doc = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except _Duplicate as exc:
        raise InvalidField(field, f"duplicate JSON member {_show(str(exc))}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidField(field, f"not JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise InvalidField(field, "must be a JSON object")
    extra = sorted(set(doc) - {"types", "primaryType", "domain", "message"})
    if extra:
        raise InvalidField(
            f"{field}.{_member(extra[0])}", "unknown member (it would not be signed)"
        )
    types = _parse_types(doc.get("types"), field)
    primary = doc.get("primaryType")
    if not isinstance(primary, str) or primary not in types or primary == DOMAIN:
        raise InvalidField(
            f"{field}.primaryType", "must name a struct type in types (not EIP712Domain)"
        )
    if DOMAIN not in types:
        raise InvalidField(f"{field}.types.{DOMAIN}", "required: the domain's type")
    order = list(DOMAIN_FIELDS)
    last = -1
    for i, (fname, ftype) in enumerate(types[DOMAIN]):
        where = f"{field}.types.{DOMAIN}[{i}]"
        if DOMAIN_FIELDS.get(fname) != ftype:
            raise InvalidField(
                where,
                "EIP712Domain fields are name string, version string, chainId uint256, "
                "verifyingContract address and salt bytes32",
            )
        if order.index(fname) < last:
            # eth-account and ethers hash the domain in this order whatever the
            # declared one; eth-sig-util (MetaMask) hashes the declared order.
            # Only this order means one digest to every verifier.
            raise InvalidField(where, "EIP712Domain fields must be in EIP-712's order")
        last = order.index(fname)
    encoder = _Encoder(types, field)
    separator, domain = encoder.hash_struct(DOMAIN, doc.get("domain"), f"{field}.domain")
    message_hash, message = encoder.hash_struct(primary, doc.get("message"), f"{field}.message")
    digest = keccak(b"\x19\x01" + separator + message_hash)
    return TypedData(digest, separator, message_hash, primary, domain, message, size, types)
