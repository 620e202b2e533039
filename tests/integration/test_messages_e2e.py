"""Message signing end to end: real SoftHSM token, real in-process mTLS gRPC server.

A bootstrap policy written for these tests: Ether Mail typed data and any
personal_sign, Tron or Bitcoin message are allowed; other typed data is
denied; USDC permits up to 1000 units are allowed and charged to a limit of
1000 units per key and day, like an approve. Every signature is checked by a
second implementation (eth-account, tronpy, python-bitcointx).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import grpc
import pytest

from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import subject_string
from tests import builders
from tests import typed_data as td
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.second_impl import (
    bitcoin_message_verifies,
    evm_message_signer,
    evm_typed_data_signer,
    tron_message_signer,
    typed_data_digest,
)
from tests.support import refused, sign_batch

pytestmark = pytest.mark.integration

TOKEN = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"  # USDC on Sepolia
SPENDER = "0x3333333333333333333333333333333333333333"
SEPOLIA = 11155111

POLICY = f"""\
version: 1
description: issue 12 message signing
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:
  create_key: 0  # one officer creates the test's keys alone (development)
identity_groups:
  approvers: ["{subject_string("approver")}"]
rules:
  - id: permit2-held
    match:
      message_signing: true
      typed_data: {{primary_types: [PermitSingle]}}
      contract: {{methods: [permit]}}
    action: require_approval
    approval: {{approvals: 1, group: approvers, totp: false}}
  - id: usdc-permits
    match:
      message_signing: true
      chains: [ethereum]
      assets: ["{TOKEN}"]
      contract: {{addresses: ["{TOKEN}"], methods: [permit]}}
      amount: {{max: 1000}}
    action: allow
  - id: ether-mail
    match:
      message_signing: true
      typed_data: {{domain_names: [Ether Mail], primary_types: [Mail], chain_ids: [1]}}
    action: allow
  - id: no-other-typed-data
    match: {{message_signing: true, message_kinds: [typed_data]}}
    action: deny
    reason: only Ether Mail typed data and USDC permits
  - id: other-messages
    match: {{message_signing: true}}
    action: allow
limits:
  - id: usdc-daily
    window: 24h
    per: [key, asset]
    scope: {{assets: ["{TOKEN}"]}}
    max_amount: 1000
