"""Tron staking and voting contracts: tronpy's transaction builder as second implementation.

tests/tron_staking.py encodes tronpy's JSON independently: its SHA-256 must be
the txID the adapter signed, and tronpy recovers the signer from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from tronpy.keys import PrivateKey, to_hex_address

from custos.common.intent import Staking
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.base import InvalidField
from custos.signer.chains.limits import ChainLimits
from custos.signer.chains.tron import (
    DEFAULT_LOCK_PERIOD,
    MAX_LOCK_PERIOD,
    MAX_VOTES,
    TronAdapter,
    key_address,
)
from custos.signer.edge import requests as edge
from tests.second_impl import tron_signer
from tests.support import LocalKey
from tests.tron_staking import TRONPY, check_with_tronpy
from tests.unit.test_chain_tron import ADAPTER, KEY, KEY_ADDRESS, NOW, RECIPIENT, make_tx, sign

WITNESS_A = PrivateKey(bytes([0x31] * 32)).public_key.to_base58check_address()
WITNESS_B = PrivateKey(bytes([0x32] * 32)).public_key.to_base58check_address()

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
    assert check_with_tronpy(signed.raw_tx, build()) == KEY_ADDRESS == signed.address
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
        ADAPTER.prepare(edge.transaction(tx), KEY.info)
    assert caught.value.field == field
    assert words in caught.value.message


def test_amounts_are_bounded_by_the_configured_limit() -> None:
    adapter = TronAdapter(ChainLimits(tron_max_amount_sun=10_000_000), clock=lambda: NOW / 1000)
    ok = make_tx(freeze_balance_v2=pb.TronFreezeBalanceV2(amount=10_000_000, resource="ENERGY"))
    assert adapter.prepare(edge.transaction(ok), KEY.info).intent.staking == Staking(
        "stake", 10_000_000, "ENERGY"
    )
    over = make_tx(
        delegate_resource=pb.TronDelegateResource(
            receiver=RECIPIENT, amount=10_000_001, resource="ENERGY"
        )
    )
    with pytest.raises(InvalidField, match=r"limits\.tron_max_amount_sun") as caught:
        adapter.prepare(edge.transaction(over), KEY.info)
    assert caught.value.field == "tron.delegate_resource.amount"
    # Votes are TRX of Tron power: the same limit, in TRX.
    votes = make_tx(
        vote_witness=pb.TronVoteWitness(votes=[pb.TronVote(witness=WITNESS_A, count=11)])
    )
    with pytest.raises(InvalidField, match=r"limits\.tron_max_amount_sun") as caught:
        adapter.prepare(edge.transaction(votes), KEY.info)
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
