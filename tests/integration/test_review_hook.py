"""The external review hook, end to end and fail-closed (issue 13 item 4).

A real in-process server with its own store and a policy whose `review` rules
send batches, by destination, to endpoints of a small HTTPS review server in
this test: one allows, one denies with a reason, one holds, one never answers
in time, one answers garbage, one answers 500, one presents a certificate the
configured CA does not vouch for, and one is named by the policy but missing
from the config. The review server checks every request's Ed25519 signature
with `cryptography` against the published event-signing key; every signed
transaction is checked by eth-account.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from custos.audit.record import AuditRecord
from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.edge.config import ReviewConfig, ReviewEndpointConfig
from custos.signer.tools.devsetup import DevCa, subject_string
from tests import builders
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.second_impl import evm_sender
from tests.webhook_receiver import verify_delivery

pytestmark = pytest.mark.integration

# One destination per endpoint: the policy's rule for it names that endpoint.
ENDPOINTS = (
    "allow",
    "deny",
    "hold",
    "slow",
    "stall",
    "garbage",
    "error",
    "untrusted",
    "missing",
)
# Endpoints that answer "allow" only once the test opens their gate.
GATED = ("slow", "stall")
DESTINATION = {name: f"0x{i + 1:040x}" for i, name in enumerate(ENDPOINTS)}
DENY_REASON = "sanctions list hit:\n\x1b[31mcase 4711\x1b[0m " + "x" * 500


def _policy() -> str:
    entries = "".join(
        f'    - {{id: to-{name}, chain: ethereum, network: sepolia, address: "{address}"}}\n'
        for name, address in DESTINATION.items()
    )
    rules = "".join(
        f"  - id: review-{name}\n"
        f"    match: {{chains: [ethereum], destinations: {{entries: [to-{name}]}}}}\n"
        "    action: review\n"
        f"    review: {name}\n"
        "    approval: {approvals: 1, group: compliance, totp: false}\n"
        for name in ENDPOINTS
    )
    return f"""\
version: 1
description: review hook tests
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:
  create_key: 0  # one officer creates the test's keys alone (development)
identity_groups:
  compliance: ["{subject_string("approver")}"]
