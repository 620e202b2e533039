"""Parse a previous Bitcoin transaction, just far enough to prove what an output holds.

A caller names each input's previous transaction in full. Its txid is SHA-256d
of its serialization without witness data (BIP144), so a transaction sent in
the segwit form is parsed to its end and the marker, flag and witnesses are
left out of the hash. Once that hash equals the input's txid, the bytes are
the transaction the network knows, and the value and scriptPubKey of output
`vout` are facts rather than the caller's word.

The parser is strict where Bitcoin Core is (canonical CompactSize, no trailing
bytes, no witness flag without a witness, amounts within MAX_MONEY) so that it
never reads a transaction differently from a node. The tests check it against
python-bitcointx. `PrevoutProofs` is the one place both Bitcoin adapters prove
an input's previous output with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from custos.signer.chains.base import InvalidField
from custos.signer.chains.bitcoin_address import sha256d
from custos.signer.chains.limits import ChainLimits

MAX_MONEY: Final = 21_000_000 * 100_000_000
# Bitcoin Core's MAX_SIZE: no CompactSize in a transaction is larger.
_MAX_SIZE: Final = 0x02000000


class PrevTxError(ValueError):
    """The bytes are not one well-formed transaction."""


@dataclass(frozen=True, slots=True)
class PrevTx:
    txid: bytes  # SHA-256d of the serialization without witness, internal byte order
    outputs: tuple[tuple[int, bytes], ...]  # (value in satoshis, scriptPubKey) per output

    @property
    def txid_hex(self) -> str:
        """The txid as block explorers show it (byte-reversed hex)."""
        return self.txid[::-1].hex()


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise PrevTxError(f"ends early: {n} more bytes needed at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise PrevTxError(f"ends early: {n} more bytes needed at offset {self.pos}")
        self.pos += n

    def compact_size(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        width = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        value = int.from_bytes(self.take(width), "little")
        # Bitcoin Core refuses a CompactSize that a shorter form could hold.
        if value < (0xFD, 0x10000, 0x100000000)[(width.bit_length() - 2)]:
            raise PrevTxError(f"non-canonical CompactSize at offset {self.pos - width - 1}")
        if value > _MAX_SIZE:
            raise PrevTxError(f"CompactSize {value} above Bitcoin Core's limit {_MAX_SIZE}")
        return value


def parse_prev_tx(raw: bytes) -> PrevTx:
    """The txid and outputs of one serialized transaction; PrevTxError if malformed."""
    reader = _Reader(raw)
    reader.skip(4)  # version
    segwit = False
    if len(raw) > 5 and raw[4] == 0:
        # BIP144: a zero input count is the marker; a transaction has inputs.
        if raw[5] != 1:
            raise PrevTxError(f"unknown segwit flag 0x{raw[5]:02x} (only 0x01 exists)")
        segwit = True
        reader.skip(2)
    body_start = reader.pos
    n_inputs = reader.compact_size()
    if n_inputs == 0:
        raise PrevTxError("has no inputs")
    for _ in range(n_inputs):
        reader.skip(36)  # outpoint
        reader.skip(reader.compact_size())  # scriptSig
        reader.skip(4)  # sequence
    n_outputs = reader.compact_size()
    if n_outputs == 0:
        raise PrevTxError("has no outputs")
    outputs = []
    total = 0
    for index in range(n_outputs):
        value = int.from_bytes(reader.take(8), "little")
        if value > MAX_MONEY:
            raise PrevTxError(f"output {index} holds more than 21,000,000 BTC")
        total += value
        outputs.append((value, reader.take(reader.compact_size())))
    if total > MAX_MONEY:
        raise PrevTxError("outputs hold more than 21,000,000 BTC in total")
    body_end = reader.pos
    if segwit:
        has_witness = False
        for _ in range(n_inputs):
            for _ in range(reader.compact_size()):
                reader.skip(reader.compact_size())
                has_witness = True
        if not has_witness:
            # Bitcoin Core: "Superfluous witness record"; that form is never relayed.
            raise PrevTxError("segwit serialization without any witness data")
    reader.skip(4)  # lock time
    if reader.pos != len(raw):
        raise PrevTxError(f"{len(raw) - reader.pos} bytes after the end of the transaction")
    stripped = raw if not segwit else raw[:4] + raw[body_start:body_end] + raw[-4:]
    return PrevTx(sha256d(stripped), tuple(outputs))


class PrevoutProofs:
    """Proves the value and script of each input's previous output, for one transaction.

    The Bitcoin adapter (`prev_tx`) and the PSBT adapter (`non_witness_utxo`)
    both prove inputs here: the previous transaction must be present, within
    limits.bitcoin_max_prev_tx_bytes, well formed, hash to the input's txid and
    have output `vout`, holding 1 sat to 21,000,000 BTC; no outpoint may be
    spent twice. A transaction several inputs spend from is parsed once.
    """

    def __init__(self, limits: ChainLimits) -> None:
        self._limits = limits
        self._parsed: dict[bytes, PrevTx] = {}
        self._seen: dict[bytes, int] = {}

    def prove(
        self,
        index: int,
        outpoint: bytes,
        raw: bytes,
        *,
        input_field: str,
        prev_field: str,
        txid_field: str | None = None,
        vout_field: str | None = None,
    ) -> tuple[int, bytes]:
        """(value, scriptPubKey) of the output `outpoint` (txid in internal order || vout) spends.

        Errors name `prev_field` (the previous transaction), `txid_field` and
        `vout_field` (default: prev_field) or `input_field` for a repeated outpoint.
        """
        txid, vout = outpoint[:32], int.from_bytes(outpoint[32:], "little")
        if not any(txid):
            # The null prevout marks a coinbase input; no output has that txid.
            raise InvalidField(txid_field or prev_field, "all-zero txid is not a transaction")
        if outpoint in self._seen:
            raise InvalidField(
                input_field, f"spends the same outpoint as inputs[{self._seen[outpoint]}]"
            )
        self._seen[outpoint] = index
        prev = self._parse(raw, prev_field)
        if prev.txid != txid:
            raise InvalidField(
                prev_field,
                f"hashes to txid {prev.txid_hex}, not the input's txid {txid[::-1].hex()}",
            )
        if vout >= len(prev.outputs):
            count = len(prev.outputs)
            raise InvalidField(
                vout_field or prev_field, f"the previous transaction has {count} outputs"
            )
        value, script = prev.outputs[vout]
        if value <= 0:
            raise InvalidField(prev_field, f"output {vout} holds {value} sat: must be positive")
        return value, script

    def _parse(self, raw: bytes, field: str) -> PrevTx:
        if not raw:
            raise InvalidField(
                field, "required: the previous transaction, whose output this input spends"
            )
        limit = self._limits.bitcoin_max_prev_tx_bytes
        if len(raw) > limit:
            raise InvalidField(
                field, f"{len(raw)} bytes exceed limits.bitcoin_max_prev_tx_bytes = {limit}"
            )
        prev = self._parsed.get(raw)
        if prev is None:
            try:
                prev = parse_prev_tx(raw)
            except PrevTxError as exc:
                raise InvalidField(field, f"not a serialized transaction: {exc}") from None
            self._parsed[raw] = prev
        return prev
