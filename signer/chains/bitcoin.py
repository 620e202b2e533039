"""Bitcoin adapter: one key spends its own P2WPKH and P2PKH outputs, SIGHASH_ALL only.

Serialization and both signature hashes (legacy and BIP143) are written out
here rather than taken from python-bitcoinlib, so that the unit tests' check
of every signed transaction with bitcoinlib is a second implementation and
not the same code run twice.

Every input's value and scriptPubKey come from its previous transaction, which
the caller sends whole and which must hash to the input's txid: a legacy
signature does not commit to the value it spends and a BIP143 one only to its
own input's, so a declared value would let a caller hide a fee from policy
(issue 9). The fee, its rate and the change are computed from proven values.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from custos.common.secp256k1 import RecoverableSignature, compressed
from custos.signer.chains.base import (
    Address,
    Intent,
    InvalidField,
    KeyInfo,
    PreparedTx,
    SignedTx,
    Transfer,
)
from custos.signer.chains.bitcoin_address import (
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
from custos.signer.chains.bitcoin_prevtx import MAX_MONEY, PrevoutProofs
from custos.signer.chains.items import BitcoinInput, BitcoinOutput, BitcoinTransaction
from custos.signer.chains.limits import (
    BITCOIN_INPUT_UNITS,
    BITCOIN_OUTPUT_UNITS,
    DEFAULT_LIMITS,
    ITEM_UNITS,
    PARSE_WEIGHT,
    ChainLimits,
    WorkBudget,
)

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
# nLockTime below this is a block height, from it on a Unix time (BIP65's split).
LOCKTIME_THRESHOLD: Final = 500_000_000
# BIP68 relative lock-time fields of nSequence (transaction version 2 and up).
_SEQ_DISABLE: Final = 1 << 31
_SEQ_TYPE_SECONDS: Final = 1 << 22
_SEQ_MASK: Final = 0xFFFF
_SEQ_GRANULARITY_S: Final = 512
# The service knows no chain tip, so a height lock time is bounded by an upper
# estimate of the current mainnet height: block 840,000 (the fourth halving,
# 2024-04-20 00:09:27 UTC) plus one block per 9 minutes since, faster than the
# 10-minute target, so that a wallet's lock time at the real tip is accepted.
# Test networks have lower heights and are held to the same bound (testnet3's
# block storms put it above: use lock time 0 there).
_HEIGHT_ANCHOR: Final = (840_000, 1_713_571_767)
_ESTIMATE_BLOCK_SECONDS: Final = 540
# Bytes of one BIP143 preimage (version, hashPrevouts, hashSequence, outpoint,
# scriptCode with its length, value, nSequence, hashOutputs, nLockTime, type).
_BIP143_PREIMAGE_BYTES: Final = 4 + 32 + 32 + 36 + 26 + 8 + 4 + 32 + 4 + 4


@dataclass(frozen=True, slots=True)
class _Input:
    outpoint: bytes  # previous txid in serialization (reversed) order || vout, 36 bytes
    value: int  # proven by the previous transaction
    script_type: str  # p2wpkh | p2pkh, from the previous output's proven script
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

    def __init__(
        self, limits: ChainLimits = DEFAULT_LIMITS, clock: Callable[[], float] = time.time
    ) -> None:
        self._limits = limits
        self._clock = clock  # Unix seconds, for the lock-time bounds

    def addresses(self, public_key: bytes) -> list[Address]:
        key = compressed(public_key)
        result = []
        for network in NETWORKS:
            result.append(Address("bitcoin", network, "p2wpkh", p2wpkh_address(key, network)))
            result.append(Address("bitcoin", network, "p2pkh", p2pkh_address(key, network)))
        return result

    def prepare(
        self, tx: BitcoinTransaction, key: KeyInfo, budget: WorkBudget | None = None
    ) -> PreparedTx:
        limits = self._limits
        if budget is not None:
            # Counted from the message's sizes before anything is parsed.
            budget.charge(
                ITEM_UNITS
                + PARSE_WEIGHT * tx.wire_size
                + BITCOIN_INPUT_UNITS * len(tx.inputs)
                + BITCOIN_OUTPUT_UNITS * len(tx.outputs),
                "bitcoin",
            )
        network = _parse_network(tx.network)
        version = _parse_version(tx.version)
        public_key = compressed(key.public_key)
        pubkey_hash = hash160(public_key)
        own_scripts = {p2wpkh_script(pubkey_hash): "p2wpkh", p2pkh_script(pubkey_hash): "p2pkh"}
        inputs = _parse_inputs(tx.inputs, own_scripts, limits)
        outputs = _parse_outputs(tx.outputs, network, limits)
        _check_locks(version, tx.lock_time, inputs, limits, self._clock())
        fee = fee_of(inputs, outputs)
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
        work = sighash_bytes(unsigned)
        if work > limits.bitcoin_max_sighash_bytes:
            raise InvalidField(
                "bitcoin.inputs",
                f"signature hashes of {work} bytes exceed limits.bitcoin_max_sighash_bytes = "
                f"{limits.bitcoin_max_sighash_bytes} (each legacy P2PKH input hashes the "
                "whole transaction; use P2WPKH inputs or fewer inputs)",
            )
        if budget is not None:
            budget.charge(work, "bitcoin.inputs")
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
            lock_time=tx.lock_time,
            sequences=tuple(i.sequence for i in inputs),
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


def _parse_inputs(
    messages: Sequence[BitcoinInput], own_scripts: dict[bytes, str], limits: ChainLimits
) -> tuple[_Input, ...]:
    if not messages:
        raise InvalidField("bitcoin.inputs", "at least one input is required")
    if len(messages) > limits.bitcoin_max_inputs:
        raise InvalidField(
            "bitcoin.inputs",
            f"{len(messages)} inputs exceed limits.bitcoin_max_inputs = "
            f"{limits.bitcoin_max_inputs}",
        )
    inputs: list[_Input] = []
    proofs = PrevoutProofs(limits)
    for index, message in enumerate(messages):
        field = f"bitcoin.inputs[{index}]"
        if not _TXID.fullmatch(message.txid):
            raise InvalidField(f"{field}.txid", "must be 64 hex characters")
        if message.script_type not in ("", "p2wpkh", "p2pkh"):
            raise InvalidField(f"{field}.script_type", "must be p2wpkh or p2pkh (or empty)")
        outpoint = bytes.fromhex(message.txid)[::-1] + message.vout.to_bytes(4, "little")
        value, script = proofs.prove(
            index,
            outpoint,
            message.prev_tx,
            input_field=field,
            prev_field=f"{field}.prev_tx",
            txid_field=f"{field}.txid",
            vout_field=f"{field}.vout",
        )
        script_type = own_scripts.get(script)
        if script_type is None:
            raise InvalidField(
                f"{field}.prev_tx",
                f"output {message.vout} is not locked to this key's P2WPKH or P2PKH script",
            )
        if message.script_type and message.script_type != script_type:
            raise InvalidField(
                f"{field}.script_type",
                f"declared {message.script_type}, but the previous output is {script_type}",
            )
        if message.value and message.value != value:
            raise InvalidField(
                f"{field}.value",
                f"declared {message.value} sat, but the previous output holds {value} sat",
            )
        inputs.append(
            _Input(
                outpoint=outpoint,
                value=value,
                script_type=script_type,
                sequence=DEFAULT_SEQUENCE if message.sequence is None else message.sequence,
            )
        )
    return tuple(inputs)


def _height_upper_estimate(now: float) -> int:
    height, at = _HEIGHT_ANCHOR
    return height + max(0, int(now) - at) // _ESTIMATE_BLOCK_SECONDS


def _check_locks(
    version: int, lock_time: int, inputs: Sequence[_Input], limits: ChainLimits, now: float
) -> None:
    """Refuse a transaction that only becomes valid further ahead than the limits allow.

    A signature for such a transaction is a payment someone can hold and
    broadcast long after the key was disabled or the policy changed. The
    bounds only grow with time, so a batch held for approval and prepared
    again later never fails on them.
    """
    if lock_time >= LOCKTIME_THRESHOLD:
        latest = int(now) + limits.max_lock_ahead_seconds
        if lock_time > latest:
            raise InvalidField(
                "bitcoin.lock_time",
                f"Unix time {lock_time} is more than limits.max_lock_ahead_seconds = "
                f"{limits.max_lock_ahead_seconds} in the future",
            )
    elif lock_time:
        latest = _height_upper_estimate(now) + limits.max_lock_ahead_blocks
        if lock_time > latest:
            raise InvalidField(
                "bitcoin.lock_time",
                f"height {lock_time} is above {latest}, the highest block expected within "
                f"limits.max_lock_ahead_blocks = {limits.max_lock_ahead_blocks}",
            )
    if version < 2:
        return
    for index, txin in enumerate(inputs):
        if txin.sequence & _SEQ_DISABLE:
            continue
        amount = txin.sequence & _SEQ_MASK
        if txin.sequence & _SEQ_TYPE_SECONDS:
            if amount * _SEQ_GRANULARITY_S > limits.max_lock_ahead_seconds:
                raise InvalidField(
                    f"bitcoin.inputs[{index}].sequence",
                    f"relative lock of {amount * _SEQ_GRANULARITY_S} s (BIP68) exceeds "
                    f"limits.max_lock_ahead_seconds = {limits.max_lock_ahead_seconds}",
                )
        elif amount > limits.max_lock_ahead_blocks:
            raise InvalidField(
                f"bitcoin.inputs[{index}].sequence",
                f"relative lock of {amount} blocks (BIP68) exceeds "
                f"limits.max_lock_ahead_blocks = {limits.max_lock_ahead_blocks}",
            )


def _parse_outputs(
    messages: Sequence[BitcoinOutput], network: str, limits: ChainLimits
) -> tuple[_Output, ...]:
    if not messages:
        raise InvalidField("bitcoin.outputs", "at least one output is required")
    if len(messages) > limits.bitcoin_max_outputs:
        raise InvalidField(
            "bitcoin.outputs",
            f"{len(messages)} outputs exceed limits.bitcoin_max_outputs = "
            f"{limits.bitcoin_max_outputs}",
        )
    outputs: list[_Output] = []
    for index, message in enumerate(messages):
        field = f"bitcoin.outputs[{index}]"
        try:
            address, script = script_for_address(message.address, network)
        except AddressError as exc:
            raise InvalidField(f"{field}.address", str(exc)) from None
        outputs.append(_Output(address, script, _amount(message.value, f"{field}.value")))
    return tuple(outputs)


def fee_of(inputs: Sequence[_Input], outputs: Sequence[_Output], field: str = "bitcoin") -> int:
    """Inputs minus outputs, from proven values; errors name `field`.inputs / .outputs."""
    total_in = sum(i.value for i in inputs)
    total_out = sum(o.value for o in outputs)
    if total_in > MAX_MONEY:
        raise InvalidField(f"{field}.inputs", "total value exceeds 21,000,000 BTC")
    if total_out > MAX_MONEY:
        raise InvalidField(f"{field}.outputs", "total value exceeds 21,000,000 BTC")
    if total_out > total_in:
        raise InvalidField(
            f"{field}.outputs", f"outputs exceed inputs by {total_out - total_in} sat"
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


def _unsigned_parts(tx: UnsignedBitcoinTx) -> tuple[bytes, list[bytes], bytes, bytes]:
    """(version and input count, each input with an empty scriptSig, outputs, lock time)."""
    head = tx.version.to_bytes(4, "little") + _varint(len(tx.inputs))
    chunks = [txin.outpoint + b"\x00" + txin.sequence.to_bytes(4, "little") for txin in tx.inputs]
    outputs = _varint(len(tx.outputs)) + b"".join(o.serialize() for o in tx.outputs)
    return head, chunks, outputs, tx.lock_time.to_bytes(4, "little")


def sighash_bytes(tx: UnsignedBitcoinTx) -> int:
    """How many bytes computing every input's signature hash will hash."""
    head, chunks, outputs, lock_time = _unsigned_parts(tx)
    # A legacy preimage is the transaction with one 25-byte scriptSig, plus the type.
    legacy = len(head) + 41 * len(chunks) + 25 + len(outputs) + len(lock_time) + 4
    n_legacy = sum(1 for txin in tx.inputs if txin.script_type == "p2pkh")
    n_segwit = len(tx.inputs) - n_legacy
    # hashPrevouts, hashSequence and hashOutputs (computed once per transaction).
    shared = 40 * len(tx.inputs) + len(outputs) - len(_varint(len(tx.outputs)))
    return n_legacy * legacy + n_segwit * _BIP143_PREIMAGE_BYTES + shared


