"""Keys belong to one network class (issue 9 item 2), through a real server.

A testnet key never signs an item for a mainnet network or chain id, and a
mainnet key never one for a test network: the batch is refused with
INVALID_ARGUMENT naming the item's network field and the key's class, before
policy (no sign.authorized, no approval, nothing reserved; a sign.refused
record says why). Bitcoin and Tron signatures do not depend on the network
label, so this is what stops a `testnet`-labelled request from being a
mainnet spend judged by testnet rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import pytest
from coincurve import PrivateKey

from custos.common.secp256k1 import uncompressed
from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.bitcoin_address import p2wpkh_address
from tests import builders
from tests.conftest import RunningServer
from tests.integration.test_signing_e2e import check_signed_item

pytestmark = pytest.mark.integration

MAINNET = keys_pb2.NETWORK_CLASS_MAINNET
TESTNET = keys_pb2.NETWORK_CLASS_TESTNET

OTHER_PUBLIC_KEY = PrivateKey(bytes([9] * 32)).public_key.format(compressed=False)

ItemOf = Callable[[keys_pb2.Key], pb.SignItem]


def _rid() -> str:
    return f"nc-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def test_key(server: RunningServer) -> keys_pb2.Key:
    return server.create_key(f"nc-test-{uuid.uuid4().hex[:8]}", TESTNET)


@pytest.fixture(scope="module")
def main_key(server: RunningServer) -> keys_pb2.Key:
    return server.create_key(f"nc-main-{uuid.uuid4().hex[:8]}", MAINNET)


def _records(server: RunningServer, request_id: str) -> list[tuple[str, dict[str, object]]]:
    records = server.server.store.audit_records(0, 10**6)  # type: ignore[attr-defined]
    return [
        (r.event.kind, r.event.fields)
        for r in records
        if r.event.fields.get("request_id") == request_id
    ]


def _btc(key: keys_pb2.Key, network: str) -> pb.SignItem:
    """A Bitcoin item on `network`; for a key of the other class the caller spells
    the outputs itself (a key shows only its own class's addresses): the same
    programs as on the key's own network, which is the attack's shape."""
    own = "mainnet" if key.network_class == MAINNET else "testnet"
    item = builders.bitcoin_item(key, f"nc-{network}", network=own)
    if network != own:
        item.bitcoin.network = network
        item.bitcoin.outputs[0].address = p2wpkh_address(OTHER_PUBLIC_KEY, network)
        public_key = uncompressed(bytes.fromhex(key.public_key))
        item.bitcoin.outputs[1].address = p2wpkh_address(public_key, network)
    return item


def _mainnet_btc(key: keys_pb2.Key) -> pb.SignItem:
    return _btc(key, "mainnet")


# What a testnet key is asked for on mainnet, and the field the refusal names.
MAINNET_ITEMS: list[tuple[str, ItemOf, str]] = [
    ("bitcoin mainnet", _mainnet_btc, "bitcoin.network"),
    ("tron mainnet", lambda k: builders.tron_item(k, network="mainnet"), "tron.network"),
    ("ethereum chain id 1", lambda k: builders.evm_item(k, chain_id=1), "evm.chain_id"),
    ("bsc chain id 56", lambda k: builders.evm_item(k, chain_id=56), "evm.chain_id"),
]
TESTNET_ITEMS: list[tuple[str, ItemOf, str]] = [
    ("bitcoin testnet", lambda k: _btc(k, "testnet"), "bitcoin.network"),
    ("bitcoin regtest", lambda k: _btc(k, "regtest"), "bitcoin.network"),
    ("tron nile", builders.tron_item, "tron.network"),
    ("sepolia", lambda k: builders.evm_item(k, chain_id=11155111), "evm.chain_id"),
    ("holesky", lambda k: builders.evm_item(k, chain_id=17000), "evm.chain_id"),
    ("bsc testnet", lambda k: builders.evm_item(k, chain_id=97), "evm.chain_id"),
]


def _refused(
    server: RunningServer, items: list[pb.SignItem], field: str, key_class: str
) -> list[tuple[str, dict[str, object]]]:
    request = pb.SignBatchRequest(request_id=_rid(), items=items)
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignBatch(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    details = info.value.details()
    assert details.startswith(f"items[1].{field}: "), details
    assert f"is a {key_class} key" in details, details
    # Refused before policy: no authorization, no approval, nothing reserved or claimed.
    records = _records(server, request.request_id)
    assert [kind for kind, _ in records] == ["sign.refused"], records
    assert records[0][1]["error"] == "InvalidRequest"
    assert f"items[1].{field}" in str(records[0][1]["reason"])
    with pytest.raises(grpc.RpcError) as fetched:
        server.signer().GetBatch(pb.GetBatchRequest(request_id=request.request_id))
    assert fetched.value.code() == grpc.StatusCode.NOT_FOUND
    return records


@pytest.mark.parametrize(
    ("item_of", "field"), [pytest.param(i, f, id=n) for n, i, f in MAINNET_ITEMS]
)
def test_a_testnet_key_never_signs_for_a_mainnet_network(
    server: RunningServer, test_key: keys_pb2.Key, item_of: ItemOf, field: str
) -> None:
    # The first item alone would be held for two approvers by the dev policy
    # (Sepolia, 2 ETH): a refusal, not a hold, shows that policy never saw the batch.
    held_alone = builders.evm_item(test_key, value=str(2 * 10**18))
    _refused(server, [held_alone, item_of(test_key)], field, "testnet")


@pytest.mark.parametrize(
    ("item_of", "field"), [pytest.param(i, f, id=n) for n, i, f in TESTNET_ITEMS]
)
def test_a_mainnet_key_never_signs_for_a_test_network(
    server: RunningServer, main_key: keys_pb2.Key, item_of: ItemOf, field: str
) -> None:
    _refused(server, [_mainnet_btc(main_key), item_of(main_key)], field, "mainnet")


def test_each_class_signs_its_own_networks_and_verifies(
    server: RunningServer, test_key: keys_pb2.Key, main_key: keys_pb2.Key
) -> None:
    for key, cases in ((main_key, MAINNET_ITEMS), (test_key, TESTNET_ITEMS)):
        items = [item_of(key) for _, item_of, _ in cases]
        for nonce, item in enumerate(items):
            if item.HasField("evm"):
                item.evm.nonce = nonce
        response = server.signer().SignBatch(pb.SignBatchRequest(request_id=_rid(), items=items))
        assert response.status == pb.BATCH_STATUS_SIGNED
        for item, signed in zip(items, response.items, strict=True):
            check_signed_item(key, item, signed)  # second implementations
        records = _records(server, response.request_id)
        assert [kind for kind, _ in records] == ["sign.authorized", "sign.signed"]


def test_keys_show_their_class_and_only_its_addresses(
    server: RunningServer, test_key: keys_pb2.Key, main_key: keys_pb2.Key
) -> None:
    stub = server.keys()
    shown_test = stub.GetKey(keys_pb2.GetKeyRequest(key_id=test_key.key_id))
    shown_main = stub.GetKey(keys_pb2.GetKeyRequest(key_id=main_key.key_id))
    assert shown_test.network_class == TESTNET
    assert shown_main.network_class == MAINNET
    assert {a.network for a in shown_main.addresses} == {"mainnet"}
    assert {(a.chain, a.network) for a in shown_test.addresses} == {
        ("bitcoin", "testnet"),
        ("bitcoin", "signet"),
        ("bitcoin", "regtest"),
        ("ethereum", "sepolia"),
        ("ethereum", "holesky"),
        ("bsc", "testnet"),
        ("tron", "nile"),
        ("tron", "shasta"),
    }
    listed = {k.key_id: k.network_class for k in stub.ListKeys(keys_pb2.ListKeysRequest()).keys}
    assert listed[test_key.key_id] == TESTNET
    assert listed[main_key.key_id] == MAINNET
    created = [
        fields
        for kind, fields in (
            (r.event.kind, r.event.fields)
            for r in server.server.store.audit_records(0, 10**6)  # type: ignore[attr-defined]
        )
        if kind == "key.created" and fields["key_id"] in (test_key.key_id, main_key.key_id)
    ]
    assert sorted(str(f["network_class"]) for f in created) == ["mainnet", "testnet"]


def test_a_key_without_a_class_is_not_created(server: RunningServer) -> None:
    key_id = f"nc-none-{uuid.uuid4().hex[:8]}"
    stub = server.keys()
    for bad in (keys_pb2.NETWORK_CLASS_UNSPECIFIED, 7):
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateKey(keys_pb2.CreateKeyRequest(key_id=key_id, network_class=bad))  # type: ignore[arg-type]
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("network_class: required")
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetKey(keys_pb2.GetKeyRequest(key_id=key_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # Nothing reached the HSM either: the key made afterwards is new, not adopted.
    made = stub.CreateKey(keys_pb2.CreateKeyRequest(key_id=key_id, network_class=TESTNET))
    assert made.network_class == TESTNET
    records = server.server.store.audit_records(0, 10**6)  # type: ignore[attr-defined]
    created = [
        r.event.fields
        for r in records
        if r.event.kind == "key.created" and r.event.fields.get("key_id") == key_id
    ]
    assert created == [
        {
            "key_id": key_id,
            "public_key": created[0]["public_key"],
            "origin": "generated",
            "adopted": False,
            "network_class": "testnet",
            "row_version": 1,
            "ceremony_id": created[0]["ceremony_id"],  # one officer alone: quorum 0 (dev)
        }
    ]
