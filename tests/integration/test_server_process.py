"""The server as a real process: keys survive a restart; HSM failure and recovery."""

from __future__ import annotations

import shutil
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc, signer_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import ServerProcess, probe_often
from tests.second_impl import evm_sender

pytestmark = pytest.mark.integration


def _sign(server: ServerProcess, key: keys_pb2.Key) -> pb.SignBatchResponse:
    stub = signer_pb2_grpc.SignerStub(server.channel("payments"))
    request = pb.SignBatchRequest(
        request_id=f"p-{uuid.uuid4().hex}", items=[builders.evm_item(key)]
    )
    return stub.SignBatch(request, timeout=30)


def _health(server: ServerProcess) -> int:
    stub = health_pb2_grpc.HealthStub(server.channel("auditor"))
    reply = stub.Check(health_pb2.HealthCheckRequest(service="custos.v1.Signer"), timeout=10)
    return int(reply.status)


def _wait_health(server: ServerProcess, status: int, timeout: float = 60) -> None:
    # Generous: recovery waits for the next health probe and new HSM workers,
    # which take many seconds to start on a busy two-core machine.
    deadline = time.monotonic() + timeout
    while _health(server) != status:
        assert time.monotonic() < deadline, f"health never became {status}"
        time.sleep(0.2)


def test_keys_survive_a_restart(own_server: ServerProcess) -> None:
    own_server.start()
    keys = keys_pb2_grpc.KeysStub(own_server.channel("officer"))
    key = keys.CreateKey(
        keys_pb2.CreateKeyRequest(key_id="survivor", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    before = _sign(own_server, key)
    own_server.stop()
    own_server.start()
    again = keys_pb2_grpc.KeysStub(own_server.channel("officer")).GetKey(
        keys_pb2.GetKeyRequest(key_id="survivor")
    )
    assert again.public_key == key.public_key
    after = _sign(own_server, again)
    assert evm_sender(after.items[0].raw_tx) == evm_sender(before.items[0].raw_tx)


def test_hsm_failure_gives_unavailable_and_not_serving_then_recovers(
    own_server: ServerProcess,
) -> None:
    probe_often(own_server.env)  # recovery is seen by the next probe: soon, not in 5 s
    own_server.start()
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="fragile", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    _sign(own_server, key)
    _wait_health(own_server, health_pb2.HealthCheckResponse.SERVING)
    (token_dir,) = (own_server.env.dir / "tokens").iterdir()
    away = own_server.env.dir / "token-away"  # outside tokendir: SoftHSM would find it there
    shutil.move(token_dir, away)  # the HSM loses its token
    try:
        with pytest.raises(grpc.RpcError) as info:
            _sign(own_server, key)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "HSM" in info.value.details()
        _wait_health(own_server, health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        shutil.move(away, token_dir)
    _wait_health(own_server, health_pb2.HealthCheckResponse.SERVING)
    assert evm_sender(_sign(own_server, key).items[0].raw_tx) == builders.address(
        key, "ethereum", "sepolia"
    )


def test_sigterm_finishes_in_flight_work_and_writes_a_final_checkpoint(
    own_server: ServerProcess,
) -> None:
    from custos.signer.store.sqlite import SqliteStore

    own_server.start()
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="graceful", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    stub = signer_pb2_grpc.SignerStub(own_server.channel("payments"))
    request = pb.SignBatchRequest(
        request_id="in-flight", items=[builders.evm_item(key, nonce=n) for n in range(300)]
    )
    future = stub.SignBatch.future(request, timeout=60)
    time.sleep(0.05)  # the batch is being worked on when the signal arrives
    assert own_server.process is not None
    own_server.process.terminate()
    assert len(future.result().items) == 300  # finished within the grace period
    assert own_server.process.wait(timeout=60) == 0
    store = SqliteStore(own_server.env.dir / "custos.db")
    records = store.audit_records(0, 10_000)
    assert [r.event.kind for r in records[-2:]] == ["service.stopped", "audit.checkpoint"]
    final = store.latest_checkpoint()
    assert final is not None
    assert final.size == len(records) - 1  # covers everything up to service.stopped
    store.close()
