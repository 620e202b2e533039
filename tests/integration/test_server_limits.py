"""A hostile caller cannot starve others with streams, nor share the server's port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import DevCa, subject_string, write_client_profile
from tests import builders
from tests.conftest import ServerProcess
from tests.second_impl import evm_sender

pytestmark = pytest.mark.integration

STREAM_LIMITS = "[server]\nthreads = 8\nmax_streams = 4\nmax_streams_per_caller = 2\n"


def _configure(server: ServerProcess, extra: str) -> None:
    path = server.env.config_path
    path.write_text(path.read_text().replace("[server]\n", extra, 1))


def _first(call: Any) -> object:
    """The stream's first message, or the RpcError that ended it."""
    try:
        return next(call)
    except grpc.RpcError as exc:
        return exc


def _watch(server: ServerProcess, identity: str) -> Any:
    stub = policy_pb2_grpc.ApprovalsStub(server.channel(identity))
    # A deadline well past the test's length: a starved server fails, never hangs, it.
    return stub.WatchEvents(policy_pb2.WatchEventsRequest(), timeout=60)


def _add_service(server: ServerProcess, name: str) -> None:
    """A second service identity, with a certificate from the server's CA."""
    ca = DevCa(server.env.dir / "pki")
    cert, key = ca.issue(name, server=False)
    clients = server.env.dir / "clients"
    write_client_profile(clients / f"{name}.toml", "", ca.cert_path, cert, key)
    with server.env.config_path.open("a") as handle:
        handle.write(
            f'\n[[identities]]\nsubject = "{subject_string(name)}"\n'
            'roles = ["service"]\nkeys = ["*"]\n'
        )


def test_streams_from_one_service_cannot_starve_unary_calls(own_server: ServerProcess) -> None:
    _configure(own_server, STREAM_LIMITS)
    _add_service(own_server, "billing")
    own_server.start()
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="busy", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    # One service opens 200 streams at once and keeps them open.
    calls = [_watch(own_server, "payments") for _ in range(200)]
    firsts = [_first(call) for call in calls]
    opened = [c for c, f in zip(calls, firsts, strict=True) if isinstance(f, policy_pb2.Event)]
    refused = [f for f in firsts if isinstance(f, grpc.RpcError)]
    assert len(opened) == 2
    assert len(refused) == 198
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert "server.max_streams_per_caller = 2" in refused[0].details()
    # An auditor following the log fills the server's stream budget...
    auditor = audit_pb2_grpc.AuditStub(own_server.channel("auditor"))
    follows = [
        auditor.StreamRecords(audit_pb2.StreamRecordsRequest(follow=True), timeout=60)
        for _ in range(2)
    ]
    assert all(isinstance(_first(call), audit_pb2.AuditRecord) for call in follows)
    # ...so a further stream from anyone is refused, naming the server-wide limit.
    over = _first(_watch(own_server, "approver"))
    assert isinstance(over, grpc.RpcError)
    assert over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server.max_streams = 4" in over.details()

    # Health, GetKey and SignBatch still answer, with their usual deadlines.
    health = health_pb2_grpc.HealthStub(own_server.channel("auditor"))
    reply = health.Check(health_pb2.HealthCheckRequest(service="custos.v1.Signer"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    again = keys_pb2_grpc.KeysStub(own_server.channel("officer")).GetKey(
        keys_pb2.GetKeyRequest(key_id="busy"), timeout=10
    )
    assert again.public_key == key.public_key
    signer = signer_pb2_grpc.SignerStub(own_server.channel("billing"))  # another service
    for _ in range(3):
        signed = signer.SignBatch(
            pb.SignBatchRequest(request_id=f"s-{uuid.uuid4().hex}", items=[builders.evm_item(key)]),
            timeout=30,
        )
        assert evm_sender(signed.items[0].raw_tx) == signed.items[0].address

    # A closed stream gives its slot back once its handler has left.
    opened[0].cancel()
    deadline = time.monotonic() + 60  # generous: a busy machine is slow, never wrong
    while not isinstance(_first(call := _watch(own_server, "payments")), policy_pb2.Event):
        assert time.monotonic() < deadline, "a cancelled stream never gave its slot back"
        time.sleep(0.2)
    for stream in (*opened, *follows, call):
        stream.cancel()


def test_stream_limits_must_leave_threads_for_unary_calls(own_server: ServerProcess) -> None:
    _configure(own_server, "[server]\nthreads = 8\nmax_streams = 5\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "custos.signer.tools.cli",
            "serve",
            "--config",
            str(own_server.env.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "server" in result.stderr
    assert "max_streams (5) must be at most half of threads (8)" in result.stderr


def test_a_second_server_cannot_take_the_port(own_server: ServerProcess) -> None:
    own_server.start()
    port = own_server.port
    # Not even with SO_REUSEPORT, which grpc sets by default on its own sockets.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError, match="in use"):
            squatter.bind(("127.0.0.1", port))
    second = own_server.env.dir / "second.toml"
    second.write_text(
        own_server.env.config_path.read_text().replace(
            'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", "serve", "--config", str(second)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"server.listen: cannot listen on 127.0.0.1:{port}: the address is in use" in (
        result.stderr
    )
    # The first server still serves every connection.
    health = health_pb2_grpc.HealthStub(own_server.channel("auditor"))
    for _ in range(10):
        reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_demo_beside_another_server_takes_a_free_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "custos.signer.tools.cli",
                "demo",
                "--dir",
                str(tmp_path),
                "--listen",
                f"127.0.0.1:{taken}",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env={k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"},
            check=False,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"127.0.0.1:{taken} is in use by another process; using a free port" in out.stdout
    assert "replayed=True, same tx ids=True" in out.stdout
    assert f"server up on 127.0.0.1:{taken} " not in out.stdout
