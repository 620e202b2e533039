"""Hypothesis strategies for Tron transactions, transfers, staking and voting (signer/chains/tron.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.evm import UINT256_MAX
from custos.signer.chains.limits import DEFAULT_LIMITS
from custos.signer.chains.tron import (
    MAX_FEE_LIMIT,
    MAX_LIFETIME_MS,
    MAX_LOCK_PERIOD,
    MAX_VOTES,
    MIN_STAKE_SUN,
    RESOURCES,
)
from custos.signer.chains.tron import NETWORKS as TRON_NETWORKS
from tests import builders
from tests.fuzz.strategies import (
    BREAKS,
    DECIMAL_JUNK,
    HEX_JUNK,
    INT64,
    TRON_ADDRESSES,
    any_address,
    fuzzed,
    hex_of,
    ints,
)

_TRON_PAYEES = st.sampled_from([a for a in TRON_ADDRESSES if a != builders.TRON_USDT])
_TRON_TOKENS = st.sampled_from(TRON_ADDRESSES)
_TRON_ANY_ADDRESS = any_address(TRON_ADDRESSES)
_TRON_NETWORK_NAMES = st.sampled_from(TRON_NETWORKS)
_TRON_NETWORK = fuzzed(_TRON_NETWORK_NAMES)
_TRON_NETWORK_OFTEN_VALID = _TRON_NETWORK_NAMES | _TRON_NETWORK
_REF_BYTES = st.one_of(hex_of(2), hex_of(2).map(str.upper))
_REF_HASH = st.one_of(hex_of(8), hex_of(8).map(str.upper))
_REF_BYTES_JUNK = fuzzed(_REF_BYTES) | HEX_JUNK
_REF_HASH_JUNK = fuzzed(_REF_HASH) | HEX_JUNK
_LIFETIME = ints((1, MAX_LIFETIME_MS), 60_000)
_TOKEN_AMOUNT = ints((1, UINT256_MAX)).map(str)
_FEE_LIMIT = ints((1, MAX_FEE_LIMIT), 30_000_000)
_INT64 = ints(INT64)
_ANY_FEE_LIMIT = ints(INT64, MAX_FEE_LIMIT, MAX_FEE_LIMIT + 1)
_ANY_TIMESTAMP = ints(INT64, 10**12 - 1, 10**12)
_TRON_TARGETS = st.sampled_from(
    (
        "network", "to", "trx_amount", "contract", "trc20_amount", "no_contract",
        "ref_block_bytes", "ref_block_hash", "expiration", "timestamp", "fee_limit",
        "empty_trx", "empty_trc20",
        "resource", "stake_amount", "receiver", "lock", "lock_period", "votes",
        "vote_witness", "vote_count",
    )
)  # fmt: skip
# Staking and voting (the oneof names of pb.TronTransaction) and their fields.
TRON_STAKING = (
    "freeze_balance_v2", "unfreeze_balance_v2", "delegate_resource", "undelegate_resource",
    "withdraw_expire_unfreeze", "vote_witness",
)  # fmt: skip
_RESOURCE = st.sampled_from(RESOURCES)
_RESOURCE_JUNK = _RESOURCE | fuzzed(_RESOURCE) | st.sampled_from(("TRON_POWER", "energy", ""))
_STAKE_SUN = ints((MIN_STAKE_SUN, DEFAULT_LIMITS.tron_max_amount_sun))
_LOCK_PERIOD = ints((0, MAX_LOCK_PERIOD), 86_400)
_ANY_LOCK_PERIOD = ints(INT64, MAX_LOCK_PERIOD, MAX_LOCK_PERIOD + 1)
_VOTE_COUNT = ints((1, DEFAULT_LIMITS.tron_max_amount_sun // 1_000_000))
_ANY_VOTE_COUNT = ints(INT64, DEFAULT_LIMITS.tron_max_amount_sun // 1_000_000 + 1)


# Times in the past and amounts within the default [limits], for tron_valid.
_TRON_CONTRACTS = st.sampled_from(("trx", "trc20", "none", *TRON_STAKING))
# Half transfers, half staking and voting.
_TRON_VALID_CONTRACTS = st.one_of(st.sampled_from(("trx", "trc20")), st.sampled_from(TRON_STAKING))
_PAST_TIMESTAMP = ints((10**12, 1_760_000_000_000), 1_700_000_000_000)
_VALID_SUN = ints((1, DEFAULT_LIMITS.tron_max_amount_sun))


@st.composite
def tron_valid(draw: st.DrawFn) -> pb.TronTransaction:
    timestamp = draw(_PAST_TIMESTAMP)
    tx = pb.TronTransaction(
        network=draw(_TRON_NETWORK_NAMES),
        ref_block_bytes=draw(_REF_BYTES),
        ref_block_hash=draw(_REF_HASH),
        timestamp=timestamp,
        expiration=timestamp + draw(_LIFETIME),
    )
    which = draw(_TRON_VALID_CONTRACTS)
    if which == "trx":
        tx.trx_transfer.to = draw(_TRON_PAYEES)
        tx.trx_transfer.amount = draw(_VALID_SUN)
    elif which == "trc20":
        tx.trc20_transfer.contract = draw(_TRON_TOKENS)
        tx.trc20_transfer.to = draw(_TRON_PAYEES)
        tx.trc20_transfer.amount = draw(_TOKEN_AMOUNT)
        tx.fee_limit = draw(_FEE_LIMIT)
    else:
        _tron_staking(draw, tx, which, valid=True)
    return tx


def _tron_staking(draw: st.DrawFn, tx: pb.TronTransaction, which: str, *, valid: bool) -> None:
    """Set the staking or voting contract `which`: valid values, or hostile ones."""
    contract = getattr(tx, which)
    contract.SetInParent()  # withdraw_expire_unfreeze has no fields
    address = _TRON_PAYEES if valid else _TRON_ANY_ADDRESS
    if which == "vote_witness":
        witnesses = draw(st.lists(address, min_size=1, max_size=MAX_VOTES, unique=valid))
        count = _VOTE_COUNT if valid else _ANY_VOTE_COUNT
        contract.votes.extend(pb.TronVote(witness=w, count=draw(count)) for w in witnesses)
        return
    if which == "withdraw_expire_unfreeze":
        return
    contract.resource = draw(_RESOURCE if valid else _RESOURCE_JUNK)
    contract.amount = draw(_STAKE_SUN if valid else _INT64)
    if which in ("delegate_resource", "undelegate_resource"):
        contract.receiver = draw(address)
    if which == "delegate_resource" and draw(st.booleans()):
        contract.lock = True
        contract.lock_period = draw(_LOCK_PERIOD if valid else _ANY_LOCK_PERIOD)


def tron_staking_seeds(key: keys_pb2.Key) -> list[pb.TronTransaction]:
    """One valid transaction per staking and voting contract (mutation seeds)."""
    contracts: list[dict[str, Any]] = [
        {"freeze_balance_v2": pb.TronFreezeBalanceV2(amount=5_000_000, resource="ENERGY")},
        {"unfreeze_balance_v2": pb.TronUnfreezeBalanceV2(amount=1, resource="BANDWIDTH")},
        {
            "delegate_resource": pb.TronDelegateResource(
                receiver=builders.TRON_DEST, amount=2_000_000, resource="ENERGY", lock=True,
                lock_period=86_400,
            )
        },
        {
            "undelegate_resource": pb.TronUnDelegateResource(
                receiver=builders.TRON_DEST, amount=2_000_000, resource="ENERGY"
            )
        },
        {"withdraw_expire_unfreeze": pb.TronWithdrawExpireUnfreeze()},
        {
            "vote_witness": pb.TronVoteWitness(
                votes=[
                    pb.TronVote(witness=builders.TRON_DEST, count=10),
                    pb.TronVote(witness=builders.TRON_USDT, count=1),
                ]
            )
        },
    ]  # fmt: skip
    seeds = []
    for contract in contracts:
        tx = pb.TronTransaction()
        tx.CopyFrom(builders.tron_item(key).tron)
        tx.ClearField("contract")
        tx.MergeFrom(pb.TronTransaction(**contract))
        seeds.append(tx)
    return seeds


def _break_tron(draw: st.DrawFn, tx: pb.TronTransaction) -> None:
    target = draw(_TRON_TARGETS)
    which = tx.WhichOneof("contract")
    if target == "network":
        tx.network = draw(_TRON_NETWORK)
    elif target == "to" and which in ("trx_transfer", "trc20_transfer"):
        getattr(tx, which).to = draw(_TRON_ANY_ADDRESS)
    elif target == "trx_amount":
        tx.trx_transfer.amount = draw(_INT64)
    elif target == "contract":
        tx.trc20_transfer.contract = draw(_TRON_ANY_ADDRESS)
    elif target == "trc20_amount":
        tx.trc20_transfer.amount = draw(DECIMAL_JUNK)
    elif target == "no_contract":
        tx.ClearField("contract")
    elif target == "ref_block_bytes":
        tx.ref_block_bytes = draw(_REF_BYTES_JUNK)
    elif target == "ref_block_hash":
        tx.ref_block_hash = draw(_REF_HASH_JUNK)
    elif target == "expiration":
        # Around the bounds relative to timestamp: equal, one past 24 hours, and anything.
        edge = st.sampled_from((tx.timestamp, tx.timestamp + MAX_LIFETIME_MS + 1))
        tx.expiration = min(draw(edge | _INT64), INT64[1])
    elif target == "timestamp":
        tx.timestamp = draw(_ANY_TIMESTAMP | st.just(tx.expiration))
    elif target == "fee_limit":
        tx.fee_limit = draw(_ANY_FEE_LIMIT)
    elif target == "empty_trx":
        tx.trx_transfer.SetInParent()
    elif target == "empty_trc20":
        tx.trc20_transfer.SetInParent()
    elif which in TRON_STAKING:
        _break_tron_staking(draw, tx, which, target)


def _break_tron_staking(draw: st.DrawFn, tx: pb.TronTransaction, which: str, target: str) -> None:
    contract = getattr(tx, which)
    fields = contract.DESCRIPTOR.fields_by_name
    if target == "resource" and "resource" in fields:
        contract.resource = draw(_RESOURCE_JUNK)
    elif target == "stake_amount" and "amount" in fields:
        contract.amount = draw(_INT64)
    elif target == "receiver" and "receiver" in fields:
        contract.receiver = draw(_TRON_ANY_ADDRESS)
    elif target == "lock" and "lock" in fields:
        contract.lock = not contract.lock
    elif target == "lock_period" and "lock_period" in fields:
        contract.lock_period = draw(_ANY_LOCK_PERIOD)
    elif target == "votes" and "votes" in fields:
        # None, more than java-tron takes, or one witness twice.
        if draw(st.booleans()):
            del contract.votes[:]
        elif contract.votes:
            contract.votes.extend([contract.votes[0]] * draw(st.sampled_from((1, MAX_VOTES))))
    elif target == "vote_witness" and "votes" in fields and contract.votes:
        contract.votes[draw(st.integers(0, len(contract.votes) - 1))].witness = draw(
            _TRON_ANY_ADDRESS
        )
    elif target == "vote_count" and "votes" in fields and contract.votes:
        contract.votes[draw(st.integers(0, len(contract.votes) - 1))].count = draw(_ANY_VOTE_COUNT)


@st.composite
def tron_tx(draw: st.DrawFn) -> pb.TronTransaction:
    """A valid transaction with zero to three fields broken."""
    tx = draw(tron_valid())
    for _ in range(draw(BREAKS)):
        _break_tron(draw, tx)
    return tx


@st.composite
def tron_random(draw: st.DrawFn) -> pb.TronTransaction:
    """Every field hostile."""
    tx = pb.TronTransaction(
        network=draw(_TRON_NETWORK_OFTEN_VALID),
        ref_block_bytes=draw(_REF_BYTES_JUNK),
        ref_block_hash=draw(_REF_HASH_JUNK),
        expiration=draw(_INT64),
        timestamp=draw(_ANY_TIMESTAMP),
        fee_limit=draw(_ANY_FEE_LIMIT),
    )
    which = draw(_TRON_CONTRACTS)
    if which == "trx":
        tx.trx_transfer.to = draw(_TRON_ANY_ADDRESS)
        tx.trx_transfer.amount = draw(_INT64)
    elif which == "trc20":
        tx.trc20_transfer.contract = draw(_TRON_ANY_ADDRESS)
        tx.trc20_transfer.to = draw(_TRON_ANY_ADDRESS)
        tx.trc20_transfer.amount = draw(DECIMAL_JUNK)
    elif which != "none":
        _tron_staking(draw, tx, which, valid=False)
    return tx
