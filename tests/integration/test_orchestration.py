"""What orchestrators and dashboards see: HTTP health probes, metrics labels, reflection v1.

Through the real in-process server (SoftHSM, mTLS gRPC) and its metrics port.
"""

from __future__ import annotations

import json
import platform
import urllib.error
import urllib.request
import uuid

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from custos.proto.custos.v1 import audit_pb2, audit_pb2_grpc, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.edge import metrics
from custos.signer.edge.health import HealthMonitor
from tests import builders
from tests.conftest import RunningServer
from tests.integration.test_policy_e2e import Steps, _large, _pending
from tests.second_impl import evm_sender
from tests.support import enroll_totp

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def _port(server: RunningServer) -> int:
    port = int(server.server.metrics_port)  # type: ignore[attr-defined]
    assert port
    return port


def test_live_and_ready_probes_need_no_certificate(server: RunningServer) -> None:
    port = _port(server)
    status, kind, body = _get(port, "/healthz")
    assert (status, kind) == (200, "application/json")
    status, kind, body = _get(port, "/readyz")
    assert (status, kind) == (200, "application/json")
    ready = json.loads(body)
    assert ready["status"] == "ready"
    assert ready["components"]["hsm"] == "ok"
    assert ready["components"]["store"] == "ok"


@pytest.mark.parametrize("path", ["/", "/metricsx", "/healthz/x", "/debug", "/readyz/../metrics"])
def test_other_paths_on_the_metrics_port_are_not_found(server: RunningServer, path: str) -> None:
    status, _kind, _body = _get(_port(server), path)
    assert status == 404


def test_readyz_names_the_failing_components_with_503() -> None:
    """The monitor's last probe round decides; a failing probe's error text is not shown."""
    published: list[bool] = []
    broken = {"store": True}

    def store() -> None:
        if broken["store"]:
            raise OSError("disk /secret/path on fire")

    monitor = HealthMonitor({"hsm": lambda: None, "store": store}, published.append)
    port, stop = metrics.serve("127.0.0.1:0", monitor.readiness)
    try:
        # Before the first probe: not ready.
        assert _get(port, "/readyz")[0] == 503
        monitor.check()
        status, _kind, body = _get(port, "/readyz")
        assert status == 503
        answer = json.loads(body)
        assert answer["failing"] == ["store"]
        assert answer["components"] == {"hsm": "ok", "store": "failing"}
        assert b"secret" not in body
        assert _get(port, "/healthz")[0] == 200  # alive all the same
        broken["store"] = False
        monitor.check()
        assert _get(port, "/readyz")[0] == 200
        assert published == [False, True]
        monitor.drain()  # shutting down: not ready, still alive
        status, _kind, body = _get(port, "/readyz")
        assert status == 503
        assert json.loads(body)["failing"] == ["server"]
        assert _get(port, "/healthz")[0] == 200
    finally:
        stop()


def _sample(name: str, labels: dict[str, str]) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def test_metrics_labels_streams_build_info_and_no_created_series(server: RunningServer) -> None:
    key = server.create_key(f"lab-{uuid.uuid4().hex[:8]}")
    server.signer().SignBatch(
        pb.SignBatchRequest(request_id=f"l-{uuid.uuid4().hex}", items=[builders.evm_item(key)])
    )
    # A server-streaming RPC, read to its end.
    list(
        audit_pb2_grpc.AuditStub(server.channel("auditor")).StreamRecords(
            audit_pb2.StreamRecordsRequest(from_seq=0)
        )
    )
    text = _get(_port(server), "/metrics")[2].decode()
    assert (
        'custos_rpc_seconds_count{code="OK",method="SignBatch",service="custos.v1.Signer"}' in text
    )
    assert (
        'custos_rpc_seconds_count{code="OK",method="StreamRecords",service="custos.v1.Audit"}'
        in text
    )
    assert "/custos.v1." not in text  # no full paths in labels
    assert "_created" not in text
    info = [line for line in text.splitlines() if line.startswith("custos_build_info{")]
    assert len(info) == 1
    assert f'python="{platform.python_version()}"' in info[0]
    assert f'grpc="{grpc.__version__}"' in info[0]
    assert info[0].endswith(" 1.0")
    for line in text.splitlines():
        if line.startswith("custos_sign_items_total{"):
            chain = line.split('chain="', 1)[1].split('"', 1)[0]
            assert chain in {"bitcoin", "ethereum", "bsc", "tron", "unknown"}, line


