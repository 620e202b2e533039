"""BIP174 PSBT version 0: a strict parser and a serializer that keeps every record.

Written here rather than taken from a library: python-bitcointx (a test
dependency, the second implementation the tests check against) loads
libsecp256k1 through ctypes and selects chains through global state, and embit
would be a new runtime dependency whose tolerance of malformed input is not
what the service needs. The format is small: key-value maps, and a
transaction without scriptSigs or witnesses.

Refused, as BIP174 requires (its test vectors are in tests/vectors/bip174.json):
bad magic, a missing or malformed unsigned transaction, non-empty scriptSigs,
duplicate keys in a map, a key of a defined type with the wrong key data, a
value of the wrong size, fields BIP370 reserves for PSBT version 2, a version
other than 0, and any byte after the last output map. Records of unknown
types are kept, in order, and written back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from custos.signer.chains.bitcoin_address import sha256d
from custos.signer.chains.bitcoin_prevtx import PrevTxError, _Reader

MAGIC: Final = b"psbt\xff"

# Global types.
GLOBAL_UNSIGNED_TX: Final = 0x00
GLOBAL_XPUB: Final = 0x01
GLOBAL_VERSION: Final = 0xFB
# Input types.
IN_NON_WITNESS_UTXO: Final = 0x00
IN_WITNESS_UTXO: Final = 0x01
IN_PARTIAL_SIG: Final = 0x02
IN_SIGHASH_TYPE: Final = 0x03
IN_REDEEM_SCRIPT: Final = 0x04
IN_WITNESS_SCRIPT: Final = 0x05
IN_BIP32_DERIVATION: Final = 0x06
IN_FINAL_SCRIPTSIG: Final = 0x07
IN_FINAL_SCRIPTWITNESS: Final = 0x08
PROPRIETARY: Final = 0xFC
# Output types.
OUT_REDEEM_SCRIPT: Final = 0x00
OUT_WITNESS_SCRIPT: Final = 0x01

# BIP370 fields that exist only in PSBT version 2.
_GLOBAL_V2_ONLY: Final = frozenset({0x02, 0x03, 0x04, 0x05, 0x06})
_IN_V2_ONLY: Final = frozenset({0x0E, 0x0F, 0x10, 0x11, 0x12})
_OUT_V2_ONLY: Final = frozenset({0x03, 0x04})

# Key data length of each defined type whose key carries data; None: no key
# data (the key is the type byte alone). Types absent here are unknown (kept).
_PUBKEY: Final = (33, 65)
_GLOBAL_KEYS: Final[dict[int, tuple[int, ...] | None]] = {
    GLOBAL_UNSIGNED_TX: None,
    GLOBAL_XPUB: (78,),
    0x07: None,  # SLIP-19 ownership commitment
    GLOBAL_VERSION: None,
}
_INPUT_KEYS: Final[dict[int, tuple[int, ...] | None]] = {
    IN_NON_WITNESS_UTXO: None,
    IN_WITNESS_UTXO: None,
    IN_PARTIAL_SIG: _PUBKEY,
    IN_SIGHASH_TYPE: None,
    IN_REDEEM_SCRIPT: None,
    IN_WITNESS_SCRIPT: None,
    IN_BIP32_DERIVATION: _PUBKEY,
    IN_FINAL_SCRIPTSIG: None,
    IN_FINAL_SCRIPTWITNESS: None,
    0x09: None,  # BIP127 proof-of-reserves commitment
    0x0A: (20,),  # RIPEMD160 preimage
    0x0B: (32,),  # SHA256 preimage
    0x0C: (20,),  # HASH160 preimage
    0x0D: (32,),  # HASH256 preimage
    0x13: None,  # BIP371 taproot key spend signature
    0x14: (64,),  # taproot script spend signature: x-only key, leaf hash
    0x16: (32,),  # taproot BIP32 derivation: x-only key
    0x17: None,  # taproot internal key
    0x18: None,  # taproot merkle root
}
_OUTPUT_KEYS: Final[dict[int, tuple[int, ...] | None]] = {
    OUT_REDEEM_SCRIPT: None,
    OUT_WITNESS_SCRIPT: None,
    0x02: _PUBKEY,  # BIP32 derivation
    0x05: None,  # taproot internal key
    0x06: None,  # taproot tree
    0x07: (32,),  # taproot BIP32 derivation
}
# Fixed value sizes of defined types.
_INPUT_VALUES: Final[dict[int, tuple[int, ...]]] = {
    IN_SIGHASH_TYPE: (4,),
    0x13: (64, 65),
    0x14: (64, 65),
    0x17: (32,),
    0x18: (32,),
}
_OUTPUT_VALUES: Final[dict[int, tuple[int, ...]]] = {0x05: (32,)}


class PsbtError(ValueError):
    """Not a valid BIP174 version 0 PSBT; `where` names the map (e.g. inputs[2])."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class TxIn:
    outpoint: bytes  # previous txid (internal byte order) || vout, 36 bytes
    sequence: int

    @property
    def txid(self) -> bytes:
        return self.outpoint[:32]

    @property
    def vout(self) -> int:
        return int.from_bytes(self.outpoint[32:], "little")


