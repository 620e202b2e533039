"""Policy, approvals and TOTP end to end: real SoftHSM, real mTLS gRPC server.

The server runs the development policy that `custos init` writes: Sepolia
payments of 1 ETH or more wait for two approvers with TOTP codes; Holesky
native payments are limited to 1 ETH per key and hour.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import pyotp
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import RunningServer
from tests.second_impl import evm_sender
from tests.support import enroll_totp
from tests.totp import TotpCodes

pytestmark = pytest.mark.integration

ETH = 10**18
# builders.evm_item's maximum fee (gas limit x max fee per gas): velocity
# limits charge it to the native asset with the value.
_TX = builders.evm_item(keys_pb2.Key(key_id="fee")).evm
FEE = _TX.gas_limit * int(_TX.max_fee_per_gas)


def _rid() -> str:
    return f"p-{uuid.uuid4().hex}"


def _codes_at(uri: str, moment: float) -> str:
    return str(pyotp.parse_uri(uri).at(moment))


@pytest.fixture
def totp(server: RunningServer) -> dict[str, str]:
    """Both approvers (re-)enroll themselves with officer-issued tokens: fresh secrets."""
    return {name: enroll_totp(server.channel, name) for name in ("approver", "approver2")}


class Steps:
    """A TOTP code per call: each step's code is accepted once per identity."""

    def __init__(self) -> None:
        self.codes = TotpCodes({})

    def code(self, uri: str) -> str:
        self.codes.add(uri, uri)  # keyed by URI: one identity each
        return self.codes.code(uri)


@pytest.fixture
def key(server: RunningServer) -> keys_pb2.Key:
    return server.create_key(f"pol-{uuid.uuid4().hex[:8]}")


def _large(key: keys_pb2.Key, nonce: int = 0) -> pb.SignItem:
    return builders.evm_item(key, chain_id=11155111, nonce=nonce, value=str(2 * ETH))


def _pending(server: RunningServer, approval_id: str) -> policy_pb2.PendingBatch:
    batches = (
        policy_pb2_grpc.ApprovalsStub(server.channel("approver"))
        .ListPending(policy_pb2.ListPendingRequest())
        .batches
    )
    return next(b for b in batches if b.approval_id == approval_id)


def _watch(server: RunningServer, identity: str) -> tuple[list[policy_pb2.Event], Iterator[object]]:
    stream = policy_pb2_grpc.ApprovalsStub(server.channel(identity)).WatchEvents(
        policy_pb2.WatchEventsRequest()
    )
    seen: list[policy_pb2.Event] = []

    def pump() -> None:
        try:
            for event in stream:
                seen.append(event)
        except grpc.RpcError:
            pass

    threading.Thread(target=pump, daemon=True).start()
    _wait_for(seen, "", "watching")
    return seen, stream  # type: ignore[return-value]


def _wait_for(seen: list[policy_pb2.Event], approval_id: str, kind: str) -> None:
    deadline = time.monotonic() + 60  # generous: a busy machine is slow, never wrong
    while not any(e.approval_id == approval_id and e.kind == kind for e in seen):
        assert time.monotonic() < deadline, f"no {kind} event; saw {[e.kind for e in seen]}"
        time.sleep(0.05)


def test_small_batch_is_signed_at_once_with_its_rule(
    server: RunningServer, key: keys_pb2.Key
) -> None:
    response = server.signer().SignBatch(
        pb.SignBatchRequest(request_id=_rid(), items=[builders.evm_item(key)])
    )
    assert response.status == pb.BATCH_STATUS_SIGNED
    assert list(response.rules) == ["development-default"]
    assert len(response.policy_version) == 64


def test_large_batch_waits_for_two_approvers_with_totp_then_is_signed_and_streamed(
    server: RunningServer, key: keys_pb2.Key, totp: dict[str, str]
) -> None:
    steps = Steps()
    seen, stream = _watch(server, "payments")
    request = pb.SignBatchRequest(request_id=_rid(), items=[_large(key)])
    held = server.signer().SignBatch(request)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    assert held.approval_id
    assert list(held.rules) == ["large-sepolia-payments"]
    _wait_for(seen, held.approval_id, "pending")
    # The same request again: still pending, same approval, nothing new held.
    assert server.signer().SignBatch(request).approval_id == held.approval_id

    pending = _pending(server, held.approval_id)
    assert pending.totp_required
    assert pending.missing == ["approvers: 2 more"]
    (item,) = pending.items
    assert item.chain == "ethereum"
    assert item.network == "sepolia"
    assert item.destinations == [f"{builders.EVM_DEST} native {2 * ETH}"]

    approvals = {
        n: policy_pb2_grpc.ApprovalsStub(server.channel(n)) for n in ("approver", "approver2")
    }
    decide = policy_pb2.DecideRequest(
        approval_id=held.approval_id, request_digest=pending.request_digest
    )
    # Without a code, with a wrong code, or with another request's digest: refused.
    with pytest.raises(grpc.RpcError) as info:
        approvals["approver"].Approve(decide)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "totp_code: code required" in info.value.details()
    wrong_digest = policy_pb2.DecideRequest(
        approval_id=held.approval_id,
        request_digest="00" * 32,
        totp_code=steps.code(totp["approver"]),
    )
    with pytest.raises(grpc.RpcError) as info:
        approvals["approver"].Approve(wrong_digest)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "digest" in info.value.details()

    first = approvals["approver"].Approve(
        policy_pb2.DecideRequest(
            approval_id=held.approval_id,
            request_digest=pending.request_digest,
            totp_code=steps.code(totp["approver"]),
        )
    )
    assert first.state == "pending"
    assert first.missing == ["approvers: 1 more"]
    # Approving twice counts once.
    with pytest.raises(grpc.RpcError) as info:
        approvals["approver"].Approve(
            policy_pb2.DecideRequest(
                approval_id=held.approval_id,
                request_digest=pending.request_digest,
                totp_code=steps.code(totp["approver"]),
            )
        )
    assert "counts once" in info.value.details()
    assert server.signer().GetBatch(pb.GetBatchRequest(request_id=request.request_id)).status == (
        pb.BATCH_STATUS_PENDING_APPROVAL
    )

    second = approvals["approver2"].Approve(
        policy_pb2.DecideRequest(
            approval_id=held.approval_id,
            request_digest=pending.request_digest,
            totp_code=steps.code(totp["approver2"]),
        )
    )
    assert second.state == "signed"
    _wait_for(seen, held.approval_id, "approved")
    _wait_for(seen, held.approval_id, "signed")
    stream.cancel()  # type: ignore[attr-defined]

    signed = server.signer().GetBatch(pb.GetBatchRequest(request_id=request.request_id))
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert signed.approval_id == held.approval_id
    assert evm_sender(signed.items[0].raw_tx) == builders.address(key, "ethereum", "sepolia")


