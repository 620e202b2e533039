"""WatchEvents from the outbox (the audit log), on SQLite with the in-process server.

Every event is an audit record: a watcher sees, in order, exactly the event
records its role may see, resumes after any sequence number without loss or
repeats, and a slow watcher loses nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import pytest

from custos.audit.record import AuditEvent, AuditRecord
from custos.proto.custos.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import subject_string
from tests import builders
from tests.conftest import DevEnv, RunningServer, ServerProcess, server_with_policy
from tests.outbox_support import BATCH, POLICY, due, got, watch
from tests.second_impl import evm_sender
from tests.support import enroll_totp

pytestmark = pytest.mark.integration

ETH = 10**18


def _records(server: RunningServer) -> list[AuditRecord]:
    return server.server.store.audit_records(0, 10**7)  # type: ignore[attr-defined,no-any-return]


def _owners(records: Sequence[AuditRecord]) -> Callable[[AuditRecord], str]:
    """Whose batch a record is about, worked out from the log alone."""
    requested = {
        r.event.fields["approval_id"]: r.event.actor
        for r in records
        if r.event.kind == "approval.requested"
    }

    def owner(record: AuditRecord) -> str:
        if record.event.kind in ("approval.requested", "sign.signed", "sign.refused"):
            return record.event.actor
        return str(requested.get(record.event.fields.get("approval_id"), ""))

    return owner


def _key(server: RunningServer, prefix: str = "ob") -> keys_pb2.Key:
    return server.create_key(f"{prefix}-{uuid.uuid4().hex[:12]}")


def _activity(server: RunningServer, tag: str) -> dict[str, str]:
    """One of each kind of event a service and an officer cause; request ids by kind."""
    key = _key(server)
    limited = _key(server, "limited")
    payments, other = server.signer("payments"), server.signer("limited")
    ids = {kind: f"{tag}-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("signed", "held", "over")}
    ids["limited"] = f"{tag}-limited-{uuid.uuid4().hex[:8]}"
    signed = payments.SignBatch(
        pb.SignBatchRequest(request_id=ids["signed"], items=[builders.evm_item(key)])
    )
    assert evm_sender(signed.items[0].raw_tx) == builders.address(key, "ethereum", "sepolia")
    large = builders.evm_item(key, nonce=1, value=str(ETH))
    held_request = pb.SignBatchRequest(request_id=ids["held"], items=[large])
    held = payments.SignBatch(held_request)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    approver = policy_pb2_grpc.ApprovalsStub(server.channel("approver2"))
    digest = approver.GetPending(
        policy_pb2.GetPendingRequest(approval_id=held.approval_id)
    ).request_digest
    approver.Reject(policy_pb2.DecideRequest(approval_id=held.approval_id, request_digest=digest))
    holesky = [builders.evm_item(key, chain_id=17000, nonce=n, value=str(ETH)) for n in (5, 6)]
    with pytest.raises(grpc.RpcError) as refused:
        payments.SignBatch(pb.SignBatchRequest(request_id=ids["over"], items=holesky))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    mine = other.SignBatch(
        pb.SignBatchRequest(request_id=ids["limited"], items=[builders.evm_item(limited)])
    )
    assert evm_sender(mine.items[0].raw_tx) == builders.address(limited, "ethereum", "sepolia")
    server.keys().DisableKey(keys_pb2.SetKeyStateRequest(key_id=key.key_id))
    return ids


def test_watchers_see_exactly_the_events_their_role_allows_in_log_order(
    server: RunningServer,
) -> None:
    watchers = {
        name: watch(server.channel(name))
        for name in ("officer", "auditor", "approver", "payments", "limited")
    }
    ids = _activity(server, "roles")
    records = _records(server)
    owner = _owners(records)
    payments, limited = subject_string("payments"), subject_string("limited")
    rules: dict[str, Callable[[AuditRecord], bool]] = {
        "officer": lambda r: True,
        "auditor": lambda r: True,
        "approver": lambda r: r.event.kind in BATCH or r.event.kind in POLICY,
        "payments": lambda r: r.event.kind in BATCH and owner(r) == payments,
        "limited": lambda r: r.event.kind in BATCH and owner(r) == limited,
    }
    for name, w in watchers.items():
        expected = due(records, w.start_seq, rules[name])
        assert expected, name
        w.wait_through(expected[-1][0])
        w.cancel()
        assert got(w.events)[: len(expected)] == expected, name
    # What each service saw, by request id: its own batches and nothing else.
    seen = {name: {e.request_id for e in w.events} for name, w in watchers.items()}
    assert {ids["signed"], ids["held"], ids["over"]} <= seen["payments"]
    assert ids["limited"] not in seen["payments"]
    assert seen["limited"] & {ids["signed"], ids["held"], ids["over"]} == set()
    assert ids["limited"] in seen["limited"]
    kinds = {e.kind for e in watchers["payments"].events if e.request_id.startswith("roles-")}
    assert kinds == {"signed", "pending", "rejected", "refused"}
    assert not any(e.key_id for e in watchers["payments"].events)  # no key events
    officer_kinds = {e.kind for e in watchers["officer"].events}
    assert {"key.created", "key.disabled", "signed", "refused"} <= officer_kinds
    rejected = next(
        e
        for e in watchers["payments"].events
        if e.kind == "rejected" and e.request_id == ids["held"]
    )
    assert rejected.requester == payments
    assert rejected.actor == subject_string("approver2")


def test_resuming_after_any_seq_replays_the_same_events_without_repeats(
    server: RunningServer,
) -> None:
    first = watch(server.channel("officer"))
    _activity(server, "resume")
    expected = due(_records(server), first.start_seq)
    first.wait_through(expected[-1][0])
    first.cancel()
    assert got(first.events)[: len(expected)] == expected
    for cut in (0, 1, len(expected) // 2, len(expected) - 2):
        after = expected[cut][0]
        resumed = watch(server.channel("officer"), after_seq=after)
        assert resumed.start_seq == after
        resumed.wait_through(expected[-1][0])
        resumed.cancel()
        assert got(resumed.events)[: len(expected) - cut - 1] == expected[cut + 1 :]
    # After the very last event: history ends there and live events follow.
    tail = watch(server.channel("officer"), after_seq=expected[-1][0])
    key = _key(server)
    more = due(_records(server), expected[-1][0])
    tail.wait_through(more[-1][0])
    tail.cancel()
    assert got(tail.events)[: len(more)] == more
    assert any(e.kind == "key.created" and e.key_id == key.key_id for e in tail.events)
    # From the start of the log: the first event is the first event record.
    whole = watch(server.channel("auditor"), after_seq=-1)
    head = due(_records(server), -1)[:5]
    whole.wait_through(head[-1][0])
    whole.cancel()
    assert got(whole.events)[:5] == head


def test_a_slow_watcher_loses_nothing(server: RunningServer) -> None:
    slow = watch(server.channel("payments"), delay=0.002)
    key = _key(server)
    payments = server.signer("payments")
    over = [builders.evm_item(key, chain_id=17000, nonce=n, value=str(ETH)) for n in (1, 2)]
    request_ids = []
    for n in range(150):  # refusals are cheap: no signature, one audit record each
        request_ids.append(f"slow-{n}-{uuid.uuid4().hex[:6]}")
        with pytest.raises(grpc.RpcError):
            payments.SignBatch(pb.SignBatchRequest(request_id=request_ids[-1], items=over))
    records = _records(server)
    expected = due(records, slow.start_seq, _mine(records, subject_string("payments")))
    slow.wait_through(expected[-1][0])
    slow.cancel()
    assert got(slow.events)[: len(expected)] == expected
    assert [e.request_id for e in slow.events if e.request_id.startswith("slow-")] == request_ids


def _mine(records: Sequence[AuditRecord], subject: str) -> Callable[[AuditRecord], bool]:
    owner = _owners(records)
    return lambda r: r.event.kind in BATCH and owner(r) == subject


def test_a_watcher_far_behind_reads_its_backlog_from_the_store(
    dev_env: DevEnv, tmp_path: Path
) -> None:
    """More records than any in-memory queue held (the old bus dropped past 10,000).

    On a server with a store of its own: the burst stays out of the shared log.
    """
    policy = dev_env.config().policy.bootstrap
    assert policy is not None
    with server_with_policy(dev_env, tmp_path, policy.read_text()) as server:
        _far_behind(server)


def _far_behind(server: RunningServer) -> None:
    store = server.server.store  # type: ignore[attr-defined]
    start = store.audit_size() - 1
    burst = [AuditEvent("key.enabled", "system", {"key_id": f"burst-{n}"}) for n in range(10_500)]
    for n in range(0, len(burst), 2100):
        store.append_audit(burst[n : n + 2100])
    behind = watch(server.channel("officer"), after_seq=start)
    expected = due(_records(server), start)
    behind.wait_through(expected[-1][0])
    behind.cancel()
    events = got(behind.events)[: len(expected)]
    assert events == expected
    assert sum(1 for e in behind.events if e.key_id.startswith("burst-")) == 10_500


@pytest.mark.parametrize(
    ("after_seq", "message"),
    [(-2, "after_seq: must be -1"), (10**12, "after_seq: 1000000000000 is beyond the end")],
)
def test_bad_resume_points_are_refused_naming_the_field(
    server: RunningServer, after_seq: int, message: str
) -> None:
    stub = policy_pb2_grpc.ApprovalsStub(server.channel("officer"))
    call = stub.WatchEvents(policy_pb2.WatchEventsRequest(after_seq=after_seq), timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        next(iter(call))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


def test_policy_and_totp_lockout_events_reach_the_roles_that_may_see_them(
    own_server: ServerProcess,
) -> None:
    own_server.start()
    enroll_totp(own_server.channel, "approver")
    watchers = {
        name: watch(own_server.channel(name)) for name in ("officer", "approver", "payments")
    }
    officer = policy_pb2_grpc.PoliciesStub(own_server.channel("officer"))
    text = officer.GetPolicy(policy_pb2.GetPolicyRequest()).document_yaml
    officer.ProposePolicy(
        policy_pb2.ProposePolicyRequest(document_yaml=text.replace("version: 1", "version: 2"))
    )
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="locked-out", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    held = signer_pb2_grpc.SignerStub(own_server.channel("payments")).SignBatch(
        pb.SignBatchRequest(request_id="lockout", items=[builders.evm_item(key, value=str(ETH))])
    )
    approver = policy_pb2_grpc.ApprovalsStub(own_server.channel("approver"))
    digest = approver.GetPending(
        policy_pb2.GetPendingRequest(approval_id=held.approval_id)
    ).request_digest
    for _ in range(5):  # wrong codes until the approver's TOTP locks
        with pytest.raises(grpc.RpcError):
            approver.Approve(
                policy_pb2.DecideRequest(
                    approval_id=held.approval_id, request_digest=digest, totp_code="000000"
                )
            )
    subject = subject_string("approver")
    officer_seen = watchers["officer"]
    officer_seen.wait(lambda seen: any(e.kind == "totp.locked" for e in seen))
    locked = next(e for e in officer_seen.events if e.kind == "totp.locked")
    assert locked.subject == subject
    proposed = next(e for e in officer_seen.events if e.kind == "policy.proposed")
    assert proposed.policy_version == 2
    # A batch everyone may see, after the lockout: once it arrives, each watcher
    # has been offered everything before it.
    signed = signer_pb2_grpc.SignerStub(own_server.channel("payments")).SignBatch(
        pb.SignBatchRequest(request_id="after", items=[builders.evm_item(key, nonce=1)])
    )
    assert evm_sender(signed.items[0].raw_tx) == builders.address(key, "ethereum", "sepolia")
    for w in watchers.values():
        w.wait(lambda seen: any(e.request_id == "after" for e in seen))
        w.cancel()
    approver_kinds = [e.kind for e in watchers["approver"].events if e.seq <= locked.seq]
    assert "policy.proposed" in approver_kinds
    assert "pending" in approver_kinds
    assert "totp.locked" not in approver_kinds
    assert "key.created" not in approver_kinds
    payments_kinds = [e.kind for e in watchers["payments"].events if e.seq <= locked.seq]
    assert payments_kinds == ["pending"]
    assert [e.kind for e in watchers["payments"].events if e.seq > locked.seq][:1] == ["signed"]
