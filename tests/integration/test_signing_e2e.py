"""SignBatch end to end: real SoftHSM token, real gRPC server with mTLS.

Every signed transaction is checked by a second implementation (tests.second_impl).
"""

from __future__ import annotations

import json
import threading
import uuid

import grpc
import pytest

from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import RunningServer
from tests.second_impl import evm_sender, tron_signer, verify_bitcoin

pytestmark = pytest.mark.integration


def _rid() -> str:
    return f"t-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def key(server: RunningServer) -> keys_pb2.Key:
    return server.create_key(f"e2e-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def main_key(server: RunningServer) -> keys_pb2.Key:
    return server.create_key(f"e2e-main-{uuid.uuid4().hex[:8]}", keys_pb2.NETWORK_CLASS_MAINNET)


def _public(key: keys_pb2.Key) -> bytes:
    from custos.common.secp256k1 import uncompressed

    return uncompressed(bytes.fromhex(key.public_key))


def check_signed_item(key: keys_pb2.Key, item: pb.SignItem, signed: pb.SignedItem) -> None:
    """Second-implementation check of one signed item against its request."""
    kind = item.WhichOneof("tx")
    if kind == "evm":
        assert evm_sender(signed.raw_tx) == signed.address
        assert signed.address == builders.address(key, signed.chain, signed.network)
    elif kind == "bitcoin":
        prevouts = builders.bitcoin_prevouts(item.bitcoin)
        assert verify_bitcoin(signed.raw_tx, prevouts) == signed.tx_id
        total_in = sum(value for value, _ in prevouts)
        assert signed.fee == total_in - sum(o.value for o in item.bitcoin.outputs)
    else:
        assert tron_signer(signed.raw_tx) == builders.address(key, "tron", signed.network)
        assert json.loads(signed.raw_tx)["txID"] == signed.tx_id


def test_multichain_batch_is_signed_and_verifies(server: RunningServer, key: keys_pb2.Key) -> None:
    items = [
        builders.bitcoin_item(key, "multi"),
        builders.bitcoin_item(key, "wpkh-only", ("p2wpkh", "p2wpkh", "p2wpkh")),
        builders.evm_item(key, chain_id=17000, nonce=1),
        builders.evm_item(key, chain_id=11155111, tx_type=pb.EVM_TX_TYPE_EIP2930, nonce=2),
        builders.evm_item(key, chain_id=97, tx_type=pb.EVM_TX_TYPE_LEGACY, nonce=3),
        builders.evm_item(
            key,
            chain_id=97,
            tx_type=pb.EVM_TX_TYPE_LEGACY,
            to="0x55d398326f99059ff775485246999027b3197955",
            value="0",
            data=builders.erc20_transfer_data(builders.EVM_DEST, 10**18),
        ),
        builders.tron_item(key),
        builders.tron_item(key, trc20=True),
    ]
    response = server.signer().SignBatch(pb.SignBatchRequest(request_id=_rid(), items=items))
    assert response.status == pb.BATCH_STATUS_SIGNED
    assert not response.replayed
    assert [s.chain for s in response.items] == [
        "bitcoin",
        "bitcoin",
        "ethereum",
        "ethereum",
        "bsc",
        "bsc",
        "tron",
        "tron",
    ]
    for item, signed in zip(items, response.items, strict=True):
        check_signed_item(key, item, signed)
        assert signed.key_id == key.key_id
        assert all(len(bytes.fromhex(s.signature)) == 65 for s in signed.signatures)


def test_retry_replays_the_stored_result(server: RunningServer, key: keys_pb2.Key) -> None:
    request = pb.SignBatchRequest(
        request_id=_rid(), items=[builders.evm_item(key), builders.bitcoin_item(key, "replay")]
    )
    first = server.signer().SignBatch(request)
    second = server.signer().SignBatch(request)
    assert second.replayed
    second.replayed = False
    # Byte-identical: never a second (different) ECDSA signature for one request id.
    assert second.SerializeToString(deterministic=True) == first.SerializeToString(
        deterministic=True
    )
    fetched = server.signer().GetBatch(pb.GetBatchRequest(request_id=request.request_id))
    assert [i.raw_tx for i in fetched.items] == [i.raw_tx for i in first.items]
    changed = pb.SignBatchRequest(
        request_id=request.request_id, items=[builders.evm_item(key, nonce=9)]
    )
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignBatch(changed)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert request.request_id in info.value.details()


def test_request_ids_are_scoped_per_caller(server: RunningServer) -> None:
    limited_key = server.create_key(f"limited-{uuid.uuid4().hex[:8]}")
    rid = _rid()
    a = server.signer("payments").SignBatch(
        pb.SignBatchRequest(request_id=rid, items=[builders.evm_item(limited_key)])
    )
    b = server.signer("limited").SignBatch(
        pb.SignBatchRequest(request_id=rid, items=[builders.evm_item(limited_key, nonce=5)])
    )
    assert not a.replayed
    assert not b.replayed
    with pytest.raises(grpc.RpcError) as info:
        server.signer("limited").GetBatch(pb.GetBatchRequest(request_id=_rid()))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_sixteen_concurrent_clients(server: RunningServer, key: keys_pb2.Key) -> None:
    errors: list[BaseException] = []
    results: list[tuple[list[pb.SignItem], pb.SignBatchResponse]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        stub = server.signer()  # one channel (connection) per client
        try:
            for round_ in range(3):
                items = [
                    builders.evm_item(
                        key, chain_id=97 if n % 2 else 11155111, nonce=n * 100 + round_ * 10 + i
                    )
                    for i in range(8)
                ] + [
                    builders.bitcoin_item(key, f"c{n}-{round_}"),
                    builders.tron_item(key, amount=n + 1),
                ]
                response = stub.SignBatch(pb.SignBatchRequest(request_id=_rid(), items=items))
                with lock:
                    results.append((items, response))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors
    assert len(results) == 48
    for items, response in results:
        for item, signed in zip(items, response.items, strict=True):
            check_signed_item(key, item, signed)
