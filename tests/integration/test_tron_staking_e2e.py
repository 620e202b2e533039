"""Tron staking and voting end to end: real SoftHSM token, real in-process mTLS gRPC server.

A bootstrap policy written for these tests: energy may be staked, unstaked and
withdrawn, lent only to the address book's payout wallet, votes are held for an
approver, a blocked account is denied whatever the contract, and a TRX rule
without a staking match allows payments only. Stakes and delegations draw on a
100 TRX daily native limit. Each signed transaction is compared with tronpy's
transaction builder and its signer recovered by tronpy (tests/tron_staking.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from tronpy.keys import PrivateKey

from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import subject_string
from tests import builders
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.support import refused, sign_batch
from tests.tron_staking import TRONPY, check_with_tronpy

pytestmark = pytest.mark.integration

RECEIVER = PrivateKey(bytes([0x33] * 32)).public_key.to_base58check_address()
STRANGER = PrivateKey(bytes([0x44] * 32)).public_key.to_base58check_address()
BLOCKED = PrivateKey(bytes([0x55] * 32)).public_key.to_base58check_address()
TRX = 1_000_000

POLICY = f"""\
version: 1
description: issue 12 Tron staking
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:
  create_key: 0  # one officer creates the test's keys alone (development)
identity_groups:
  approvers: ["{subject_string("approver")}"]
address_book:
  cooling_off: 0s
  groups: [energy, blocked]
  entries:
    - {{id: payout, chain: tron, network: nile, address: {RECEIVER}, groups: [energy]}}
    - {{id: blocked, chain: tron, network: nile, address: {BLOCKED}, groups: [blocked]}}
rules:
  - id: no-blocked
    match: {{destinations: {{groups: [blocked], mode: any}}}}
    action: deny
    reason: blocked account
  - id: energy-staking
    match: {{staking: {{kinds: [stake, unstake, withdraw_unfrozen], resources: [ENERGY]}}}}
    action: allow
  - id: energy-lending
    match:
      staking: {{kinds: [delegate, undelegate], resources: [ENERGY], max_lock_period: 86400}}
      destinations: {{groups: [energy]}}
    action: allow
  - id: votes-held
    match: {{staking: {{kinds: [vote]}}}}
    action: require_approval
    approval: {{approvals: 1, group: approvers, totp: false}}
  - id: trx-payments
    match: {{chains: [tron]}}
    action: allow
limits:
  - id: trx-daily
    window: 24h
    per: [key, asset]
    scope: {{chains: [tron], assets: [native]}}
    max_amount: {100 * TRX}
"""


@pytest.fixture(scope="module")
def stake_server(
    dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with server_with_policy(dev_env, tmp_path_factory.mktemp("tron-staking"), POLICY) as running:
        yield running


@pytest.fixture
def key(stake_server: RunningServer) -> keys_pb2.Key:
    return stake_server.create_key(f"stake-{uuid.uuid4().hex[:10]}")


def _item(key: keys_pb2.Key, **contract: Any) -> pb.SignItem:
    """builders.tron_item's transaction (Nile, a past reference block) with `contract` instead."""
    item = builders.tron_item(key)
    item.tron.ClearField("trx_transfer")
    item.tron.MergeFrom(pb.TronTransaction(**contract))
    return item


def _stake(key: keys_pb2.Key, amount: int, resource: str = "ENERGY") -> pb.SignItem:
    return _item(key, freeze_balance_v2=pb.TronFreezeBalanceV2(amount=amount, resource=resource))


def _delegate(key: keys_pb2.Key, receiver: str = RECEIVER, amount: int = 20 * TRX) -> pb.SignItem:
    return _item(
        key,
        delegate_resource=pb.TronDelegateResource(
            receiver=receiver, amount=amount, resource="ENERGY"
        ),
    )


def _rid() -> str:
    return f"stake-{uuid.uuid4().hex}"


def test_each_contract_is_signed_and_agrees_with_tronpy(
    stake_server: RunningServer, key: keys_pb2.Key
) -> None:
    owner = builders.address(key, "tron", "nile")
    items_and_builders = [
        (_stake(key, 10 * TRX), TRONPY.freeze_balance(owner, 10 * TRX, "ENERGY")),
        (
            _item(key, unfreeze_balance_v2=pb.TronUnfreezeBalanceV2(amount=3, resource="ENERGY")),
            TRONPY.unfreeze_balance(owner, "ENERGY", unfreeze_balance=3),
        ),
        (
            _item(key, withdraw_expire_unfreeze=pb.TronWithdrawExpireUnfreeze()),
            TRONPY.withdraw_stake_balance(owner),
        ),
        (_delegate(key), TRONPY.delegate_resource(owner, RECEIVER, 20 * TRX, "ENERGY")),
        (
            _item(
                key,
                undelegate_resource=pb.TronUnDelegateResource(
                    receiver=RECEIVER, amount=5 * TRX, resource="ENERGY"
                ),
            ),
            TRONPY.undelegate_resource(owner, RECEIVER, 5 * TRX, "ENERGY"),
        ),
    ]
    response = sign_batch(stake_server, *(item for item, _ in items_and_builders))
    assert response.status == pb.BATCH_STATUS_SIGNED
    assert list(response.rules) == ["energy-staking"] * 3 + ["energy-lending"] * 2
    for signed, (_, builder) in zip(response.items, items_and_builders, strict=True):
        assert (signed.chain, signed.network) == ("tron", "nile")
        assert check_with_tronpy(signed.raw_tx, builder) == owner == signed.address


