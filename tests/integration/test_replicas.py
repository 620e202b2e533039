"""Two replicas (real `custos serve` processes) on one PostgreSQL database and one token.

Limits, idempotency and the audit log must hold across replicas, through
SIGKILLs of one of them, and through the database going away and coming back.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import DevEnv, ServerProcess, probe_often
from tests.store.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

ETH = 10**18


def _configure(env: DevEnv, store_url: str, lease_seconds: int = 60) -> DevEnv:
    """`env` with its store at `store_url` and a lease of `lease_seconds`."""
    text = env.config_path.read_text()
    old = next(line for line in text.splitlines() if line.startswith("url = "))
    text = text.replace(old, f'url = "{store_url}"')
    text = text.replace("[server]\n", f"[server]\nlease_seconds = {lease_seconds}\n")
    env.config_path.write_text(text)
    return env


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_url: str, pg_schema: str, fresh_env: Callable[[Path], DevEnv]
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = _configure(
        fresh_env(tmp_path / "env"), f"{postgres_url}?schema={pg_schema}", lease_seconds=2
    )
    a, b = ServerProcess(env, "replica-a"), ServerProcess(env, "replica-b")
    a.start()  # the first start creates the HSM setup keys and the schema
    b.start()
    yield a, b
    a.stop()
    b.stop()


def test_two_replicas_share_limits_idempotency_and_one_audit_log(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    key = keys_pb2_grpc.KeysStub(a.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="shared", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    results: dict[str, list[str]] = {}
    signed_wei: list[int] = []
    problems: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        first, other = (a, b) if n % 2 else (b, a)
        value = ETH // 10 + n  # 32 clients x 0.1 ETH against a 1 ETH hourly limit
        request = pb.SignBatchRequest(
            request_id=f"c-{n}",
            items=[builders.evm_item(key, chain_id=17000, nonce=n, value=str(value))],
        )
        try:
            response = signer_pb2_grpc.SignerStub(first.channel("payments")).SignBatch(
                request, timeout=60
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                with lock:
                    problems.append(f"{n}: {exc.code()} {exc.details()}")
            return
        # The same request id retried on the other replica: the stored result, never a new one.
        again = signer_pb2_grpc.SignerStub(other.channel("payments")).SignBatch(request, timeout=60)
        with lock:
            if not again.replayed or [i.raw_tx for i in again.items] != [
                i.raw_tx for i in response.items
            ]:
                problems.append(f"{n}: retry on the other replica differed")
            results[request.request_id] = [i.tx_id for i in response.items]
            signed_wei.append(value)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not problems
    assert sum(signed_wei) <= ETH
    assert len(signed_wei) >= 5  # the limit was really spent, not everything refused
    b.verified_log()


def test_sigkill_of_one_replica_loses_nothing_and_signs_nothing_twice(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    key = keys_pb2_grpc.KeysStub(a.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="survivor", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    rng = random.Random(7)
    delivered: dict[str, list[str]] = {}
    stop = threading.Event()
    problems: list[str] = []

    def client(n: int) -> None:
        servers = [a, b]
        count = 0
        while not stop.is_set():
            rid = f"k-{n}-{count}"
            request = pb.SignBatchRequest(
                request_id=rid,
                items=[builders.evm_item(key, nonce=count * 10 + i) for i in range(3)],
            )
            deadline = time.monotonic() + 60
            while True:  # retry the same request id, on whichever replica answers
                server = servers[rng.randrange(2)]
                try:
                    response = signer_pb2_grpc.SignerStub(server.channel("payments")).SignBatch(
                        request, timeout=10
                    )
                    break
                except grpc.RpcError as exc:
                    if exc.code() not in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.ABORTED,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        problems.append(f"{rid}: {exc.code()} {exc.details()}")
                        return
                    if time.monotonic() > deadline:
                        problems.append(f"{rid}: never answered")
                        return
                    time.sleep(0.1)
            tx_ids = [i.tx_id for i in response.items]
            if rid in delivered and delivered[rid] != tx_ids:
                problems.append(f"{rid}: two different results")
            delivered[rid] = tx_ids
            count += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for _round in range(20):
            time.sleep(rng.uniform(0.2, 0.6))
            victim = a if _round % 2 else b
            assert victim.process is not None
            victim.process.kill()
            victim.process.wait()
            victim.start()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not problems
    assert len(delivered) > 20
    # One sign.signed record per request id, matching what the client received.
    auditor = audit_pb2_grpc.AuditStub(a.channel("auditor"))
    signed: dict[str, list[list[str]]] = {}
    for record in auditor.StreamRecords(audit_pb2.StreamRecordsRequest(from_seq=0)):
        doc = json.loads(record.encoded)
        if doc["kind"] == "sign.signed":
            signed.setdefault(doc["fields"]["request_id"], []).append(
                [i["tx_id"] for i in doc["fields"]["items"]]
            )
    for rid, tx_ids in delivered.items():
        assert signed.get(rid) == [tx_ids], rid
    a.verified_log()


def test_database_outage_gives_unavailable_and_service_resumes(
    tmp_path: Path, postgres_url: str, pg_schema: str, fresh_env: Callable[[Path], DevEnv]
) -> None:
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    proxy.start()
    proxied = postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    env = _configure(fresh_env(tmp_path / "env"), f"{proxied}?schema={pg_schema}")
    probe_often(env)  # the outage and the recovery are seen by the next probe: soon
    server = ServerProcess(env, "outage")
    server.start()
    try:
        key = keys_pb2_grpc.KeysStub(server.channel("officer")).CreateKey(
            keys_pb2.CreateKeyRequest(
                key_id="outage-key", network_class=keys_pb2.NETWORK_CLASS_TESTNET
            )
        )
        stub = signer_pb2_grpc.SignerStub(server.channel("payments"))
        stub.SignBatch(pb.SignBatchRequest(request_id="before", items=[builders.evm_item(key)]))
        proxy.cut()  # the database goes away
        with pytest.raises(grpc.RpcError) as info:
            stub.SignBatch(
                pb.SignBatchRequest(request_id="during", items=[builders.evm_item(key, nonce=1)]),
                timeout=30,
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        health = health_pb2_grpc.HealthStub(server.channel("auditor"))
        deadline = time.monotonic() + 60  # generous: a busy machine is slow, never wrong
        while (
            health.Check(health_pb2.HealthCheckRequest()).status
            != health_pb2.HealthCheckResponse.NOT_SERVING
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proxy.start()  # and comes back: no restart of the server
        deadline = time.monotonic() + 60
        while True:
            try:
                response = stub.SignBatch(
                    pb.SignBatchRequest(
                        request_id="during", items=[builders.evm_item(key, nonce=1)]
                    ),
                    timeout=10,
                )
                break
            except grpc.RpcError as exc:
                retryable = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
                if not retryable or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert len(response.items) == 1
        # Whatever was attempted during the outage, the log verifies and every
        # delivered signature has its record.
        server.verified_log()
    finally:
        server.stop()
        proxy.cut()
