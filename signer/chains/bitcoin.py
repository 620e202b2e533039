"""Bitcoin adapter: one key spends its own P2WPKH and P2PKH outputs, SIGHASH_ALL only.

Serialization and both signature hashes (legacy and BIP143) are written out
here rather than taken from python-bitcoinlib, so that the unit tests' check
of every signed transaction with bitcoinlib is a second implementation and
not the same code run twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from hsm.secp256k1 import RecoverableSignature, compressed
from signer.chains.base import (
    Address,
    Intent,
    InvalidField,
    KeyInfo,
    PreparedTx,
    SignedTx,
    Transfer,
)
from signer.chains.bitcoin_address import (
    NETWORKS,
    AddressError,
    hash160,
    p2pkh_address,
    p2pkh_script,
    p2wpkh_address,
    p2wpkh_script,
    script_for_address,
    sha256d,
)

MAX_MONEY: Final = 21_000_000 * 100_000_000
MAX_INPUTS: Final = 1000
MAX_OUTPUTS: Final = 1000
DEFAULT_SEQUENCE: Final = 0xFFFFFFFD
SIGHASH_ALL: Final = 1
# Bitcoin Core's sendrawtransaction refuses fee rates above 0.1 BTC/kvB unless
# told otherwise (maxfeerate). A rate that high is a mistake (a forgotten change
# output, an amount typed in the wrong unit), not a payment, and a node would
# not broadcast it anyway. A large absolute fee can be legitimate (a big
# consolidation in a busy mempool), so capping that is left to policy, which
# sees fee and fee_details.
MAX_FEE_RATE_SAT_VB: Final = 10_000
# Nodes neither relay nor, by default, mine a transaction heavier than this.
MAX_STANDARD_WEIGHT: Final = 400_000
# Longest low-S DER signature (71 bytes) plus the sighash byte. Estimating with
# it makes the reported vsize an upper bound and the fee rate a lower bound,
# off by at most one vbyte per input.
_MAX_SIG_LEN: Final = 72
_TXID: Final = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class _Input:
    outpoint: bytes  # previous txid in serialization (reversed) order || vout, 36 bytes
    value: int
    script_type: str  # p2wpkh | p2pkh
    sequence: int


@dataclass(frozen=True, slots=True)
class _Output:
    address: str  # canonical spelling
    script: bytes
    value: int

    def serialize(self) -> bytes:
        return self.value.to_bytes(8, "little") + _varint(len(self.script)) + self.script


@dataclass(frozen=True, slots=True)
class UnsignedBitcoinTx:
    """A validated transaction awaiting one signature per input: PreparedTx.unsigned."""

    network: str
    version: int
    lock_time: int
    inputs: tuple[_Input, ...]
    outputs: tuple[_Output, ...]
    public_key: bytes  # compressed SEC1 key that every input is locked to
    address: str  # that key's P2WPKH address on `network`
    fee: int


class BitcoinAdapter:
    """ChainAdapter for Bitcoin mainnet, testnet, signet and regtest."""

    kind: str = "bitcoin"

    def addresses(self, public_key: bytes) -> list[Address]:
        key = compressed(public_key)
        result = []
        for network in NETWORKS:
            result.append(Address("bitcoin", network, "p2wpkh", p2wpkh_address(key, network)))
            result.append(Address("bitcoin", network, "p2pkh", p2pkh_address(key, network)))
        return result

    def prepare(self, tx: Any, key: KeyInfo) -> PreparedTx:
        network = _parse_network(tx.network)
        version = _parse_version(tx.version)
        public_key = compressed(key.public_key)
        inputs = _parse_inputs(tx.inputs)
        outputs = _parse_outputs(tx.outputs, network)
        fee = _fee(inputs, outputs)
        unsigned = UnsignedBitcoinTx(
            network=network,
            version=version,
            lock_time=tx.lock_time,
            inputs=inputs,
            outputs=outputs,
            public_key=public_key,
            address=p2wpkh_address(public_key, network),
            fee=fee,
        )
        vsize = _checked_vsize(unsigned)
        pubkey_hash = hash160(public_key)
        own_scripts = {p2wpkh_script(pubkey_hash), p2pkh_script(pubkey_hash)}
        intent = Intent(
            chain="bitcoin",
            network=network,
            key_id=key.key_id,
            from_address=unsigned.address,
            transfers=tuple(
                Transfer(o.address, "native", o.value, is_change=o.script in own_scripts)
                for o in outputs
            ),
            fee=fee,
            fee_details=(("vsize", vsize), ("fee_rate_sat_vb_milli", fee * 1000 // vsize)),
        )
        return PreparedTx(intent=intent, digests=_digests(unsigned), unsigned=unsigned)

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        tx = prepared.unsigned
        if not isinstance(tx, UnsignedBitcoinTx):
            raise TypeError("not a transaction prepared by BitcoinAdapter")
        if len(signatures) != len(tx.inputs):
            raise ValueError(f"{len(tx.inputs)} inputs need as many signatures")
        full, stripped = _signed_serializations(
            tx, [sig.der() + bytes([SIGHASH_ALL]) for sig in signatures]
        )
        return SignedTx(
            chain="bitcoin",
            network=tx.network,
            address=tx.address,
            tx_id=sha256d(stripped)[::-1].hex(),
            raw_tx=full.hex(),
            fee=tx.fee,
        )


# ---- request parsing ----------------------------------------------------


def _parse_network(network: str) -> str:
    if network not in NETWORKS:
        raise InvalidField("bitcoin.network", f"must be one of {', '.join(NETWORKS)}")
    return network


def _parse_version(version: int) -> int:
    # Only versions 1 and 2 are standard; 2 enables BIP68 relative lock-times.
    if version == 0:
        return 2
    if version not in (1, 2):
        raise InvalidField("bitcoin.version", "must be 1 or 2 (0 means 2)")
    return version


def _amount(value: int, field: str) -> int:
    if value <= 0:
        raise InvalidField(field, "must be positive")
    if value > MAX_MONEY:
        raise InvalidField(field, f"exceeds 21,000,000 BTC ({MAX_MONEY} sat)")
    return value


def _parse_inputs(messages: Sequence[Any]) -> tuple[_Input, ...]:
    if not messages:
        raise InvalidField("bitcoin.inputs", "at least one input is required")
    if len(messages) > MAX_INPUTS:
        raise InvalidField("bitcoin.inputs", f"at most {MAX_INPUTS} inputs")
    inputs: list[_Input] = []
    seen: dict[bytes, int] = {}
    for index, message in enumerate(messages):
        field = f"bitcoin.inputs[{index}]"
        if not _TXID.fullmatch(message.txid):
            raise InvalidField(f"{field}.txid", "must be 64 hex characters")
        txid = bytes.fromhex(message.txid)
        if not any(txid):
            # The null prevout marks a coinbase input; no output has that txid.
            raise InvalidField(f"{field}.txid", "all-zero txid is not a transaction")
        outpoint = txid[::-1] + message.vout.to_bytes(4, "little")
        if outpoint in seen:
            raise InvalidField(field, f"spends the same outpoint as inputs[{seen[outpoint]}]")
        seen[outpoint] = index
        if message.script_type not in ("p2wpkh", "p2pkh"):
            raise InvalidField(f"{field}.script_type", "must be p2wpkh or p2pkh")
        inputs.append(
            _Input(
                outpoint=outpoint,
                value=_amount(message.value, f"{field}.value"),
                script_type=message.script_type,
                sequence=message.sequence if message.HasField("sequence") else DEFAULT_SEQUENCE,
            )
        )
    return tuple(inputs)


def _parse_outputs(messages: Sequence[Any], network: str) -> tuple[_Output, ...]:
    if not messages:
        raise InvalidField("bitcoin.outputs", "at least one output is required")
    if len(messages) > MAX_OUTPUTS:
        raise InvalidField("bitcoin.outputs", f"at most {MAX_OUTPUTS} outputs")
    outputs: list[_Output] = []
    for index, message in enumerate(messages):
        field = f"bitcoin.outputs[{index}]"
        try:
            address, script = script_for_address(message.address, network)
        except AddressError as exc:
            raise InvalidField(f"{field}.address", str(exc)) from None
        outputs.append(_Output(address, script, _amount(message.value, f"{field}.value")))
    return tuple(outputs)


def _fee(inputs: Sequence[_Input], outputs: Sequence[_Output]) -> int:
    total_in = sum(i.value for i in inputs)
    total_out = sum(o.value for o in outputs)
    if total_in > MAX_MONEY:
        raise InvalidField("bitcoin.inputs", "total value exceeds 21,000,000 BTC")
    if total_out > MAX_MONEY:
        raise InvalidField("bitcoin.outputs", "total value exceeds 21,000,000 BTC")
    if total_out > total_in:
        raise InvalidField(
            "bitcoin.outputs", f"outputs exceed inputs by {total_out - total_in} sat"
        )
    return total_in - total_out


def _checked_vsize(tx: UnsignedBitcoinTx) -> int:
    """Estimated vsize, once the transaction is known to be relayable and its fee rate sane."""
    weight = _estimated_weight(tx)
    if weight > MAX_STANDARD_WEIGHT:
        raise InvalidField(
            "bitcoin",
            f"estimated weight {weight} WU exceeds the standard limit {MAX_STANDARD_WEIGHT}",
        )
    vsize = (weight + 3) // 4
    if tx.fee > MAX_FEE_RATE_SAT_VB * vsize:
        raise InvalidField(
            "bitcoin.outputs",
            f"fee {tx.fee} sat for ~{vsize} vB is {tx.fee // vsize} sat/vB, above Bitcoin "
            f"Core's default broadcast limit of {MAX_FEE_RATE_SAT_VB} sat/vB",
        )
    return vsize


# ---- serialization and signature hashes -----------------------------------


def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    return b"\xfe" + n.to_bytes(4, "little")


def _push(data: bytes) -> bytes:
    # Signatures and keys are under 76 bytes: the opcode is the length itself.
    return bytes([len(data)]) + data


def _serialize(
    tx: UnsignedBitcoinTx,
    script_sigs: Sequence[bytes],
    witnesses: Sequence[Sequence[bytes]] | None,
) -> bytes:
    parts = [tx.version.to_bytes(4, "little")]
    if witnesses is not None:
        parts.append(b"\x00\x01")  # BIP144 marker and flag
    parts.append(_varint(len(tx.inputs)))
    for txin, script_sig in zip(tx.inputs, script_sigs, strict=True):
        parts += [txin.outpoint, _varint(len(script_sig)), script_sig]
        parts.append(txin.sequence.to_bytes(4, "little"))
    parts.append(_varint(len(tx.outputs)))
    parts += [output.serialize() for output in tx.outputs]
    for stack in witnesses or ():
        parts.append(_varint(len(stack)))
        parts += [_varint(len(item)) + item for item in stack]
    parts.append(tx.lock_time.to_bytes(4, "little"))
    return b"".join(parts)


def _signed_serializations(
    tx: UnsignedBitcoinTx, signatures: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """(full serialization, serialization without witness) with one signature per input."""
    script_sigs: list[bytes] = []
    witnesses: list[tuple[bytes, ...]] = []
    for txin, sig in zip(tx.inputs, signatures, strict=True):
        if txin.script_type == "p2wpkh":
            script_sigs.append(b"")
            witnesses.append((sig, tx.public_key))
        else:
            script_sigs.append(_push(sig) + _push(tx.public_key))
            witnesses.append(())
    stripped = _serialize(tx, script_sigs, None)
    if not any(witnesses):
        # BIP144 forbids the extended format when no input has witness data.
        return stripped, stripped
    return _serialize(tx, script_sigs, witnesses), stripped


def _estimated_weight(tx: UnsignedBitcoinTx) -> int:
    full, stripped = _signed_serializations(tx, [bytes(_MAX_SIG_LEN)] * len(tx.inputs))
    return 3 * len(stripped) + len(full)


def _digests(tx: UnsignedBitcoinTx) -> tuple[bytes, ...]:
    # The previous scriptPubKey of a P2PKH input and the BIP143 scriptCode of a
    # P2WPKH input are the same script: the key's P2PKH script.
    script_code = p2pkh_script(hash160(tx.public_key))
    sighash_type = SIGHASH_ALL.to_bytes(4, "little")
    hash_prevouts = sha256d(b"".join(txin.outpoint for txin in tx.inputs))
    hash_sequence = sha256d(b"".join(txin.sequence.to_bytes(4, "little") for txin in tx.inputs))
    hash_outputs = sha256d(b"".join(output.serialize() for output in tx.outputs))
    digests = []
    for index, txin in enumerate(tx.inputs):
        if txin.script_type == "p2wpkh":
            preimage = b"".join(
                [
                    tx.version.to_bytes(4, "little"),
                    hash_prevouts,
                    hash_sequence,
                    txin.outpoint,
                    _varint(len(script_code)),
                    script_code,
                    txin.value.to_bytes(8, "little"),
                    txin.sequence.to_bytes(4, "little"),
                    hash_outputs,
                    tx.lock_time.to_bytes(4, "little"),
                    sighash_type,
                ]
            )
        else:
            # Legacy sighash: every scriptSig emptied except this input's, which
            # holds the script being spent; no witness even in a segwit tx.
            script_sigs = [script_code if j == index else b"" for j in range(len(tx.inputs))]
            preimage = _serialize(tx, script_sigs, None) + sighash_type
        digests.append(sha256d(preimage))
    return tuple(digests)