def _digests(tx: UnsignedBitcoinTx) -> tuple[bytes, ...]:
    # The previous scriptPubKey of a P2PKH input and the BIP143 scriptCode of a
    # P2WPKH input are the same script: the key's P2PKH script.
    script_code = p2pkh_script(hash160(tx.public_key))
    return signature_hashes(
        tx,
        [
            (index, script_code, txin.script_type == "p2wpkh")
            for index, txin in enumerate(tx.inputs)
        ],
    )


def signature_hashes(
    tx: UnsignedBitcoinTx, requests: Sequence[tuple[int, bytes, bool]]
) -> tuple[bytes, ...]:
    """SIGHASH_ALL digests, one per (input index, scriptCode, BIP143 or legacy) request.

    The scriptCode is the script being spent: the previous scriptPubKey of a
    legacy input, the key's P2PKH script for P2WPKH (also nested in P2SH), the
    witness script for P2WSH. The PSBT adapter signs with it too.
    """
    sighash_type = SIGHASH_ALL.to_bytes(4, "little")
    head, chunks, outputs, lock_time = _unsigned_parts(tx)
    # Legacy preimages differ only in which input's scriptSig holds the script:
    # they are sliced from one serialization with every scriptSig empty (each
    # such input is 41 bytes), so the quadratic part is C-level copying and
    # hashing, not Python work per input pair.
    all_inputs = b"".join(chunks)
    tail = outputs + lock_time + sighash_type
    hash_prevouts = sha256d(b"".join(txin.outpoint for txin in tx.inputs))
    hash_sequence = sha256d(b"".join(txin.sequence.to_bytes(4, "little") for txin in tx.inputs))
    hash_outputs = sha256d(outputs[len(_varint(len(tx.outputs))) :])
    digests = []
    for index, script_code, segwit in requests:
        txin = tx.inputs[index]
        sequence = txin.sequence.to_bytes(4, "little")
        if segwit:
            preimage = b"".join(
                [
                    tx.version.to_bytes(4, "little"),
                    hash_prevouts,
                    hash_sequence,
                    txin.outpoint,
                    _varint(len(script_code)),
                    script_code,
                    txin.value.to_bytes(8, "little"),
                    sequence,
                    hash_outputs,
                    lock_time,
                    sighash_type,
                ]
            )
        else:
            # Legacy sighash: every scriptSig emptied except this input's, which
            # holds the script being spent; no witness even in a segwit tx.
            own = txin.outpoint + _varint(len(script_code)) + script_code + sequence
            preimage = b"".join(
                [head, all_inputs[: 41 * index], own, all_inputs[41 * (index + 1) :], tail]
            )
        digests.append(sha256d(preimage))
    return tuple(digests)
