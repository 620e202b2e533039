"""mTLS and roles, for every RPC: who gets in, who is refused, and with which status."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.proto.custos.v1 import audit_pb2, keys_pb2, policy_pb2, signer_pb2, webhooks_pb2
from custos.signer.edge.auth import RPC_ROLES
from custos.signer.tools.devsetup import DevCa
from tests.conftest import RunningServer

pytestmark = pytest.mark.integration

# One harmless request per RPC: authorization is checked before any of them is acted on.
REQUESTS: dict[str, tuple[Message, type[Message]]] = {
    "/custos.v1.Signer/SignBatch": (
        signer_pb2.SignBatchRequest(request_id="auth-probe"),
        signer_pb2.SignBatchResponse,
    ),
    "/custos.v1.Signer/SignPsbt": (
        signer_pb2.SignPsbtRequest(request_id="auth-probe"),
        signer_pb2.SignPsbtResponse,
    ),
    "/custos.v1.Signer/GetBatch": (
        signer_pb2.GetBatchRequest(request_id="auth-probe"),
        signer_pb2.SignBatchResponse,
    ),
    "/custos.v1.Keys/CreateKey": (keys_pb2.CreateKeyRequest(key_id="Not Valid"), keys_pb2.Key),
    "/custos.v1.Keys/GetKey": (keys_pb2.GetKeyRequest(key_id="auth-probe-missing"), keys_pb2.Key),
    "/custos.v1.Keys/ListKeys": (keys_pb2.ListKeysRequest(), keys_pb2.ListKeysResponse),
    "/custos.v1.Keys/DisableKey": (
        keys_pb2.SetKeyStateRequest(key_id="auth-probe-missing"),
        keys_pb2.Key,
    ),
    "/custos.v1.Keys/EnableKey": (
        keys_pb2.SetKeyStateRequest(key_id="auth-probe-missing"),
        keys_pb2.Key,
    ),
    "/custos.v1.Keys/CreateImportKey": (
        keys_pb2.CreateImportKeyRequest(),
        keys_pb2.ImportWrappingKey,
    ),
    "/custos.v1.Keys/GetImportKey": (keys_pb2.GetImportKeyRequest(), keys_pb2.ImportWrappingKey),
    "/custos.v1.Keys/ImportKey": (
        keys_pb2.ImportKeyRequest(key_id="Not Valid"),
        keys_pb2.Key,
    ),
    "/custos.v1.Keys/ProposeKeyCeremony": (
        keys_pb2.ProposeKeyCeremonyRequest(key_id="auth-probe-missing"),  # no kind: refused
        keys_pb2.KeyCeremony,
    ),
    "/custos.v1.Keys/ApproveKeyCeremony": (
        keys_pb2.ApproveKeyCeremonyRequest(ceremony_id="missing", digest="00"),
        keys_pb2.KeyCeremony,
    ),
    "/custos.v1.Keys/CancelKeyCeremony": (
        keys_pb2.CancelKeyCeremonyRequest(ceremony_id="missing"),
        keys_pb2.KeyCeremony,
    ),
    "/custos.v1.Keys/GetKeyCeremony": (
        keys_pb2.GetKeyCeremonyRequest(ceremony_id="missing"),
        keys_pb2.KeyCeremony,
    ),
    "/custos.v1.Keys/ListKeyCeremonies": (
        keys_pb2.ListKeyCeremoniesRequest(),
        keys_pb2.ListKeyCeremoniesResponse,
    ),
    "/custos.v1.Keys/FetchKeyCeremonyResult": (
        keys_pb2.FetchKeyCeremonyResultRequest(ceremony_id="missing"),  # no code: refused
        keys_pb2.KeyCeremonyResult,
    ),
    "/custos.v1.Keys/GetWallet": (
        keys_pb2.GetWalletRequest(wallet_id="missing"),
        keys_pb2.Wallet,
    ),
    "/custos.v1.Keys/ListWallets": (keys_pb2.ListWalletsRequest(), keys_pb2.ListWalletsResponse),
    "/custos.v1.Keys/DeriveAddresses": (
        keys_pb2.DeriveAddressesRequest(
            account=keys_pb2.WalletAccount(wallet_id="missing", chain="tron", network="nile")
        ),
        keys_pb2.DeriveAddressesResponse,
    ),
    "/custos.v1.Keys/GetAccountKey": (
        keys_pb2.WalletAccount(wallet_id="missing", chain="tron", network="nile"),
        keys_pb2.AccountKey,
    ),
    "/custos.v1.Audit/StreamRecords": (
        audit_pb2.StreamRecordsRequest(from_seq=10**9),
        audit_pb2.AuditRecord,
    ),
    "/custos.v1.Audit/GetLatestCheckpoint": (
        audit_pb2.GetLatestCheckpointRequest(),
        audit_pb2.Checkpoint,
    ),
    "/custos.v1.Audit/CreateCheckpoint": (
        audit_pb2.CreateCheckpointRequest(),
        audit_pb2.Checkpoint,
    ),
    "/custos.v1.Audit/GetInclusionProof": (
        audit_pb2.GetInclusionProofRequest(seq=10**9),
        audit_pb2.InclusionProof,
    ),
    "/custos.v1.Audit/GetConsistencyProof": (
        audit_pb2.GetConsistencyProofRequest(from_size=10**9),
        audit_pb2.ConsistencyProof,
    ),
    "/custos.v1.Audit/Export": (audit_pb2.ExportRequest(from_seq=10**9), audit_pb2.ExportChunk),
    "/custos.v1.Audit/GetAuditKey": (audit_pb2.GetAuditKeyRequest(), audit_pb2.AuditKey),
    "/custos.v1.Audit/ListCheckpoints": (
        audit_pb2.ListCheckpointsRequest(min_size=10**9),
        audit_pb2.Checkpoint,
    ),
}
REQUESTS.update(
    {
        "/custos.v1.Policies/ProposePolicy": (
            policy_pb2.ProposePolicyRequest(document_yaml="not: [a policy"),
            policy_pb2.PolicyVersion,
        ),
        "/custos.v1.Policies/ApprovePolicy": (
            policy_pb2.ApprovePolicyRequest(version=999, hash="00", totp_code=""),
            policy_pb2.PolicyVersion,
        ),
        "/custos.v1.Policies/GetPolicy": (
            policy_pb2.GetPolicyRequest(version=999),
            policy_pb2.PolicyVersion,
        ),
        "/custos.v1.Policies/ListPolicies": (
            policy_pb2.ListPoliciesRequest(),
            policy_pb2.ListPoliciesResponse,
        ),
        "/custos.v1.Policies/EnrollTotp": (
            policy_pb2.EnrollTotpRequest(subject=""),
            policy_pb2.EnrollTotpResponse,
        ),
        "/custos.v1.Policies/IssueTotpToken": (
            policy_pb2.IssueTotpTokenRequest(subject=""),
            policy_pb2.IssueTotpTokenResponse,
        ),
        "/custos.v1.Policies/UnlockTotp": (
            policy_pb2.UnlockTotpRequest(subject=""),
            policy_pb2.UnlockTotpResponse,
        ),
        "/custos.v1.Policies/CancelPolicy": (
            policy_pb2.CancelPolicyRequest(version=0),
            policy_pb2.PolicyVersion,
        ),
        "/custos.v1.Approvals/GetPending": (
            policy_pb2.GetPendingRequest(approval_id="missing"),
            policy_pb2.PendingBatch,
        ),
        "/custos.v1.Approvals/ListPending": (
            policy_pb2.ListPendingRequest(),
            policy_pb2.ListPendingResponse,
        ),
        "/custos.v1.Approvals/Approve": (
            policy_pb2.DecideRequest(approval_id="missing", request_digest="00"),
            policy_pb2.PendingBatch,
        ),
        "/custos.v1.Approvals/Reject": (
            policy_pb2.DecideRequest(approval_id="missing", request_digest="00"),
            policy_pb2.PendingBatch,
        ),
        "/custos.v1.Approvals/WatchEvents": (policy_pb2.WatchEventsRequest(), policy_pb2.Event),
        "/custos.v1.Webhooks/AddWebhook": (
            webhooks_pb2.AddWebhookRequest(url="http://auth-probe.invalid/", kinds=["signed"]),
            webhooks_pb2.Webhook,
        ),
        "/custos.v1.Webhooks/ListWebhooks": (
            webhooks_pb2.ListWebhooksRequest(),
            webhooks_pb2.ListWebhooksResponse,
        ),
        "/custos.v1.Webhooks/RemoveWebhook": (
            webhooks_pb2.RemoveWebhookRequest(webhook_id="wh-auth-probe"),
            webhooks_pb2.RemoveWebhookResponse,
        ),
        "/custos.v1.Webhooks/ReplayWebhook": (
            webhooks_pb2.ReplayWebhookRequest(webhook_id="wh-auth-probe"),
            webhooks_pb2.Webhook,
        ),
        "/custos.v1.Webhooks/GetEventKey": (
            webhooks_pb2.GetEventKeyRequest(),
            webhooks_pb2.EventKey,
        ),
    }
)
STREAMING = {
    "/custos.v1.Audit/StreamRecords",
    "/custos.v1.Audit/ListCheckpoints",
    "/custos.v1.Audit/Export",
    "/custos.v1.Approvals/WatchEvents",
}
# Streams that stay open for allowed callers: a short deadline ends them.
TIMEOUTS = {"/custos.v1.Approvals/WatchEvents": 0.5}
IDENTITY_ROLES = {
    "officer": "officer",
    "payments": "service",
    "approver": "approver",
    "auditor": "auditor",
}


def _call(channel: grpc.Channel, method: str) -> grpc.StatusCode:
    request, response_type = REQUESTS[method]
    kind = channel.unary_stream if method in STREAMING else channel.unary_unary
    stub = kind(
        method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    try:
        reply = stub(request, timeout=TIMEOUTS.get(method, 10))
        if method in STREAMING:
            list(reply)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_requests_cover_every_rpc() -> None:
    assert set(REQUESTS) == set(RPC_ROLES)


@pytest.mark.parametrize("method", sorted(RPC_ROLES))
@pytest.mark.parametrize("identity", sorted(IDENTITY_ROLES))
def test_role_table_is_enforced(server: RunningServer, identity: str, method: str) -> None:
    code = _call(server.channel(identity), method)
    if IDENTITY_ROLES[identity] in RPC_ROLES[method]:
        # Let in: the probe request then fails on its own merits, never on authorization.
        assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("method", sorted(RPC_ROLES))
def test_unknown_subject_from_our_ca_is_unauthenticated(server: RunningServer, method: str) -> None:
    assert _call(server.channel("stranger"), method) == grpc.StatusCode.UNAUTHENTICATED


def _foreign_channel(server: RunningServer, tmp_dir: object, with_cert: bool) -> grpc.Channel:
    ca_pem = (server.env.dir / "pki" / "ca.pem").read_bytes()
    if not with_cert:
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    else:
        other = DevCa(tmp_dir)  # type: ignore[arg-type]
        cert, key = other.issue("officer", server=False)  # same subject, other CA
        creds = grpc.ssl_channel_credentials(ca_pem, key.read_bytes(), cert.read_bytes())
    return grpc.secure_channel(f"127.0.0.1:{server.port}", creds)


@pytest.mark.parametrize("with_cert", [False, True], ids=["no-client-cert", "cert-from-other-ca"])
@pytest.mark.parametrize("method", sorted(RPC_ROLES))
def test_tls_handshake_refuses_missing_or_foreign_certificates(
    server: RunningServer, tmp_path: object, method: str, with_cert: bool
) -> None:
    # The server requires and verifies client certificates in the TLS handshake, so
    # these peers never reach an RPC handler: the client sees the refused connection.
    code = _call(_foreign_channel(server, tmp_path, with_cert), method)
    assert code == grpc.StatusCode.UNAVAILABLE


def test_health_is_served_to_any_identity(server: RunningServer) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel("auditor"))
    reply = stub.Check(health_pb2.HealthCheckRequest(service="custos.v1.Signer"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stranger = health_pb2_grpc.HealthStub(server.channel("stranger"))
    with pytest.raises(grpc.RpcError) as info:
        stranger.Check(health_pb2.HealthCheckRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_reflection_lists_the_services(server: RunningServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel("officer"))
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"custos.v1.Signer", "custos.v1.Keys", "grpc.health.v1.Health"} <= names


def test_service_sees_only_granted_keys(server: RunningServer) -> None:
    server.create_key("limited-visible")
    server.create_key("other-hidden")
    listed = {k.key_id for k in server.keys("limited").ListKeys(keys_pb2.ListKeysRequest()).keys}
    assert "limited-visible" in listed
    assert "other-hidden" not in listed
    with pytest.raises(grpc.RpcError) as info:
        server.keys("limited").GetKey(keys_pb2.GetKeyRequest(key_id="other-hidden"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