def test_replayed_totp_code_is_refused(
    server: RunningServer, key: keys_pb2.Key, totp: dict[str, str]
) -> None:
    approver = policy_pb2_grpc.ApprovalsStub(server.channel("approver"))
    held = [
        server.signer().SignBatch(pb.SignBatchRequest(request_id=_rid(), items=[_large(key, n)]))
        for n in range(2)
    ]
    pendings = [_pending(server, h.approval_id) for h in held]
    code = Steps().code(totp["approver"])
    approver.Approve(
        policy_pb2.DecideRequest(
            approval_id=held[0].approval_id,
            request_digest=pendings[0].request_digest,
            totp_code=code,
        )
    )
    with pytest.raises(grpc.RpcError) as info:
        approver.Approve(
            policy_pb2.DecideRequest(
                approval_id=held[1].approval_id,
                request_digest=pendings[1].request_digest,
                totp_code=code,
            )
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "replayed" in info.value.details()
    assert code not in info.value.details()


def test_rejection_gives_the_budget_back_and_is_final(
    server: RunningServer, key: keys_pb2.Key
) -> None:
    request = pb.SignBatchRequest(request_id=_rid(), items=[_large(key)])
    held = server.signer().SignBatch(request)
    digest = _pending(server, held.approval_id).request_digest
    # The requesting service may withdraw its own request; it could never approve it.
    with pytest.raises(grpc.RpcError) as info:
        policy_pb2_grpc.ApprovalsStub(server.channel("payments")).Approve(
            policy_pb2.DecideRequest(approval_id=held.approval_id, request_digest=digest)
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    rejected = policy_pb2_grpc.ApprovalsStub(server.channel("approver2")).Reject(
        policy_pb2.DecideRequest(approval_id=held.approval_id, request_digest=digest)
    )
    assert rejected.state == "rejected"
    again = server.signer().SignBatch(request)
    assert again.status == pb.BATCH_STATUS_REJECTED
    assert again.replayed
    records = server.server.store.audit_records(0, 10**6)  # type: ignore[attr-defined]
    released = [
        r
        for r in records
        if r.event.kind == "budget.released"
        and r.event.fields.get("approval_id") == held.approval_id
    ]
    assert len(released) == 1


def _holesky(key: keys_pb2.Key, amounts: list[int], nonce: int) -> list[pb.SignItem]:
    return [
        builders.evm_item(key, chain_id=17000, nonce=nonce + i, value=str(a))
        for i, a in enumerate(amounts)
    ]


def test_limit_denial_says_what_remains(server: RunningServer, key: keys_pb2.Key) -> None:
    server.signer().SignBatch(
        pb.SignBatchRequest(request_id=_rid(), items=_holesky(key, [ETH // 4 * 3], 0))
    )
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignBatch(
            pb.SignBatchRequest(request_id=_rid(), items=_holesky(key, [ETH // 2], 1))
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "holesky-hourly-per-key" in info.value.details()
    status = rpc_status.from_call(info.value)
    assert status is not None
    detail = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(detail)
    assert detail.metadata["limit"] == "holesky-hourly-per-key"
    assert detail.reason == "limit_exceeded"
    assert dict(detail.metadata)["amount"] == str(ETH - ETH // 4 * 3 - FEE)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(
        st.lists(st.integers(1, ETH // 3), min_size=1, max_size=4), min_size=4, max_size=12
    )
)
def test_concurrent_batches_never_overspend_a_limit(
    server: RunningServer, batches: list[list[int]]
) -> None:
    key = server.create_key(f"vel-{uuid.uuid4().hex[:8]}")
    signed: list[int] = []
    unexpected: list[str] = []
    lock = threading.Lock()

    def send(index: int, amounts: list[int]) -> None:
        request = pb.SignBatchRequest(request_id=_rid(), items=_holesky(key, amounts, index * 10))
        try:
            response = server.signer().SignBatch(request)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                unexpected.append(f"{exc.code()}: {exc.details()}")
            return
        with lock:
            if len(response.items) != len(amounts):  # a batch counts as a whole
                unexpected.append(f"partial batch: {len(response.items)} of {len(amounts)}")
            signed.append(sum(amounts) + FEE * len(amounts))

    threads = [threading.Thread(target=send, args=(i, b)) for i, b in enumerate(batches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not unexpected
    assert sum(signed) <= ETH
    # And what was refused really did not fit: some batch alone always fits an empty budget.
    assert signed or all(sum(b) + FEE * len(b) > ETH for b in batches)
