"""In JSON mode every line the server writes to stderr is one JSON object, gRPC's own too."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.signer.edge.logs import wrap_line
from custos.signer.tools.client import ClientProfile
from custos.signer.tools.devsetup import DevCa, write_client_profile
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration


def _objects(text: str) -> list[dict[str, object]]:
    docs = []
    for line in text.splitlines():
        doc = json.loads(line)  # raises on any line that is not JSON
        assert isinstance(doc, dict), line
        docs.append(doc)
    return docs


def _bad_handshakes(port: int, foreign: ClientProfile) -> None:
    # TLS without a client certificate (with TLS 1.3 the server's refusal may
    # only show as a closed connection).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        contextlib.suppress(ssl.SSLError, OSError),
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"x")
        assert tls.recv(10) == b""
    # Not TLS at all.
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
        raw.recv(100)
    # A client certificate from a CA the server does not trust.
    with pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(foreign.channel(f"127.0.0.1:{port}")).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )


def test_every_stderr_line_is_json_including_grpc_core(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    ca = DevCa(tmp_path / "foreign-pki")
    cert, key = ca.issue("payments", server=False)
    write_client_profile(tmp_path / "foreign.toml", "", ca.cert_path, cert, key)
    foreign = ClientProfile.load(tmp_path / "foreign.toml")
    own_server.start()
    for _ in range(3):
        _bad_handshakes(own_server.port, foreign)
    reply = health_pb2_grpc.HealthStub(own_server.channel("auditor")).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    own_server.stop()
    docs = _objects(own_server.log_text())
    # gRPC's C core did report the failed handshakes: routed, not lost.
    native = [d for d in docs if d.get("component") == "grpc"]
    assert any("Handshake failed" in str(d["msg"]) for d in native), docs[-5:]
    assert all({"ts", "level", "component", "msg"} <= set(d) for d in docs)


def test_a_start_up_error_is_json_too(own_server: ServerProcess) -> None:
    path = own_server.env.config_path
    path.write_text(path.read_text().replace("[server]\n", "[server]\nthreads = -1\n", 1))
    result = subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    docs = _objects(result.stderr)
    assert any("server.threads" in str(d["msg"]) for d in docs)


def test_wrap_line_keeps_json_and_wraps_the_rest() -> None:
    kept = '{"level": "info", "msg": "x"}'
    assert wrap_line(kept) == kept
    native = json.loads(
        wrap_line("E1201 22:52:49.187401   19358 chttp2_server.cc:12] accept failed")
    )
    assert native["level"] == "error"
    assert native["component"] == "grpc"
    assert native["source"] == "chttp2_server.cc:12"
    assert native["msg"] == "accept failed"
    other = json.loads(wrap_line('Traceback (most recent call last): "quoted" {'))
    assert other["component"] == "stderr"
    assert other["msg"] == 'Traceback (most recent call last): "quoted" {'
    assert json.loads(wrap_line("[1, 2]"))["msg"] == "[1, 2]"  # JSON, but not an object
