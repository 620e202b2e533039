"""Tron staking and voting contracts: tronpy's transaction builder as second implementation.

tronpy builds each contract's JSON (as it would send a node), and a protobuf
wire encoder written here from java-tron's field numbers (core/contract/
balance_contract.proto, witness_contract.proto) turns that JSON into the
Transaction.raw bytes a node would rebuild: their SHA-256 must be the txID the
adapter signed. tronpy then recovers the signer from the txID and signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from tronpy import Tron
from tronpy.keys import PrivateKey, to_hex_address
from tronpy.proto import tron_pb2 as tronpy_pb2

from policies.intent import Staking
from proto.custos.v1 import signer_pb2 as pb
from signer.chains.base import InvalidField
from signer.chains.limits import ChainLimits
from signer.chains.tron import (
    DEFAULT_LOCK_PERIOD,
    MAX_LOCK_PERIOD,
    MAX_VOTES,
    TronAdapter,
    key_address,
)
from tests.second_impl import tron_signer
from tests.support import LocalKey
from tests.unit.test_chain_tron import ADAPTER, KEY, KEY_ADDRESS, NOW, RECIPIENT, make_tx, sign

WITNESS_A = PrivateKey(bytes([0x31] * 32)).public_key.to_base58check_address()
WITNESS_B = PrivateKey(bytes([0x32] * 32)).public_key.to_base58check_address()
TRONPY = Tron(network="nile").trx  # builds offline: nothing here talks to a node

# ---- an independent encoder: protobuf wire format from upstream's field numbers ----

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


def _defaults_dropped(value: dict[str, Any]) -> dict[str, Any]:
    # tronpy writes lock: false; a node (and the adapter) leave default values out.
    return {k: v for k, v in value.items() if v not in (False, 0)}


# ---- each contract, signed and checked by the second implementation ----------

CASES: list[tuple[str, pb.TronTransaction, Callable[[], Any], Staking]] = [
    (
        "freeze energy",
        make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=5_000_000, resource="ENERGY")),
        lambda: TRONPY.freeze_balance(KEY_ADDRESS, 5_000_000, "ENERGY"),
        Staking("stake", 5_000_000, "ENERGY"),
    ),
    (
        "freeze bandwidth",
        make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=7_000_000, resource="BANDWIDTH")),
        lambda: TRONPY.freeze_balance(KEY_ADDRESS, 7_000_000, "BANDWIDTH"),
        Staking("stake", 7_000_000, "BANDWIDTH"),
    ),
    (
        "unfreeze",
        make_tx(unfreeze_balance_v2=pb.TronUnfreezeBalanceV2(amount=1, resource="ENERGY")),
        lambda: TRONPY.unfreeze_balance(KEY_ADDRESS, "ENERGY", unfreeze_balance=1),
        Staking("unstake", 1, "ENERGY"),
    ),
    (
        "delegate",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=RECIPIENT, amount=2_000_000, resource="ENERGY"
            )
        ),
        lambda: TRONPY.delegate_resource(KEY_ADDRESS, RECIPIENT, 2_000_000, "ENERGY"),
        Staking("delegate", 2_000_000, "ENERGY", RECIPIENT),
    ),
    (
        "delegate locked, default period",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=RECIPIENT, amount=2_000_000, resource="BANDWIDTH", lock=True
            )
        ),
        lambda: TRONPY.delegate_resource(KEY_ADDRESS, RECIPIENT, 2_000_000, "BANDWIDTH", lock=True),
        Staking("delegate", 2_000_000, "BANDWIDTH", RECIPIENT, DEFAULT_LOCK_PERIOD),
    ),
    (
        "delegate locked 30 days",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=RECIPIENT,
                amount=3_000_000,
                resource="ENERGY",
                lock=True,
                lock_period=864_000,
            )
        ),
        lambda: TRONPY.delegate_resource(
            KEY_ADDRESS, RECIPIENT, 3_000_000, "ENERGY", lock=True, lock_period=864_000
        ),
        Staking("delegate", 3_000_000, "ENERGY", RECIPIENT, 864_000),
    ),
    (
        "undelegate",
        make_tx(
            undelegate_resource=pb.TronUnDelegateResource(
                receiver=RECIPIENT, amount=123, resource="ENERGY"
            )
        ),
        lambda: TRONPY.undelegate_resource(KEY_ADDRESS, RECIPIENT, 123, "ENERGY"),
        Staking("undelegate", 123, "ENERGY", RECIPIENT),
    ),
    (
        "withdraw expired unfreeze",
        make_tx(withdraw_expire_unfreeze=pb.TronWithdrawExpireUnfreeze()),
        lambda: TRONPY.withdraw_stake_balance(KEY_ADDRESS),
        Staking("withdraw_unfrozen"),
    ),
    (
        "vote two witnesses",
        make_tx(
            vote_witness=pb.TronVoteWitness(
                votes=[
                    pb.TronVote(witness=WITNESS_A, count=10),
                    pb.TronVote(witness=WITNESS_B, count=3),
                ]
            )
        ),
        lambda: TRONPY.vote_witness(KEY_ADDRESS, (WITNESS_A, 10), (WITNESS_B, 3)),
        Staking("vote", votes=((WITNESS_A, 10), (WITNESS_B, 3))),
    ),
]


@pytest.mark.parametrize(
    ("tx", "build", "staking"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_signed_staking_agrees_with_tronpy(
    tx: pb.TronTransaction, build: Callable[[], Any], staking: Staking
) -> None:
    prepared, signed = sign(tx)
    obj = json.loads(signed.raw_tx)
    ours = obj["raw_data"]
    theirs = tronpy_raw_data(build(), ours)
    [our_contract], [their_contract] = ours["contract"], theirs["contract"]
    assert our_contract["type"] == their_contract["type"]
    assert our_contract["parameter"]["type_url"] == their_contract["parameter"]["type_url"]
    assert our_contract["parameter"]["value"] == _defaults_dropped(
        their_contract["parameter"]["value"]
    )
    # The bytes signed are those a node rebuilds from tronpy's JSON.
    raw = encode_raw_independently(theirs)
    assert raw.hex() == obj["raw_data_hex"]
    assert hashlib.sha256(raw).hexdigest() == obj["txID"] == signed.tx_id
    assert tron_signer(signed.raw_tx) == KEY_ADDRESS == signed.address
    # What policy sees: the staking fact, no transfer, no fee.
    intent = prepared.intent
    assert intent.staking == staking
    assert intent.transfers == ()
    assert intent.fee == 0
    assert intent.contract_call is None


def test_the_owner_is_always_the_signing_key() -> None:
    # A caller cannot name the owner: every contract is signed for the key's own account.
    other = LocalKey(bytes([0x44] * 32))
    for _, tx, _, _ in CASES:
        for key in (KEY, other):
            prepared, signed = sign(tx, key)
            value = json.loads(signed.raw_tx)["raw_data"]["contract"][0]["parameter"]["value"]
            address = tron_signer(signed.raw_tx)
            assert value["owner_address"] == to_hex_address(address)
            assert prepared.intent.from_address == address == key_address(key.info.public_key)


# ---- bad input: InvalidField naming the field ---------------------------------

BAD: list[tuple[str, pb.TronTransaction, str, str]] = [
    (
        "freeze zero",
        make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=0, resource="ENERGY")),
        "tron.freeze_balance_v2.amount",
        "at least 1 TRX",
    ),
    (
        "freeze below 1 TRX",
        make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=999_999, resource="ENERGY")),
        "tron.freeze_balance_v2.amount",
        "at least 1 TRX",
    ),
    (
        "freeze negative",
        make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=-5_000_000, resource="ENERGY")),
        "tron.freeze_balance_v2.amount",
        "at least",
    ),
    (
        "freeze no resource",
        make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=5_000_000)),
        "tron.freeze_balance_v2.resource",
        "BANDWIDTH or ENERGY",
    ),
    (
        "freeze tron power",
        make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=5_000_000, resource="TRON_POWER")),
        "tron.freeze_balance_v2.resource",
        "BANDWIDTH or ENERGY",
    ),
    (
        "freeze lowercase resource",
        make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=5_000_000, resource="energy")),
        "tron.freeze_balance_v2.resource",
        "BANDWIDTH or ENERGY",
    ),
    (
        "freeze with fee_limit",
        make_tx(
            freeze_balance_v2=pb.TronFreezeBalanceV2(amount=5_000_000, resource="ENERGY"),
            fee_limit=1,
        ),
        "tron.fee_limit",
        "must be 0",
    ),
    (
        "unfreeze zero",
        make_tx(unfreeze_balance_v2=pb.TronUnfreezeBalanceV2(amount=0, resource="ENERGY")),
        "tron.unfreeze_balance_v2.amount",
        "at least 1 sun",
    ),
    (
        "unfreeze bad resource",
        make_tx(unfreeze_balance_v2=pb.TronUnfreezeBalanceV2(amount=5, resource="GAS")),
        "tron.unfreeze_balance_v2.resource",
        "BANDWIDTH or ENERGY",
    ),
    (
        "delegate to self",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=KEY_ADDRESS, amount=2_000_000, resource="ENERGY"
            )
        ),
        "tron.delegate_resource.receiver",
        "own address",
    ),
    (
        "delegate no receiver",
        make_tx(delegate_resource=pb.TronDelegateResource(amount=2_000_000, resource="ENERGY")),
        "tron.delegate_resource.receiver",
        "required",
    ),
    (
        "delegate bad checksum",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=RECIPIENT[:-1] + ("A" if RECIPIENT[-1] != "A" else "B"),
                amount=2_000_000,
                resource="ENERGY",
            )
        ),
        "tron.delegate_resource.receiver",
        "checksum",
    ),
    (
        "delegate zero",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=RECIPIENT, amount=0, resource="ENERGY"
            )
        ),
        "tron.delegate_resource.amount",
        "at least 1 TRX",
    ),
    (
        "delegate bad resource",
        make_tx(delegate_resource=pb.TronDelegateResource(receiver=RECIPIENT, amount=2_000_000)),
        "tron.delegate_resource.resource",
        "BANDWIDTH or ENERGY",
    ),
    (
        "delegate lock period without lock",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=RECIPIENT, amount=2_000_000, resource="ENERGY", lock_period=100
            )
        ),
        "tron.delegate_resource.lock_period",
        "lock is false",
    ),
    (
        "delegate lock period too long",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=RECIPIENT,
                amount=2_000_000,
                resource="ENERGY",
                lock=True,
                lock_period=MAX_LOCK_PERIOD + 1,
            )
        ),
        "tron.delegate_resource.lock_period",
        "365 days",
    ),
    (
        "delegate negative lock period",
        make_tx(
            delegate_resource=pb.TronDelegateResource(
                receiver=RECIPIENT, amount=2_000_000, resource="ENERGY", lock=True, lock_period=-1
            )
        ),
        "tron.delegate_resource.lock_period",
        "blocks",
    ),
    (
        "undelegate from self",
        make_tx(
            undelegate_resource=pb.TronUnDelegateResource(
                receiver=KEY_ADDRESS, amount=5, resource="ENERGY"
            )
        ),
        "tron.undelegate_resource.receiver",
        "own address",
    ),
    (
        "undelegate not an address",
        make_tx(
            undelegate_resource=pb.TronUnDelegateResource(
                receiver="0x" + "11" * 20, amount=5, resource="ENERGY"
            )
        ),
        "tron.undelegate_resource.receiver",
        "base58check",
    ),
    (
        "undelegate zero",
        make_tx(
            undelegate_resource=pb.TronUnDelegateResource(
                receiver=RECIPIENT, amount=0, resource="ENERGY"
            )
        ),
        "tron.undelegate_resource.amount",
        "at least 1 sun",
    ),
    (
        "vote none",
        make_tx(vote_witness=pb.TronVoteWitness()),
        "tron.vote_witness.votes",
        f"1 to {MAX_VOTES}",
    ),
    (
        "vote too many",
        make_tx(
            vote_witness=pb.TronVoteWitness(
                votes=[
                    pb.TronVote(
                        witness=PrivateKey(bytes([i + 1] * 32)).public_key.to_base58check_address(),
                        count=1,
                    )
                    for i in range(MAX_VOTES + 1)
                ]
            )
        ),
        "tron.vote_witness.votes",
        f"1 to {MAX_VOTES}",
    ),
    (
        "vote twice for one witness",
        make_tx(
            vote_witness=pb.TronVoteWitness(
                votes=[
                    pb.TronVote(witness=WITNESS_A, count=1),
                    pb.TronVote(witness=WITNESS_A, count=2),
                ]
            )
        ),
        "tron.vote_witness.votes[1].witness",
        "listed before",
    ),
    (
        "vote zero",
        make_tx(
            vote_witness=pb.TronVoteWitness(
                votes=[
                    pb.TronVote(witness=WITNESS_A, count=1),
                    pb.TronVote(witness=WITNESS_B, count=0),
                ]
            )
        ),
        "tron.vote_witness.votes[1].count",
        "must be 1..",
    ),
    (
        "vote bad witness",
        make_tx(vote_witness=pb.TronVoteWitness(votes=[pb.TronVote(witness="T123", count=1)])),
        "tron.vote_witness.votes[0].witness",
        "",
    ),
]


@pytest.mark.parametrize(("tx", "field", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_staking_names_the_field(tx: pb.TronTransaction, field: str, words: str) -> None:
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(tx, KEY.info)
    assert caught.value.field == field
    assert words in caught.value.message


def test_amounts_are_bounded_by_the_configured_limit() -> None:
    adapter = TronAdapter(ChainLimits(tron_max_amount_sun=10_000_000), clock=lambda: NOW / 1000)
    ok = make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=10_000_000, resource="ENERGY"))
    assert adapter.prepare(ok, KEY.info).intent.staking == Staking("stake", 10_000_000, "ENERGY")
    over = make_tx(
        delegate_resource=pb.TronDelegateResource(
            receiver=RECIPIENT, amount=10_000_001, resource="ENERGY"
        )
    )
    with pytest.raises(InvalidField, match=r"limits\.tron_max_amount_sun") as caught:
        adapter.prepare(over, KEY.info)
    assert caught.value.field == "tron.delegate_resource.amount"
    # Votes are TRX of Tron power: the same limit, in TRX.
    votes = make_tx(
        vote_witness=pb.TronVoteWitness(votes=[pb.TronVote(witness=WITNESS_A, count=11)])
    )
    with pytest.raises(InvalidField, match=r"limits\.tron_max_amount_sun") as caught:
        adapter.prepare(votes, KEY.info)
    assert caught.value.field == "tron.vote_witness.votes[0].count"


def test_staking_summary_for_approvers() -> None:
    facts = {name: sign(tx)[0].intent.staking for name, tx, _, _ in CASES}
    assert facts["delegate locked 30 days"] is not None
    assert facts["delegate locked 30 days"].summary() == (
        f"delegate 3000000 sun ENERGY to {RECIPIENT} locked 864000 blocks"
    )
    assert facts["undelegate"] is not None
    assert facts["undelegate"].summary() == f"undelegate 123 sun ENERGY from {RECIPIENT}"
    assert facts["vote two witnesses"] is not None
    assert facts["vote two witnesses"].summary() == f"vote {WITNESS_A}=10, {WITNESS_B}=3"