"""


@pytest.fixture(scope="module")
def msg_server(
    dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with server_with_policy(dev_env, tmp_path_factory.mktemp("messages"), POLICY) as running:
        yield running


@pytest.fixture
def key(msg_server: RunningServer) -> keys_pb2.Key:
    """A mainnet key: most messages here name chain id 1 or a mainnet."""
    return msg_server.create_key(f"msg-{uuid.uuid4().hex[:10]}", keys_pb2.NETWORK_CLASS_MAINNET)


@pytest.fixture
def test_key(msg_server: RunningServer) -> keys_pb2.Key:
    """A testnet key, for messages on Sepolia or a Bitcoin test network."""
    return msg_server.create_key(f"msg-t-{uuid.uuid4().hex[:10]}")


def _rid() -> str:
    return f"m-{uuid.uuid4().hex}"


def test_each_kind_is_signed_and_verifies(
    msg_server: RunningServer, key: keys_pb2.Key, test_key: keys_pb2.Key
) -> None:
    eth = builders.address(key, "ethereum", "mainnet")
    hello = b"Log in to example.org\nNonce: 42"
    items = [
        td.personal_item(key.key_id, hello, 1),
        td.typed_item(key.key_id, td.MAIL, 1),
        td.tron_item(key.key_id, hello, "mainnet"),
        td.bitcoin_item(test_key.key_id, hello, "p2pkh", "testnet"),
        td.bitcoin_item(key.key_id, hello, "p2wpkh", "mainnet"),
    ]
    response = sign_batch(msg_server, *items)
    assert response.status == pb.BATCH_STATUS_SIGNED
    assert list(response.rules) == ["other-messages", "ether-mail", *["other-messages"] * 3]
    personal, mail, tron, p2pkh, p2wpkh = response.items
    assert evm_message_signer(hello, personal.raw_tx) == eth == personal.address
    assert evm_typed_data_signer(json.dumps(td.MAIL), mail.raw_tx) == eth
    assert mail.tx_id == "0x" + td.MAIL_DIGEST
    assert mail.signatures[0].digest == td.MAIL_DIGEST
    tron_address = builders.address(key, "tron", "mainnet")
    assert tron_message_signer(hello, tron.raw_tx) == tron_address == tron.address
    assert p2pkh.address == builders.address(test_key, "bitcoin", "testnet", "p2pkh")
    assert bitcoin_message_verifies(p2pkh.address, "testnet", hello, p2pkh.raw_tx)
    assert p2wpkh.address == builders.address(key, "bitcoin", "mainnet", "p2wpkh")
    assert bitcoin_message_verifies(p2wpkh.address, "mainnet", hello, p2wpkh.raw_tx)
    assert [i.chain for i in response.items] == ["ethereum"] * 2 + ["tron"] + ["bitcoin"] * 2


def test_typed_data_outside_the_message_rules_is_denied(
    msg_server: RunningServer, key: keys_pb2.Key
) -> None:
    request_id = _rid()
    code, _, meta = refused(
        msg_server, td.typed_item(key.key_id, td.mail(name="Evil Mail"), 1), request_id=request_id
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert (meta["code"], meta["rule"]) == ("rule_denied", "no-other-typed-data")
    with pytest.raises(grpc.RpcError) as info:
        msg_server.signer().GetBatch(pb.GetBatchRequest(request_id=request_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_permit_is_judged_and_charged_like_an_approve(
    msg_server: RunningServer, test_key: keys_pb2.Key
) -> None:
    key = test_key
    owner = builders.address(key, "ethereum", "sepolia")

    def permit(value: int) -> pb.SignItem:
        return td.typed_item(
            key.key_id, td.eip2612_permit(TOKEN, owner, SPENDER, value, SEPOLIA), SEPOLIA
        )

    # Over the permit rule's amount: the typed-data deny rule is next.
    code, _, meta = refused(msg_server, permit(1001))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert (meta["code"], meta["rule"]) == ("rule_denied", "no-other-typed-data")
    first = permit(600)
    response = sign_batch(msg_server, first)
    assert list(response.rules) == ["usdc-permits"]
    signed = response.items[0]
    assert evm_typed_data_signer(first.evm_typed_data.typed_data, signed.raw_tx) == owner
    assert (signed.chain, signed.network) == ("ethereum", "sepolia")
    # 600 of the day's 1000 are reserved: a second permit of 600 is over the limit.
    code, _, meta = refused(msg_server, permit(600))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (meta["limit"], meta["amount"]) == ("usdc-daily", "400")
    # Plain messages draw on no limit.
    assert sign_batch(msg_server, td.personal_item(key.key_id, b"still fine", SEPOLIA)).status == (
        pb.BATCH_STATUS_SIGNED
    )


def test_an_approver_reads_the_message_and_its_grants(
    msg_server: RunningServer, test_key: keys_pb2.Key
) -> None:
    key = test_key
    doc = td.permit2_single(TOKEN, SPENDER, 77, SEPOLIA)
    held = sign_batch(msg_server, td.typed_item(key.key_id, doc, SEPOLIA))
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    approver = policy_pb2_grpc.ApprovalsStub(msg_server.channel("approver"))
    batch = approver.GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    (item,) = batch.items
    shown = item.message
    assert shown.kind == "typed_data"
    assert json.loads(shown.text) == doc
    assert (shown.primary_type, shown.domain_name, shown.chain_id) == (
        "PermitSingle",
        "Permit2",
        str(SEPOLIA),
    )
    assert shown.verifying_contract == td.PERMIT2
    assert list(shown.grants) == [f"spender={SPENDER} token={TOKEN} amount=77"]
    assert shown.digest == typed_data_digest(json.dumps(doc)).hex()
    assert not item.transfers  # a permit moves nothing until the spender uses it


def test_malformed_typed_data_is_invalid_argument_naming_the_field(
    msg_server: RunningServer, key: keys_pb2.Key
) -> None:
    doc = td.mail()
    doc["message"]["to"]["wallet"] = "0x1234"
    request_id = _rid()
    good = td.personal_item(key.key_id, b"hello")
    code, details, _ = refused(
        msg_server, good, td.typed_item(key.key_id, doc, 1), request_id=request_id
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("items[1].evm_typed_data.typed_data.message.to.wallet:")
    # Nothing was signed, not even the valid first item.
    with pytest.raises(grpc.RpcError) as info:
        msg_server.signer().GetBatch(pb.GetBatchRequest(request_id=request_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # A domain chain id unknown to Custos is refused the same way.
    code, details, _ = refused(msg_server, td.typed_item(key.key_id, td.mail(chainId=137), 1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("items[0].evm_typed_data.typed_data.domain.chainId:")


def test_the_development_policy_signs_messages_but_not_permits(server: RunningServer) -> None:
    key = server.create_key(f"msg-dev-{uuid.uuid4().hex[:8]}")
    response = sign_batch(server, td.personal_item(key.key_id, b"hello", 97))
    assert list(response.rules) == ["development-messages"]
    assert evm_message_signer(b"hello", response.items[0].raw_tx) == response.items[0].address
    owner = builders.address(key, "ethereum", "sepolia")
    permit = td.eip2612_permit(TOKEN, owner, SPENDER, 1, SEPOLIA)
    code, _, meta = refused(server, td.typed_item(key.key_id, permit, SEPOLIA))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert meta["code"] == "no_rule_matched"
