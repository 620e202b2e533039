"""Tron staking contracts checked by a second implementation (unit and integration tests).

tronpy builds each contract's JSON (as it would send a node), and a protobuf
wire encoder written here from java-tron's field numbers (core/contract/
balance_contract.proto, witness_contract.proto; the ContractType numbers from
tronpy's classes) turns that JSON into the Transaction.raw bytes a node would
rebuild. tronpy's own offline encoder knows only transfers and smart-contract
calls, so it cannot be used for these.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tronpy import Tron
from tronpy.proto import tron_pb2 as tronpy_pb2

from tests.second_impl import tron_signer

TRONPY = Tron(network="nile").trx  # builds offline: nothing here talks to a node

_RESOURCE = {"BANDWIDTH": 0, "ENERGY": 1}
# (field name, number, kind) per contract message, from java-tron's protos.
_FIELDS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "FreezeBalanceV2Contract": (
        ("owner_address", 1, "hex"),
        ("frozen_balance", 2, "int"),
        ("resource", 3, "resource"),
    ),
    "UnfreezeBalanceV2Contract": (
        ("owner_address", 1, "hex"),
        ("unfreeze_balance", 2, "int"),
        ("resource", 3, "resource"),
    ),
    "WithdrawExpireUnfreezeContract": (("owner_address", 1, "hex"),),
    "DelegateResourceContract": (
        ("owner_address", 1, "hex"),
        ("resource", 2, "resource"),
        ("balance", 3, "int"),
        ("receiver_address", 4, "hex"),
        ("lock", 5, "int"),
        ("lock_period", 6, "int"),
    ),
    "UnDelegateResourceContract": (
        ("owner_address", 1, "hex"),
        ("resource", 2, "resource"),
        ("balance", 3, "int"),
        ("receiver_address", 4, "hex"),
    ),
    "VoteWitnessContract": (("owner_address", 1, "hex"), ("votes", 2, "votes")),
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(number: int, value: int) -> bytes:
    # proto3 writes nothing for a default value.
    return _varint(number << 3) + _varint(value) if value else b""


def _bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value if value else b""


def _encode_contract(kind: str, value: dict[str, Any]) -> bytes:
    out = b""
    for name, number, how in _FIELDS[kind]:
        item = value.get(name)
        if item is None:
            continue
        if how == "hex":
            out += _bytes(number, bytes.fromhex(item))
        elif how == "resource":
            out += _int(number, _RESOURCE[item])
        elif how == "votes":
            for vote in item:
                inner = _bytes(1, bytes.fromhex(vote["vote_address"])) + _int(2, vote["vote_count"])
                out += _bytes(number, inner)
        else:
            out += _int(number, int(item))
    return out


def encode_raw_independently(raw_data: dict[str, Any]) -> bytes:
    """Transaction.raw of a raw_data JSON object, without any generated protobuf class."""
    [contract] = raw_data["contract"]
    kind = contract["type"]
    # The ContractType number from tronpy's own protobuf classes.
    type_number = tronpy_pb2.Transaction.Contract.ContractType.Value(kind)
    parameter = _bytes(1, contract["parameter"]["type_url"].encode()) + _bytes(
        2, _encode_contract(kind, contract["parameter"]["value"])
    )
    encoded_contract = _int(1, type_number) + _bytes(2, parameter)
    return (
        _bytes(1, bytes.fromhex(raw_data["ref_block_bytes"]))
        + _bytes(4, bytes.fromhex(raw_data["ref_block_hash"]))
        + _int(8, raw_data["expiration"])
        + _bytes(11, encoded_contract)
        + _int(14, raw_data["timestamp"])
        + _int(18, raw_data.get("fee_limit", 0))
    )


def tronpy_raw_data(builder: Any, like: dict[str, Any]) -> dict[str, Any]:
    """tronpy's built raw_data, with the reference block and times of `like`."""
    # build(offline=True) would compute the txID with tronpy's encoder, which
    # knows only transfers and smart-contract calls; the contract JSON is what
    # tronpy's builder makes and would send a node.
    raw: dict[str, Any] = dict(builder._raw_data)  # the builder's product
    for field in ("ref_block_bytes", "ref_block_hash", "timestamp", "expiration"):
        raw[field] = like[field]
    return raw


def defaults_dropped(value: dict[str, Any]) -> dict[str, Any]:
    # tronpy writes lock: false; a node (and the adapter) leave default values out.
    return {k: v for k, v in value.items() if v not in (False, 0)}


def check_with_tronpy(raw_tx_json: str, builder: Any) -> str:
    """Check a signed staking transaction against tronpy's builder; the signer's address."""
    obj = json.loads(raw_tx_json)
    ours = obj["raw_data"]
    theirs = tronpy_raw_data(builder, ours)
    [our_contract], [their_contract] = ours["contract"], theirs["contract"]
    assert our_contract["type"] == their_contract["type"]
    assert our_contract["parameter"]["type_url"] == their_contract["parameter"]["type_url"]
    assert our_contract["parameter"]["value"] == defaults_dropped(
        their_contract["parameter"]["value"]
    )
    # The bytes signed are those a node rebuilds from tronpy's JSON.
    raw = encode_raw_independently(theirs)
    assert raw.hex() == obj["raw_data_hex"]
    assert hashlib.sha256(raw).hexdigest() == obj["txID"]
    return tron_signer(raw_tx_json)