@dataclass(frozen=True, slots=True)
class UnsignedTx:
    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[tuple[int, bytes], ...]  # (value, scriptPubKey)
    lock_time: int
    raw: bytes

    @property
    def txid(self) -> bytes:
        return sha256d(self.raw)


@dataclass(slots=True)
class PsbtMap:
    """One map's records in order; keys are unique (the parser refuses duplicates)."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)

    def get(self, key: bytes) -> bytes | None:
        for k, v in self.records:
            if k == key:
                return v
        return None

    def of_type(self, key_type: int) -> list[tuple[bytes, bytes]]:
        """(key data, value) of every record of `key_type` (one-byte types only)."""
        return [(k[1:], v) for k, v in self.records if k[0] == key_type]

    def put(self, key: bytes, value: bytes) -> None:
        """Set `key`, replacing its record in place or appending a new one."""
        for index, (k, _) in enumerate(self.records):
            if k == key:
                self.records[index] = (key, value)
                return
        self.records.append((key, value))

    def keep(self, types: frozenset[int]) -> None:
        self.records = [(k, v) for k, v in self.records if k[0] in types]

    def serialize(self) -> bytes:
        parts = []
        for key, value in self.records:
            parts += [varint(len(key)), key, varint(len(value)), value]
        parts.append(b"\x00")
        return b"".join(parts)


@dataclass(slots=True)
class Psbt:
    tx: UnsignedTx
    globals: PsbtMap
    inputs: list[PsbtMap]
    outputs: list[PsbtMap]

    def serialize(self) -> bytes:
        return (
            MAGIC
            + self.globals.serialize()
            + b"".join(m.serialize() for m in self.inputs)
            + b"".join(m.serialize() for m in self.outputs)
        )


def varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def parse_psbt(data: bytes, max_inputs: int, max_outputs: int) -> Psbt:
    """The PSBT in `data`; PsbtError naming the map and the problem if it is not valid."""
    if not data.startswith(MAGIC):
        raise PsbtError("", "does not start with the PSBT magic 'psbt' 0xff")
    reader = _Reader(data)
    reader.skip(len(MAGIC))
    globals_ = _read_map(reader, "global", _GLOBAL_KEYS, {}, _GLOBAL_V2_ONLY)
    raw_tx = globals_.get(bytes([GLOBAL_UNSIGNED_TX]))
    if raw_tx is None:
        raise PsbtError("global", "no unsigned transaction (PSBT_GLOBAL_UNSIGNED_TX)")
    version = globals_.get(bytes([GLOBAL_VERSION]))
    if version is not None:
        if len(version) != 4:
            raise PsbtError("global", "PSBT_GLOBAL_VERSION must be 4 bytes")
        if int.from_bytes(version, "little") != 0:
            raise PsbtError("global", "only PSBT version 0 is supported")
    tx = _parse_unsigned_tx(raw_tx)
    if len(tx.inputs) > max_inputs:
        raise PsbtError(
            "inputs",
            f"{len(tx.inputs)} inputs exceed limits.bitcoin_max_inputs = {max_inputs}",
        )
    if len(tx.outputs) > max_outputs:
        raise PsbtError(
            "outputs",
            f"{len(tx.outputs)} outputs exceed limits.bitcoin_max_outputs = {max_outputs}",
        )
    inputs = [
        _read_map(reader, f"inputs[{i}]", _INPUT_KEYS, _INPUT_VALUES, _IN_V2_ONLY)
        for i in range(len(tx.inputs))
    ]
    outputs = [
        _read_map(reader, f"outputs[{i}]", _OUTPUT_KEYS, _OUTPUT_VALUES, _OUT_V2_ONLY)
        for i in range(len(tx.outputs))
    ]
    if reader.pos != len(data):
        raise PsbtError("", f"{len(data) - reader.pos} bytes after the last output map")
    for index, input_map in enumerate(inputs):
        _check_input(input_map, f"inputs[{index}]")
    return Psbt(tx, globals_, inputs, outputs)


def _read_map(
    reader: _Reader,
    where: str,
    keys: dict[int, tuple[int, ...] | None],
    values: dict[int, tuple[int, ...]],
    v2_only: frozenset[int],
) -> PsbtMap:
    result = PsbtMap()
    seen: set[bytes] = set()
    try:
        while True:
            key_len = reader.compact_size()
            if key_len == 0:
                return result
            key = reader.take(key_len)
            value = reader.take(reader.compact_size())
            key_type, type_len = _key_type(key)
            if key in seen:
                raise PsbtError(where, f"duplicate key of type 0x{key_type:02x}")
            seen.add(key)
            if key_type in v2_only:
                raise PsbtError(where, f"type 0x{key_type:02x} exists only in PSBT version 2")
            if key_type in keys:
                expected = keys[key_type]
                data_len = len(key) - type_len
                if expected is None and data_len:
                    raise PsbtError(where, f"type 0x{key_type:02x} takes no key data")
                if expected is not None and data_len not in expected:
                    raise PsbtError(where, f"type 0x{key_type:02x} key data is {data_len} bytes")
                if expected == _PUBKEY and not _is_pubkey(key[type_len:]):
                    raise PsbtError(where, f"type 0x{key_type:02x} key is not a public key")
                if key_type in values and len(value) not in values[key_type]:
                    raise PsbtError(where, f"type 0x{key_type:02x} value is {len(value)} bytes")
            result.records.append((key, value))
    except PrevTxError as exc:
        raise PsbtError(where, f"truncated or malformed: {exc}") from None


def _key_type(key: bytes) -> tuple[int, int]:
    """(key type, bytes its CompactSize takes); BIP174 requires the minimal encoding."""
    reader = _Reader(key)
    key_type = reader.compact_size()  # refuses non-minimal encodings
    return key_type, reader.pos


def _is_pubkey(key: bytes) -> bool:
    return (len(key) == 33 and key[0] in (2, 3)) or (len(key) == 65 and key[0] == 4)


def _check_input(input_map: PsbtMap, where: str) -> None:
    witness = input_map.get(bytes([IN_FINAL_SCRIPTWITNESS]))
    if witness is not None:
        reader = _Reader(witness)
        try:
            for _ in range(reader.compact_size()):
                reader.skip(reader.compact_size())
        except PrevTxError as exc:
            raise PsbtError(where, f"final scriptWitness is malformed: {exc}") from None
        if reader.pos != len(witness):
            raise PsbtError(where, "final scriptWitness has bytes after its stack")
    for key, value in input_map.of_type(IN_PARTIAL_SIG):
        if not value:
            raise PsbtError(where, f"empty partial signature for key {key.hex()}")


def _parse_unsigned_tx(raw: bytes) -> UnsignedTx:
    """The unsigned transaction: legacy serialization only, every scriptSig empty."""
    reader = _Reader(raw)
    try:
        version = int.from_bytes(reader.take(4), "little")
        inputs = []
        for index in range(reader.compact_size()):
            outpoint = reader.take(36)
            if reader.compact_size() != 0:
                raise PsbtError("global", f"unsigned transaction input {index} has a scriptSig")
            inputs.append(TxIn(outpoint, int.from_bytes(reader.take(4), "little")))
        outputs = []
        for _ in range(reader.compact_size()):
            value = int.from_bytes(reader.take(8), "little")
            outputs.append((value, reader.take(reader.compact_size())))
        lock_time = int.from_bytes(reader.take(4), "little")
    except PrevTxError as exc:
        raise PsbtError("global", f"unsigned transaction is malformed: {exc}") from None
    if reader.pos != len(raw):
        # Also what a witness serialization (marker 0x00, flag 0x01) reads as.
        raise PsbtError("global", "unsigned transaction has bytes after its lock time")
    return UnsignedTx(version, tuple(inputs), tuple(outputs), lock_time, raw)
