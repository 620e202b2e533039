"""Tron: TRX transfers (TransferContract), TRC-20 transfers (TriggerSmartContract),
and staking (Stake 2.0: FreezeBalanceV2, UnfreezeBalanceV2, DelegateResource,
UnDelegateResource, WithdrawExpireUnfreeze) and voting (VoteWitness) contracts.

The key signs the txID, SHA-256 of the serialized Transaction.raw. A node's
/wallet/broadcasttransaction does not read raw_data_hex: it rebuilds
Transaction.raw from the JSON raw_data (java-tron's Util.packTransaction). So
the adapter builds that JSON object first and serializes exactly it, and what
the key signs is what the node rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import base58
from eth_hash.auto import keccak

from custos.common.secp256k1 import RecoverableSignature, uncompressed
from custos.proto.tron import tron_pb2
from custos.signer.chains.base import (
    Address,
    ContractCall,
    Intent,
    InvalidField,
    KeyInfo,
    PreparedTx,
    SignedTx,
    Staking,
    Transfer,
)
from custos.signer.chains.items import (
    TronDelegateResource,
    TronFreezeBalanceV2,
    TronStaking,
    TronTransaction,
    TronTrc20Transfer,
    TronTrxTransfer,
    TronUnDelegateResource,
    TronUnfreezeBalanceV2,
    TronVoteWitness,
    TronWithdrawExpireUnfreeze,
)
from custos.signer.chains.limits import DEFAULT_LIMITS, ITEM_UNITS, ChainLimits, WorkBudget

NETWORKS = ("mainnet", "shasta", "nile")  # one address format on all three
ADDRESS_PREFIX = 0x41
# java-tron reads the contract message type from this URL; the package is upstream's.
TYPE_URL_PREFIX = "type.googleapis.com/protocol."
# Mainnet's maxFeeLimit chain parameter (15,000 TRX), applied on the testnets too;
# the default of limits.tron_max_fee_limit_sun, which may only lower it.
MAX_FEE_LIMIT = 15_000_000_000
# java-tron refuses an expiration more than 24 h past the head block
# (MAXIMUM_TIME_UNTIL_EXPIRATION); against timestamp it is the same bound.
MAX_LIFETIME_MS = 24 * 60 * 60 * 1000
# Milliseconds since epoch from 2001-09-09 on; a time in seconds is far below.
_MIN_TIMESTAMP_MS = 10**12
UINT256_MAX = 2**256 - 1
_UINT256_DIGITS = len(str(UINT256_MAX))
_TRC20_TRANSFER = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
_REF_BLOCK_BYTES = re.compile(r"[0-9a-fA-F]{4}")
_REF_BLOCK_HASH = re.compile(r"[0-9a-fA-F]{16}")
_DIGITS = re.compile(r"[0-9]+")
# java-tron's minimum stake and delegation (TRX_PRECISION: 1 TRX).
MIN_STAKE_SUN = 1_000_000
# java-tron's MAX_VOTE_NUMBER: witnesses one VoteWitnessContract may vote for.
MAX_VOTES = 30
# A locked delegation's lock period, in 3-second blocks: lock_period 0 means
# java-tron's default (DELEGATE_PERIOD, 3 days); the chain parameter
# maxDelegateLockPeriod can be raised to at most 365 days.
DEFAULT_LOCK_PERIOD = 86_400
MAX_LOCK_PERIOD = 10_512_000
RESOURCES = ("BANDWIDTH", "ENERGY")  # tron_pb2.ResourceCode names Custos signs
# A base58check Tron address is 34 characters. Base58 decoding is quadratic in
# the length (a 160,000-character string took 14 s), and a request may carry
# megabytes, so longer strings are refused before decoding (found by fuzzing).
_MAX_ADDRESS_CHARS = 64


@lru_cache(maxsize=1024)
def key_raw_address(public_key: bytes) -> bytes:
    """The 21-byte address (0x41 || last 20 bytes of keccak256(X || Y)) of a SEC1 public key."""
    if len(public_key) != 65 or public_key[0] != 4:
        public_key = uncompressed(public_key)
    return bytes([ADDRESS_PREFIX]) + keccak(public_key[1:])[12:]


@lru_cache(maxsize=1024)
def key_address(public_key: bytes) -> str:
    """The base58check (T...) account address of a SEC1 public key."""
    return to_base58(key_raw_address(public_key))


def to_base58(raw: bytes) -> str:
    """base58check form of a 21-byte address."""
    text: str = base58.b58encode_check(raw).decode("ascii")
    return text


def _show(text: str) -> str:
    # Messages go back to the caller as the gRPC status message, a trailer: one
    # that echoes a huge field whole reaches the client as RESOURCE_EXHAUSTED,
    # not INVALID_ARGUMENT (found by fuzzing). Show at most 80 characters.
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


def parse_address(field: str, text: str) -> bytes:
    """The 21 bytes (0x41 || account id) of a base58check address; InvalidField if malformed."""
    if not text:
        raise InvalidField(field, "required: a base58check Tron address (T...)")
    if len(text) > _MAX_ADDRESS_CHARS:
        raise InvalidField(
            field, f"a base58check Tron address has 34 characters, got {len(text)}: {_show(text)}"
        )
    try:
        raw: bytes = base58.b58decode_check(text)
    except ValueError:
        raise InvalidField(
            field, f"not a base58check address (bad character or checksum): {_show(text)}"
        ) from None
    # The decoder forgives trailing whitespace; one address must have one spelling.
    if to_base58(raw) != text:
        raise InvalidField(field, f"not in canonical base58check form: {_show(text)}")
    if len(raw) != 21:
        raise InvalidField(field, f"must decode to 21 bytes, got {len(raw)}: {_show(text)}")
    if raw[0] != ADDRESS_PREFIX:
        raise InvalidField(field, f"not a Tron address (version byte 0x{raw[0]:02x}, not 0x41)")
    return raw


def encode_raw(raw_data: Mapping[str, Any]) -> bytes:
    """Transaction.raw bytes of a raw_data JSON object (visible=false form), as java-tron builds.

    Supports the contract types Custos signs; ValueError on any other.
    """
    raw = tron_pb2.Transaction.raw(
        ref_block_bytes=bytes.fromhex(raw_data["ref_block_bytes"]),
        ref_block_hash=bytes.fromhex(raw_data["ref_block_hash"]),
        expiration=raw_data["expiration"],
        timestamp=raw_data["timestamp"],
        fee_limit=raw_data.get("fee_limit", 0),
    )
    for contract in raw_data["contract"]:
        kind = contract["type"]
        value = contract["parameter"]["value"]
        if kind not in _CONTRACTS:
            raise ValueError(f"unsupported contract type {kind!r}")
        inner = _CONTRACTS[kind](**_proto_fields(value))
        raw.contract.add(
            type=tron_pb2.Transaction.Contract.ContractType.Value(kind),
            parameter=tron_pb2.Any(
                type_url=contract["parameter"]["type_url"], value=inner.SerializeToString()
            ),
        )
    encoded: bytes = raw.SerializeToString()
    return encoded


# The contract messages encode_raw builds, by their ContractType name.
_CONTRACTS: dict[str, Any] = {
    name: getattr(tron_pb2, name)
    for name in tron_pb2.Transaction.Contract.ContractType.keys()  # noqa: SIM118 - not a dict
    if name != "AccountCreateContract"
}
_BYTES_FIELDS = ("owner_address", "to_address", "contract_address", "receiver_address", "data")


def _proto_fields(value: Mapping[str, Any]) -> dict[str, Any]:
    # The JSON form (visible=false): addresses and data in hex, enums by name.
    out: dict[str, Any] = {}
    for name, item in value.items():
        if name in _BYTES_FIELDS:
            out[name] = bytes.fromhex(item)
        elif name == "votes":
            out[name] = [
                tron_pb2.VoteWitnessContract.Vote(
                    vote_address=bytes.fromhex(v["vote_address"]), vote_count=v["vote_count"]
                )
                for v in item
            ]
        elif name == "resource":
            out[name] = tron_pb2.ResourceCode.Value(item)
        else:
            out[name] = item
    return out


def _contract(kind: str, value: dict[str, Any]) -> dict[str, Any]:
    # Key order follows a node's own output, so the JSON reads like one.
    return {"parameter": {"value": value, "type_url": TYPE_URL_PREFIX + kind}, "type": kind}


def _token_amount(field: str, text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise InvalidField(
            field,
            f"must be a decimal integer of digits 0-9 (no sign, point or spaces): {_show(text)}",
        )
    if len(text) > 1 and text[0] == "0":
        raise InvalidField(field, f"must not have leading zeros: {_show(text)}")
    # Checking the length first keeps int() away from huge strings.
    if len(text) > _UINT256_DIGITS or int(text) > UINT256_MAX:
        raise InvalidField(field, "overflows uint256 (must be at most 2^256-1)")
    if int(text) == 0:
        raise InvalidField(field, "must be positive")
    return int(text)


def _check_times(tx: TronTransaction, limits: ChainLimits, now_ms: int) -> None:
    if tx.timestamp <= 0:
        raise InvalidField("tron.timestamp", "required: creation time in ms since epoch")
    if tx.timestamp < _MIN_TIMESTAMP_MS:
        raise InvalidField(
            "tron.timestamp", f"{tx.timestamp} looks like seconds; Tron times are milliseconds"
        )
    if tx.expiration <= tx.timestamp:
        raise InvalidField("tron.expiration", "must be later than timestamp (both in ms)")
    if tx.expiration - tx.timestamp > MAX_LIFETIME_MS:
        raise InvalidField(
            "tron.expiration", "must be at most 24 hours after timestamp (Tron's maximum)"
        )
    # A node takes a transaction until its expiration, and up to 24 h before it
    # (the expiration must be within 24 h of the head block): one expiring far
    # ahead is a signature someone can hold and broadcast much later. The bound
    # only grows with time, so a batch prepared again after approval still passes.
    latest = now_ms + limits.max_lock_ahead_seconds * 1000
    if tx.expiration > latest:
        raise InvalidField(
            "tron.expiration",
            f"{tx.expiration} is more than limits.max_lock_ahead_seconds = "
            f"{limits.max_lock_ahead_seconds} from now ({now_ms} ms)",
        )


def _trx_transfer(
    tx: TronTransaction, item: TronTrxTransfer, owner: bytes, limits: ChainLimits
) -> tuple[Transfer, dict[str, Any]]:
    to_raw = parse_address("tron.trx_transfer.to", item.to)
    if to_raw == owner:
        # java-tron's TransferActuator refuses it; better to fail here than at broadcast.
        raise InvalidField("tron.trx_transfer.to", "is the signing key's own address")
    amount = item.amount
    if amount <= 0:
        raise InvalidField("tron.trx_transfer.amount", "must be a positive number of sun")
    if amount > limits.tron_max_amount_sun:
        raise InvalidField(
            "tron.trx_transfer.amount",
            f"{amount} sun exceeds limits.tron_max_amount_sun = {limits.tron_max_amount_sun}",
        )
    # fee_limit caps TVM energy only; a TransferContract never spends it, and a
    # nonzero value would show policy a fee cap that caps nothing.
    if tx.fee_limit != 0:
        raise InvalidField("tron.fee_limit", "must be 0 for a TRX transfer (TRC-20 only)")
    value = {"amount": amount, "owner_address": owner.hex(), "to_address": to_raw.hex()}
    return Transfer(to_base58(to_raw), "native", amount), _contract("TransferContract", value)


def _trc20_transfer(
    tx: TronTransaction, item: TronTrc20Transfer, owner: bytes, limits: ChainLimits
) -> tuple[Transfer, ContractCall, dict[str, Any]]:
    token_raw = parse_address("tron.trc20_transfer.contract", item.contract)
    to_raw = parse_address("tron.trc20_transfer.to", item.to)
    amount = _token_amount("tron.trc20_transfer.amount", item.amount)
    max_fee_limit = min(MAX_FEE_LIMIT, limits.tron_max_fee_limit_sun)
    if not 0 < tx.fee_limit <= max_fee_limit:
        raise InvalidField(
            "tron.fee_limit",
            f"must be 1..{max_fee_limit} sun for a TRC-20 transfer "
            f"(limits.tron_max_fee_limit_sun), got {tx.fee_limit}",
        )
    token, to = to_base58(token_raw), to_base58(to_raw)
    call = ContractCall(token, "transfer", (("to", to), ("amount", str(amount))))
    # The ABI address word holds the 20-byte account id; the 0x41 prefix stays out.
    data = _TRC20_TRANSFER + to_raw[1:].rjust(32, b"\0") + amount.to_bytes(32, "big")
    # call_value 0 is left out, as a node leaves out every default value.
    value = {"data": data.hex(), "owner_address": owner.hex(), "contract_address": token_raw.hex()}
    return Transfer(to, token, amount), call, _contract("TriggerSmartContract", value)


# ---- staking and voting --------------------------------------------------


def _resource(field: str, text: str) -> str:
    if text not in RESOURCES:
        raise InvalidField(field, f"must be BANDWIDTH or ENERGY, got {_show(text)}")
    return text


def _sun(field: str, amount: int, limits: ChainLimits, minimum: int = 1) -> int:
    if amount < minimum:
        least = "1 TRX (1000000 sun)" if minimum == MIN_STAKE_SUN else "1 sun"
        raise InvalidField(field, f"must be at least {least}, got {amount}")
    if amount > limits.tron_max_amount_sun:
        raise InvalidField(
            field, f"{amount} sun exceeds limits.tron_max_amount_sun = {limits.tron_max_amount_sun}"
        )
    return amount


def _receiver(field: str, text: str, owner: bytes) -> bytes:
    raw = parse_address(field, text)
    if raw == owner:
        # java-tron refuses delegating to, or reclaiming from, the owner itself.
        raise InvalidField(field, "is the signing key's own address")
    return raw


_Staked = tuple[Staking, dict[str, Any]]


def _freeze(item: TronFreezeBalanceV2, owner: bytes, limits: ChainLimits) -> _Staked:
    amount = _sun("tron.freeze_balance_v2.amount", item.amount, limits, MIN_STAKE_SUN)
    resource = _resource("tron.freeze_balance_v2.resource", item.resource)
    value = {"owner_address": owner.hex(), "frozen_balance": amount, "resource": resource}
    return Staking("stake", amount, resource), _contract("FreezeBalanceV2Contract", value)


def _unfreeze(item: TronUnfreezeBalanceV2, owner: bytes, limits: ChainLimits) -> _Staked:
    amount = _sun("tron.unfreeze_balance_v2.amount", item.amount, limits)
    resource = _resource("tron.unfreeze_balance_v2.resource", item.resource)
    value = {"owner_address": owner.hex(), "unfreeze_balance": amount, "resource": resource}
    return Staking("unstake", amount, resource), _contract("UnfreezeBalanceV2Contract", value)


def _delegate(item: TronDelegateResource, owner: bytes, limits: ChainLimits) -> _Staked:
    receiver = _receiver("tron.delegate_resource.receiver", item.receiver, owner)
    amount = _sun("tron.delegate_resource.amount", item.amount, limits, MIN_STAKE_SUN)
    resource = _resource("tron.delegate_resource.resource", item.resource)
    value: dict[str, Any] = {
        "owner_address": owner.hex(),
        "receiver_address": receiver.hex(),
        "balance": amount,
        "resource": resource,
    }
    lock_period: int | None = None
    if item.lock:
        if not 0 <= item.lock_period <= MAX_LOCK_PERIOD:
            raise InvalidField(
                "tron.delegate_resource.lock_period",
                f"must be 0 (the default, 3 days) to {MAX_LOCK_PERIOD} blocks "
                f"(365 days), got {item.lock_period}",
            )
        value["lock"] = True
        if item.lock_period:
            value["lock_period"] = item.lock_period
        # What java-tron applies: 0 stands for the default period.
        lock_period = item.lock_period or DEFAULT_LOCK_PERIOD
    elif item.lock_period:
        raise InvalidField("tron.delegate_resource.lock_period", "is set but lock is false")
    staking = Staking("delegate", amount, resource, to_base58(receiver), lock_period)
    return staking, _contract("DelegateResourceContract", value)


def _undelegate(item: TronUnDelegateResource, owner: bytes, limits: ChainLimits) -> _Staked:
    receiver = _receiver("tron.undelegate_resource.receiver", item.receiver, owner)
    amount = _sun("tron.undelegate_resource.amount", item.amount, limits)
    resource = _resource("tron.undelegate_resource.resource", item.resource)
    value = {
        "owner_address": owner.hex(),
        "receiver_address": receiver.hex(),
        "balance": amount,
        "resource": resource,
    }
    staking = Staking("undelegate", amount, resource, to_base58(receiver))
    return staking, _contract("UnDelegateResourceContract", value)


def _withdraw(item: TronWithdrawExpireUnfreeze, owner: bytes, limits: ChainLimits) -> _Staked:
    value = {"owner_address": owner.hex()}
    return Staking("withdraw_unfrozen"), _contract("WithdrawExpireUnfreezeContract", value)


def _vote(item: TronVoteWitness, owner: bytes, limits: ChainLimits) -> _Staked:
    votes = item.votes
    if not 1 <= len(votes) <= MAX_VOTES:
        raise InvalidField(
            "tron.vote_witness.votes", f"must list 1 to {MAX_VOTES} witnesses, got {len(votes)}"
        )
    max_count = limits.tron_max_amount_sun // 1_000_000  # one vote per staked TRX
    seen: set[bytes] = set()
    facts: list[tuple[str, int]] = []
    signed: list[dict[str, Any]] = []
    for i, vote in enumerate(votes):
        field = f"tron.vote_witness.votes[{i}]"
        witness = parse_address(f"{field}.witness", vote.witness)
        if witness in seen:
            raise InvalidField(f"{field}.witness", "votes for a witness listed before")
        seen.add(witness)
        if not 0 < vote.count <= max_count:
            raise InvalidField(
                f"{field}.count",
                f"must be 1..{max_count} (limits.tron_max_amount_sun in TRX), got {vote.count}",
            )
        facts.append((to_base58(witness), vote.count))
        signed.append({"vote_address": witness.hex(), "vote_count": vote.count})
    value = {"owner_address": owner.hex(), "votes": signed}
    return Staking("vote", votes=tuple(facts)), _contract("VoteWitnessContract", value)


def _staking(item: TronStaking, owner: bytes, limits: ChainLimits) -> _Staked:
    match item:
        case TronFreezeBalanceV2():
            return _freeze(item, owner, limits)
        case TronUnfreezeBalanceV2():
            return _unfreeze(item, owner, limits)
        case TronDelegateResource():
            return _delegate(item, owner, limits)
        case TronUnDelegateResource():
            return _undelegate(item, owner, limits)
        case TronWithdrawExpireUnfreeze():
            return _withdraw(item, owner, limits)
        case TronVoteWitness():
            return _vote(item, owner, limits)


# The staking contracts' fields in TronTransaction, as the error for a missing contract lists them.
_STAKING = (
    "freeze_balance_v2",
    "unfreeze_balance_v2",
    "delegate_resource",
    "undelegate_resource",
    "withdraw_expire_unfreeze",
    "vote_witness",
)


@dataclass(frozen=True, slots=True)
class TronTx:
    """A validated Tron transaction: its raw_data JSON text and the bytes the txID hashes."""

    network: str
    address: str  # the signing key's address, the contract's owner_address
    raw_data_json: str
    raw: bytes
    txid: bytes  # SHA-256 of raw
    fee_limit: int


class TronAdapter:
    """Tron signing (mainnet, Shasta, Nile): TRX and TRC-20 transfers, staking and voting."""

    kind = "tron"

    def __init__(
        self, limits: ChainLimits = DEFAULT_LIMITS, clock: Callable[[], float] = time.time
    ) -> None:
        self._limits = limits
        self._clock = clock  # Unix seconds, for the expiration bound

    def addresses(self, public_key: bytes) -> list[Address]:
        address = key_address(public_key)
        return [Address("tron", network, "account", address) for network in NETWORKS]

    def prepare(
        self, tx: TronTransaction, key: KeyInfo, budget: WorkBudget | None = None
    ) -> PreparedTx:
        if budget is not None:
            budget.charge(ITEM_UNITS + tx.wire_size, "tron")
        if tx.network not in NETWORKS:
            raise InvalidField(
                "tron.network",
                f"unknown network {_show(tx.network)} (known: {', '.join(NETWORKS)})",
            )
        owner = key_raw_address(key.public_key)
        item = tx.contract
        call: ContractCall | None = None
        staking: Staking | None = None
        transfers: tuple[Transfer, ...] = ()
        if isinstance(item, TronTrxTransfer):
            transfer, contract = _trx_transfer(tx, item, owner, self._limits)
            transfers = (transfer,)
        elif isinstance(item, TronTrc20Transfer):
            transfer, call, contract = _trc20_transfer(tx, item, owner, self._limits)
            transfers = (transfer,)
        elif item is not None:
            staking, contract = _staking(item, owner, self._limits)
            # fee_limit caps TVM energy only, which no staking contract spends.
            if tx.fee_limit != 0:
                raise InvalidField("tron.fee_limit", f"must be 0 for {item.field} (TRC-20 only)")
        else:
            raise InvalidField(
                "tron.contract",
                f"required: set one of trx_transfer, trc20_transfer, {', '.join(_STAKING)}",
            )
        if not _REF_BLOCK_BYTES.fullmatch(tx.ref_block_bytes):
            raise InvalidField(
                "tron.ref_block_bytes",
                f"must be 2 bytes as 4 hex digits: {_show(tx.ref_block_bytes)}",
            )
        if not _REF_BLOCK_HASH.fullmatch(tx.ref_block_hash):
            raise InvalidField(
                "tron.ref_block_hash",
                f"must be 8 bytes as 16 hex digits: {_show(tx.ref_block_hash)}",
            )
        _check_times(tx, self._limits, int(self._clock() * 1000))

        raw_data: dict[str, Any] = {
            "contract": [contract],
            "ref_block_bytes": tx.ref_block_bytes.lower(),
            "ref_block_hash": tx.ref_block_hash.lower(),
            "expiration": tx.expiration,
        }
        if tx.fee_limit:
            raw_data["fee_limit"] = tx.fee_limit
        raw_data["timestamp"] = tx.timestamp
        raw = encode_raw(raw_data)
        address = to_base58(owner)
        parsed = TronTx(
            network=tx.network,
            address=address,
            raw_data_json=json.dumps(raw_data, separators=(",", ":")),
            raw=raw,
            txid=hashlib.sha256(raw).digest(),
            fee_limit=tx.fee_limit,
        )
        intent = Intent(
            chain="tron",
            network=tx.network,
            key_id=key.key_id,
            from_address=address,
            transfers=transfers,
            fee=tx.fee_limit,
            contract_call=call,
            staking=staking,
            fee_details=(("fee_limit", tx.fee_limit),),
            expiration_ms=tx.expiration,
        )
        return PreparedTx(intent, (parsed.txid,), parsed)

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        parsed = prepared.unsigned
        if not isinstance(parsed, TronTx):
            raise TypeError("assemble() needs a PreparedTx made by TronAdapter.prepare()")
        if len(signatures) != 1:
            raise ValueError(f"a Tron transaction takes 1 signature, got {len(signatures)}")
        sig = signatures[0]
        if sig.recovery_id not in (0, 1):
            raise ValueError(f"recovery id must be 0 or 1, got {sig.recovery_id}")
        txid = parsed.txid.hex()
        # The object a node's broadcasttransaction takes, keys in a node's own order.
        signed = {
            "visible": False,
            "txID": txid,
            "raw_data": json.loads(parsed.raw_data_json),
            "raw_data_hex": parsed.raw.hex(),
            "signature": [sig.rsv().hex()],
        }
        return SignedTx(
            chain="tron",
            network=parsed.network,
            address=parsed.address,
            tx_id=txid,
            raw_tx=json.dumps(signed, separators=(",", ":")),
            max_fee=parsed.fee_limit,
        )
