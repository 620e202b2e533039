"""The policy's lock bounds through a real server (issue 9 item 7).

The dev policy has no `locks`, so the defaults hold (1 h, 6 blocks): tighter
than the config's [limits] (24 h, 144 blocks), which the adapters enforce.
A lock between the two is refused by policy (PERMISSION_DENIED, code
lock_too_far) with nothing authorized; one within both is signed.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from bitcointx.core import CTransaction

from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import RunningServer
from tests.second_impl import verify_bitcoin

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def key(server: RunningServer) -> keys_pb2.Key:
    return server.create_key(f"lock-{uuid.uuid4().hex[:8]}")


def _rid() -> str:
    return f"lock-{uuid.uuid4().hex}"


def _btc_with_sequence(key: keys_pb2.Key, sequence: int) -> pb.SignItem:
    item = builders.bitcoin_item(key, f"lock-{sequence}")
    item.bitcoin.version = 2  # BIP68 applies from version 2
    item.bitcoin.inputs[1].sequence = sequence
    return item


def _tron_expiring_in(key: keys_pb2.Key, seconds: int) -> pb.SignItem:
    item = builders.tron_item(key)
    now_ms = int(time.time() * 1000)
    item.tron.timestamp = now_ms
    item.tron.expiration = now_ms + seconds * 1000
    return item


@pytest.mark.parametrize(
    ("make", "field"),
    [
        pytest.param(
            lambda k: _btc_with_sequence(k, 100), "bitcoin.inputs[1].sequence", id="BIP68 100"
        ),
        pytest.param(lambda k: _tron_expiring_in(k, 3 * 3600), "tron.expiration", id="tron 3h"),
    ],
)
def test_a_lock_within_limits_but_beyond_the_policy_is_denied_before_authorization(
    server: RunningServer, key: keys_pb2.Key, make: object, field: str
) -> None:
    request = pb.SignBatchRequest(
        request_id=_rid(),
        items=[builders.evm_item(key), make(key)],  # type: ignore[operator]
    )
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignBatch(request)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value.details()
    assert f"item 1: {field}: " in info.value.details()
    records = server.server.store.audit_records(0, 10**6)  # type: ignore[attr-defined]
    mine = [r.event for r in records if r.event.fields.get("request_id") == request.request_id]
    assert [e.kind for e in mine] == ["sign.refused"]
    assert mine[0].fields["code"] == "lock_too_far"
    assert mine[0].fields["field"] == field


def test_a_lock_within_the_policy_is_signed_and_verifies(
    server: RunningServer, key: keys_pb2.Key
) -> None:
    item = _btc_with_sequence(key, 6)
    response = server.signer().SignBatch(pb.SignBatchRequest(request_id=_rid(), items=[item]))
    assert response.status == pb.BATCH_STATUS_SIGNED
    signed = response.items[0]
    assert verify_bitcoin(signed.raw_tx, builders.bitcoin_prevouts(item.bitcoin)) == signed.tx_id
    # The signed bytes carry the lock the policy judged (read by python-bitcointx).
    tx = CTransaction.deserialize(bytes.fromhex(signed.raw_tx))
    assert [txin.nSequence for txin in tx.vin] == [0xFFFFFFFD, 6]
    assert tx.nVersion == 2