address_book:
  cooling_off: 0s
  entries:
{entries}rules:
{rules}"""


@dataclass
class ReviewServer:
    """Answers by path (/allow, /deny, ...) and records every request it got."""

    ca_file: Path
    public_key_pem: bytes = b""  # the event-signing key, once the server is up
    port: int = 0
    requests: list[tuple[str, dict[str, str], bytes, bool]] = field(default_factory=list)
    gates: dict[str, threading.Event] = field(
        default_factory=lambda: {name: threading.Event() for name in GATED}
    )
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    def url(self, name: str) -> str:
        return f"https://localhost:{self.port}/{name}"

    def got(self, request_id: str) -> list[tuple[str, dict[str, object], bool]]:
        """(endpoint, body, signature verified) of the requests about `request_id`."""
        with self.lock:
            found = [(p, json.loads(b), ok) for p, _, b, ok in self.requests]
        return [(p, body, ok) for p, body, ok in found if body["request_id"] == request_id]


ANSWERS: dict[str, tuple[int, bytes]] = {
    "allow": (200, json.dumps({"decision": "allow", "reason": "low risk"}).encode()),
    "deny": (200, json.dumps({"decision": "deny", "reason": DENY_REASON}).encode()),
    "hold": (200, json.dumps({"decision": "hold", "reason": "needs a look"}).encode()),
    "garbage": (200, b"<html>definitely allow</html>"),
    "error": (500, json.dumps({"decision": "allow"}).encode()),
}


def _start(directory: Path) -> tuple[ReviewServer, ThreadingHTTPServer]:
    ca = DevCa(directory / "review-pki")
    cert, key = ca.issue("localhost", server=True)
    review = ReviewServer(ca.cert_path)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            name = self.path.strip("/")
            with review.arrived:
                review.requests.append(
                    (name, headers, body, verify_delivery(review.public_key_pem, headers, body))
                )
                review.arrived.notify_all()
            if name in review.gates:
                review.gates[name].wait(120)
                name = "allow"
            status, answer = ANSWERS[name]
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    review.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return review, httpd


@dataclass
class Setup:
    server: RunningServer
    review: ReviewServer


@pytest.fixture(scope="module")
def setup(dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("review-hook")
    review, httpd = _start(directory)
    ca_file = review.ca_file
    stranger_ca = DevCa(directory / "other-pki").cert_path
    endpoints = {
        name: ReviewEndpointConfig(url=review.url(name), ca_file=ca_file)
        for name in ("allow", "deny", "hold", "stall", "garbage", "error")
    }
    # Never answers in time: a short timeout of its own (no answer means deny).
    endpoints["slow"] = ReviewEndpointConfig(
        url=review.url("slow"), ca_file=ca_file, timeout_seconds=2
    )
    # The same server, but the configured CA is not the one that issued its certificate.
    endpoints["untrusted"] = ReviewEndpointConfig(url=review.url("allow"), ca_file=stranger_ca)
    config = ReviewConfig(timeout_seconds=30, endpoints=endpoints)
    try:
        with server_with_policy(dev_env, directory, _policy(), review=config) as running:
            # The key a receiver verifies with: the one the service publishes.
            event_signer = running.server.event_signer  # type: ignore[attr-defined]
            review.public_key_pem = event_signer.public_key_pem()
            yield Setup(running, review)
    finally:
        for gate in review.gates.values():
            gate.set()
        httpd.shutdown()


@pytest.fixture
def key(setup: Setup) -> keys_pb2.Key:
    return setup.server.create_key(f"rv-{uuid.uuid4().hex[:10]}")


def _request(key: keys_pb2.Key, endpoint: str) -> pb.SignBatchRequest:
    item = builders.evm_item(key, to=DESTINATION[endpoint], value="123456789")
    return pb.SignBatchRequest(request_id=f"rv-{endpoint}-{uuid.uuid4().hex}", items=[item])


def _records(setup: Setup, request_id: str) -> list[AuditRecord]:
    records = setup.server.server.store.audit_records(0, 10**7)  # type: ignore[attr-defined]
    return [r for r in records if r.event.fields.get("request_id") == request_id]


def _refused(setup: Setup, request: pb.SignBatchRequest) -> tuple[grpc.RpcError, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        setup.server.signer().SignBatch(request)
    status = rpc_status.from_call(info.value)
    assert status is not None
    assert status.details
    detail = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(detail)
    return info.value, dict(detail.metadata)


def _nothing_signed(setup: Setup, request: pb.SignBatchRequest) -> None:
    kinds = [r.event.kind for r in _records(setup, request.request_id)]
    assert kinds == ["sign.refused"]
    with pytest.raises(grpc.RpcError) as info:
        setup.server.signer().GetBatch(pb.GetBatchRequest(request_id=request.request_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_allow_signs_and_the_endpoint_saw_the_decoded_batch_signed(
    setup: Setup, key: keys_pb2.Key
) -> None:
    request = _request(key, "allow")
    response = setup.server.signer().SignBatch(request)
    assert response.status == pb.BATCH_STATUS_SIGNED
    (item,) = response.items
    assert evm_sender(item.raw_tx) == builders.address(key, "ethereum", "sepolia")
    ((endpoint, body, verified),) = setup.review.got(request.request_id)
    assert (endpoint, verified) == ("allow", True)
    # The facts the policy judged, as the endpoint reads them.
    assert body["caller"] == subject_string("payments")
    assert body["rule"] == "review-allow"
    assert body["policy_version"] == response.policy_version
    (sent,) = body["items"]  # type: ignore[misc]
    assert (sent["key_id"], sent["chain"], sent["network"]) == (key.key_id, "ethereum", "sepolia")
    assert sent["transfers"] == [
        {"to": DESTINATION["allow"], "asset": "native", "amount": "123456789", "change": False}
    ]
    assert sent["digests"] == [s.digest for s in item.signatures]
    authorized = next(
        r for r in _records(setup, request.request_id) if r.event.kind == "sign.authorized"
    )
    assert authorized.event.fields["reviews"] == [
        {"endpoint": "allow", "answer": "allow", "reason": "low risk"}
    ]


def test_deny_refuses_with_the_endpoints_reason_sanitized(setup: Setup, key: keys_pb2.Key) -> None:
    request = _request(key, "deny")
    error, details = _refused(setup, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    message = error.details()
    assert "denied by review 'deny'" in message
    assert "sanctions list hit: [31mcase 4711 [0m" in message
    assert "\n" not in message
    assert "\x1b" not in message
    assert len(message) < 400  # the 500 x's were cut
    assert (details["code"], details["endpoint"], details["rule"]) == (
        "review_denied",
        "deny",
        "review-deny",
    )
    (refused,) = _records(setup, request.request_id)
    assert refused.event.fields["reason"] == message
    assert refused.event.fields["code"] == "review_denied"
    assert [verified for _, _, verified in setup.review.got(request.request_id)] == [True]
    _nothing_signed(setup, request)


def test_hold_waits_for_the_rules_approval_then_signs_without_asking_again(
    setup: Setup, key: keys_pb2.Key
) -> None:
    request = _request(key, "hold")
    held = setup.server.signer().SignBatch(request)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    authorized = next(
        r for r in _records(setup, request.request_id) if r.event.kind == "sign.authorized"
    )
    assert authorized.event.fields["decision"] == "approval"
    assert authorized.event.fields["reviews"] == [
        {"endpoint": "hold", "answer": "hold", "reason": "needs a look"}
    ]
    approvals = policy_pb2_grpc.ApprovalsStub(setup.server.channel("approver"))
    batch = approvals.GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    approvals.Approve(
        policy_pb2.DecideRequest(approval_id=held.approval_id, request_digest=batch.request_digest)
    )
    signed = setup.server.signer().GetBatch(pb.GetBatchRequest(request_id=request.request_id))
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == builders.address(key, "ethereum", "sepolia")
    # Asked once, when the batch arrived; the approval stood in for it afterwards.
    assert [e for e, _, _ in setup.review.got(request.request_id)] == ["hold"]


def test_a_hold_is_signed_only_with_the_review_rules_approval(
    setup: Setup, key: keys_pb2.Key
) -> None:
    request = _request(key, "hold")
    held = setup.server.signer().SignBatch(request)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    again = setup.server.signer().SignBatch(request)
    assert (again.status, again.approval_id) == (pb.BATCH_STATUS_PENDING_APPROVAL, held.approval_id)
    # An approver outside the rule's group cannot release it: the desk judges the
    # batch again without asking the endpoint, as held, so the rule's quorum stands.
    outsider = policy_pb2_grpc.ApprovalsStub(setup.server.channel("approver2"))
    batch = outsider.GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    with pytest.raises(grpc.RpcError) as info:
        outsider.Approve(
            policy_pb2.DecideRequest(
                approval_id=held.approval_id, request_digest=batch.request_digest
            )
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    fetched = setup.server.signer().GetBatch(pb.GetBatchRequest(request_id=request.request_id))
    assert fetched.status == pb.BATCH_STATUS_PENDING_APPROVAL
    assert not fetched.items
    assert "sign.signed" not in [r.event.kind for r in _records(setup, request.request_id)]


def test_no_answer_within_the_timeout_refuses(setup: Setup, key: keys_pb2.Key) -> None:
    request = _request(key, "slow")
    try:
        error, details = _refused(setup, request)
    finally:
        setup.review.gates["slow"].set()
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "failed: no answer within 2 s;" in error.details()
    assert (details["code"], details["endpoint"]) == ("review_failed", "slow")
    (refused,) = _records(setup, request.request_id)
    assert "no answer within" in refused.event.fields["reason"]
    _nothing_signed(setup, request)


def test_a_review_in_flight_holds_up_no_other_caller(setup: Setup, key: keys_pb2.Key) -> None:
    stalled = _request(key, "stall")
    outcome: list[object] = []
    caller = threading.Thread(
        target=lambda: outcome.append(setup.server.signer().SignBatch(stalled, timeout=120))
    )
    caller.start()
    try:
        with setup.review.arrived:
            assert setup.review.arrived.wait_for(
                lambda: any(p == "stall" for p, *_ in setup.review.requests), 60
            )
        # The endpoint still has not answered: another batch goes through meanwhile.
        other = setup.server.create_key(f"rv-{uuid.uuid4().hex[:10]}")
        quick = setup.server.signer().SignBatch(_request(other, "allow"))
        assert quick.status == pb.BATCH_STATUS_SIGNED
        assert evm_sender(quick.items[0].raw_tx) == builders.address(other, "ethereum", "sepolia")
        assert not outcome
    finally:
        setup.review.gates["stall"].set()
        caller.join(120)
    (signed,) = outcome
    assert isinstance(signed, pb.SignBatchResponse)
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == builders.address(key, "ethereum", "sepolia")


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("garbage", "answer is not JSON"),
        ("error", "answered HTTP 500"),
        ("untrusted", "certificate did not verify"),
        ("missing", "no such endpoint in the service's [review] configuration"),
    ],
)
def test_any_other_outcome_refuses(
    setup: Setup, key: keys_pb2.Key, endpoint: str, why: str
) -> None:
    request = _request(key, endpoint)
    error, details = _refused(setup, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert why in error.details()
    assert f"review '{endpoint}' (rule 'review-{endpoint}') failed" in error.details()
    assert "localhost" not in error.details()  # where the endpoint is stays inside
    assert (details["code"], details["endpoint"]) == ("review_failed", endpoint)
    (refused,) = _records(setup, request.request_id)
    assert why in refused.event.fields["reason"]
    _nothing_signed(setup, request)