def test_refused_streams_are_measured_with_their_code(server: RunningServer) -> None:
    before = _sample(
        "custos_rpc_seconds_count",
        {"service": "custos.v1.Audit", "method": "Export", "code": "PERMISSION_DENIED"},
    )
    with pytest.raises(grpc.RpcError):
        list(audit_pb2_grpc.AuditStub(server.channel("payments")).Export(audit_pb2.ExportRequest()))
    after = _sample(
        "custos_rpc_seconds_count",
        {"service": "custos.v1.Audit", "method": "Export", "code": "PERMISSION_DENIED"},
    )
    assert after == before + 1


def test_held_batch_counts_as_pending_on_its_chain_then_as_signed_after_approval(
    server: RunningServer,
) -> None:
    uris = {name: enroll_totp(server.channel, name) for name in ("approver", "approver2")}
    steps = Steps()
    key = server.create_key(f"cnt-{uuid.uuid4().hex[:8]}")

    def count(outcome: str) -> float:
        return _sample("custos_sign_items_total", {"chain": "ethereum", "outcome": outcome})

    pending_before, signed_before = count("pending"), count("signed")
    request = pb.SignBatchRequest(request_id=f"c-{uuid.uuid4().hex}", items=[_large(key)])
    held = server.signer().SignBatch(request)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    assert count("pending") == pending_before + 1
    assert count("signed") == signed_before
    assert _sample("custos_sign_items_total", {"chain": "pending", "outcome": "pending"}) == 0
    assert _sample("custos_sign_items_total", {"chain": "evm", "outcome": "pending"}) == 0

    digest = _pending(server, held.approval_id).request_digest
    for name in ("approver", "approver2"):
        policy_pb2_grpc.ApprovalsStub(server.channel(name)).Approve(
            policy_pb2.DecideRequest(
                approval_id=held.approval_id,
                request_digest=digest,
                totp_code=steps.code(uris[name]),
            )
        )
    signed = server.signer().GetBatch(pb.GetBatchRequest(request_id=request.request_id))
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == builders.address(key, "ethereum", "sepolia")
    assert count("signed") == signed_before + 1


def _reflect(
    server: RunningServer, service: str, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    """A reflection client on `service`'s path. v1 and v1alpha messages are identical
    on the wire (v1 only renamed the package), so v1alpha's classes speak v1 too."""
    call = server.channel("payments").stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(call(iter([request])))
    return response


@pytest.mark.parametrize(
    "service", ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
)
def test_reflection_v1_and_v1alpha_list_and_describe_the_services(
    server: RunningServer, service: str
) -> None:
    listed = _reflect(server, service, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "custos.v1.Signer",
        "custos.v1.Keys",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names

    described = _reflect(
        server,
        service,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="custos.v1.Signer"),
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    (signer_file,) = [f for f in files if f.package == "custos.v1"]
    assert signer_file.options.go_package.endswith(";custosv1")
    assert signer_file.options.java_package

    own = _reflect(
        server,
        service,
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="grpc.reflection.v1.ServerReflection"
        ),
    )
    (v1_file,) = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in own.file_descriptor_response.file_descriptor_proto
    ]
    assert v1_file.package == "grpc.reflection.v1"
    (method,) = v1_file.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert all("v1alpha" not in f.type_name for m in v1_file.message_type for f in m.field)