def test_stake_and_delegate_draw_on_the_native_limit(
    stake_server: RunningServer, key: keys_pb2.Key
) -> None:
    assert sign_batch(
        stake_server, _stake(key, 30 * TRX), _delegate(key, amount=40 * TRX)
    ).status == (pb.BATCH_STATUS_SIGNED)
    # 70 of the day's 100 TRX are spent: 31 more is over, 30 fits.
    code, _, meta = refused(stake_server, _stake(key, 31 * TRX))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (meta["limit"], meta["amount"]) == ("trx-daily", str(30 * TRX))
    code, _, meta = refused(stake_server, _delegate(key, amount=31 * TRX))
    assert (code, meta["limit"]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "trx-daily")
    # Taking TRX back is not charged: it is signed however much was staked today.
    unstake = _item(
        key, unfreeze_balance_v2=pb.TronUnfreezeBalanceV2(amount=1000 * TRX, resource="ENERGY")
    )
    assert sign_batch(stake_server, unstake).status == pb.BATCH_STATUS_SIGNED
    assert sign_batch(stake_server, _stake(key, 30 * TRX)).status == pb.BATCH_STATUS_SIGNED


@pytest.mark.parametrize(
    ("make", "code", "rule"),
    [
        pytest.param(lambda k: _delegate(k, STRANGER), "no_rule_matched", None, id="stranger"),
        pytest.param(lambda k: _delegate(k, BLOCKED), "rule_denied", "no-blocked", id="blocked"),
        pytest.param(
            lambda k: _item(
                k,
                vote_witness=pb.TronVoteWitness(
                    votes=[
                        pb.TronVote(witness=RECEIVER, count=5),
                        pb.TronVote(witness=BLOCKED, count=1),
                    ]
                ),
            ),
            "rule_denied",
            "no-blocked",
            id="vote for blocked",
        ),
        pytest.param(lambda k: _stake(k, 2 * TRX, "BANDWIDTH"), "no_rule_matched", None, id="bw"),
        pytest.param(
            lambda k: _item(
                k,
                delegate_resource=pb.TronDelegateResource(
                    receiver=RECEIVER,
                    amount=2 * TRX,
                    resource="ENERGY",
                    lock=True,
                    lock_period=86401,
                ),
            ),
            "no_rule_matched",
            None,
            id="locked too long",
        ),
    ],
)
def test_policy_denies_by_receiver_resource_and_lock(
    stake_server: RunningServer, key: keys_pb2.Key, make: Any, code: str, rule: str | None
) -> None:
    # A TRX payment in the same batch is allowed by trx-payments: the batch is refused whole.
    assert list(sign_batch(stake_server, builders.tron_item(key)).rules) == ["trx-payments"]
    request_id = _rid()
    status, _, meta = refused(
        stake_server, builders.tron_item(key), make(key), request_id=request_id
    )
    assert status == grpc.StatusCode.PERMISSION_DENIED
    assert meta["code"] == code
    if rule is not None:
        assert meta["rule"] == rule
    with pytest.raises(grpc.RpcError) as info:
        stake_server.signer().GetBatch(pb.GetBatchRequest(request_id=request_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_vote_is_held_and_shown_to_approvers(
    stake_server: RunningServer, key: keys_pb2.Key
) -> None:
    vote = _item(
        key,
        vote_witness=pb.TronVoteWitness(
            votes=[pb.TronVote(witness=RECEIVER, count=7), pb.TronVote(witness=STRANGER, count=2)]
        ),
    )
    held = sign_batch(stake_server, vote)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    approver = policy_pb2_grpc.ApprovalsStub(stake_server.channel("approver"))
    batch = approver.GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    [item] = batch.items
    assert item.staking == f"vote {RECEIVER}=7, {STRANGER}=2"
    assert (item.chain, item.network) == ("tron", "nile")


BAD: list[tuple[str, dict[str, Any], str]] = [
    (
        "zero stake",
        {"freeze_balance_v2": pb.TronFreezeBalanceV2(amount=0, resource="ENERGY")},
        "items[1].tron.freeze_balance_v2.amount",
    ),
    (
        "bad resource",
        {"freeze_balance_v2": pb.TronFreezeBalanceV2(amount=5 * TRX, resource="TRON_POWER")},
        "items[1].tron.freeze_balance_v2.resource",
    ),
    (
        "delegate to the key itself",
        {"delegate_resource": "own"},
        "items[1].tron.delegate_resource.receiver",
    ),
    (
        "bad receiver",
        {
            "delegate_resource": pb.TronDelegateResource(
                receiver=RECEIVER[:-2] + "zz", amount=5 * TRX, resource="ENERGY"
            )
        },
        "items[1].tron.delegate_resource.receiver",
    ),
    (
        "vote for nobody",
        {"vote_witness": pb.TronVoteWitness()},
        "items[1].tron.vote_witness.votes",
    ),
]


@pytest.mark.parametrize(("contract", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_contracts_are_invalid_argument_naming_the_field(
    stake_server: RunningServer, key: keys_pb2.Key, contract: dict[str, Any], field: str
) -> None:
    if contract.get("delegate_resource") == "own":
        own = builders.address(key, "tron", "nile")
        contract = {
            "delegate_resource": pb.TronDelegateResource(
                receiver=own, amount=5 * TRX, resource="ENERGY"
            )
        }
    request_id = _rid()
    # The first item is valid: nothing of the batch is signed or stored.
    code, details, _ = refused(
        stake_server, _stake(key, 2 * TRX), _item(key, **contract), request_id=request_id
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field + ":"), details
    with pytest.raises(grpc.RpcError) as info:
        stake_server.signer().GetBatch(pb.GetBatchRequest(request_id=request_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
