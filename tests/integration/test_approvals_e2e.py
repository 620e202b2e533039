"""Approvers see what they approve; second factors belong to their owner; governance gaps.

Through the real mTLS server (the session's in-process one, or a server process
of its own where a test changes the policy), as approvers, officers and someone
holding the database would.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pyotp
import pytest

from custos.policies import approvals
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
from tests.conftest import DevEnv, RunningServer, ServerProcess
from tests.second_impl import evm_sender
from tests.support import enroll_totp

pytestmark = pytest.mark.integration

ETH = 10**18


def _approver(server: RunningServer, name: str = "approver") -> policy_pb2_grpc.ApprovalsStub:
    return policy_pb2_grpc.ApprovalsStub(server.channel(name))


def _large(key: keys_pb2.Key, nonce: int = 0) -> pb.SignItem:
    return builders.evm_item(key, chain_id=11155111, nonce=nonce, value=str(2 * ETH))


def test_officer_never_sees_another_identitys_secret(server: RunningServer) -> None:
    officer = policy_pb2_grpc.PoliciesStub(server.channel("officer"))
    approver = policy_pb2_grpc.PoliciesStub(server.channel("approver"))
    with pytest.raises(grpc.RpcError) as info:
        officer.EnrollTotp(policy_pb2.EnrollTotpRequest(subject=subject_string("approver")))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "own" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:  # an approver cannot enroll another either
        approver.EnrollTotp(policy_pb2.EnrollTotpRequest(subject=subject_string("approver2")))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:  # a certificate alone does not enroll
        approver.EnrollTotp(policy_pb2.EnrollTotpRequest())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "enrollment_token" in info.value.details()

    issued = officer.IssueTotpToken(
        policy_pb2.IssueTotpTokenRequest(subject=subject_string("approver"))
    )
    # What the officer receives holds no secret, only the token.
    assert {f.name for f, _ in issued.ListFields()} == {
        "subject",
        "enrollment_token",
        "expires_at_unix",
    }
    with pytest.raises(grpc.RpcError) as info:  # the token is bound to its subject
        policy_pb2_grpc.PoliciesStub(server.channel("approver2")).EnrollTotp(
            policy_pb2.EnrollTotpRequest(enrollment_token=issued.enrollment_token)
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    uri = approver.EnrollTotp(
        policy_pb2.EnrollTotpRequest(enrollment_token=issued.enrollment_token)
    ).otpauth_uri
    assert pyotp.parse_uri(uri).secret
    with pytest.raises(grpc.RpcError) as info:  # once
        approver.EnrollTotp(policy_pb2.EnrollTotpRequest(enrollment_token=issued.enrollment_token))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:  # an officer does not issue to itself
        officer.IssueTotpToken(policy_pb2.IssueTotpTokenRequest(subject=subject_string("officer")))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Neither the token nor the secret is in the audit log.
    store = server.server.store  # type: ignore[attr-defined]
    records = "\n".join(r.encode().decode() for r in store.audit_records(0, 10**6))
    assert issued.enrollment_token not in records
    assert pyotp.parse_uri(uri).secret not in records


def test_list_pending_decodes_every_item_from_the_exact_bytes(server: RunningServer) -> None:
    key = server.create_key(f"show-{uuid.uuid4().hex[:8]}")
    request = pb.SignBatchRequest(
        request_id=f"show-{uuid.uuid4().hex}",
        items=[_large(key, 0), builders.tron_item(key, amount=1_500_000)],
    )
    held = server.signer().SignBatch(request)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    batch = _approver(server).GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    listed = next(
        b
        for b in _approver(server).ListPending(policy_pb2.ListPendingRequest()).batches
        if b.approval_id == held.approval_id
    )
    assert listed == batch
    # The exact bytes held, and the digest of those bytes.
    assert batch.request == request.SerializeToString(deterministic=True)
    recomputed = approvals.request_digest(batch.requester, batch.request_id, batch.request)
    assert recomputed.hex() == batch.request_digest
    payment, trx = batch.items
    assert payment.from_address == builders.address(key, "ethereum", "sepolia")
    (transfer,) = payment.transfers
    assert (transfer.to, transfer.asset, transfer.amount) == (
        builders.EVM_DEST,
        "native",
        str(2 * ETH),
    )
    assert (transfer.symbol, transfer.amount_units) == ("ETH", "2")
    assert payment.fee == str(60_000 * 30_000_000_000)
    assert payment.fee_units == "0.0018 ETH"
    assert trx.from_address == builders.address(key, "tron", "nile")
    (sent,) = trx.transfers
    assert (sent.to, sent.amount, sent.amount_units, sent.symbol) == (
        builders.TRON_DEST,
        "1500000",
        "1.5",
        "TRX",
    )
    _approver(server, "approver2").Reject(
        policy_pb2.DecideRequest(approval_id=held.approval_id, request_digest=batch.request_digest)
    )


def _sqlite_path(env: DevEnv) -> Path:
    return Path(env.config().store.url.removeprefix("sqlite:///"))


def test_a_row_marked_approved_by_hand_is_not_signed(server: RunningServer) -> None:
    key = server.create_key(f"forge-{uuid.uuid4().hex[:8]}")
    request_id = f"forge-{uuid.uuid4().hex}"
    held = server.signer().SignBatch(
        pb.SignBatchRequest(request_id=request_id, items=[_large(key)])
    )
    # Plain SQL, as whoever holds the database: state and record both say approved.
    with sqlite3.connect(_sqlite_path(server.env)) as db:
        (record,) = db.execute(
            "SELECT record FROM pending WHERE approval_id = ?", (held.approval_id,)
        ).fetchone()
        raw = json.loads(record)
        raw["pending"]["state"] = "approved"
        db.execute(
            "UPDATE pending SET state = 'approved', record = ? WHERE approval_id = ?",
            (json.dumps(raw), held.approval_id),
        )
    server.server.desk.sweep()  # type: ignore[attr-defined]
    fetched = server.signer().GetBatch(pb.GetBatchRequest(request_id=request_id))
    assert fetched.status == pb.BATCH_STATUS_PENDING_APPROVAL
    assert not fetched.items
    records = server.server.store.audit_records(0, 10**6)  # type: ignore[attr-defined]
    kinds = [r.event.kind for r in records if r.event.fields.get("request_id") == request_id]
    assert "sign.signed" not in kinds
    # The row no longer carries its HSM tag: approvers are told so, and it leaves the lists.
    with pytest.raises(grpc.RpcError) as info:
        _approver(server).GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert "integrity check" in info.value.details()
    listed = _approver(server).ListPending(policy_pb2.ListPendingRequest())
    assert held.approval_id not in [b.approval_id for b in listed.batches]


def _cli_profile(env: DevEnv, port: int, name: str, tmp_path: Path) -> Path:
    text = (env.dir / "clients" / f"{name}.toml").read_text()
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace('endpoint = "127.0.0.1:0"', f'endpoint = "127.0.0.1:{port}"'))
    return path


def _custos(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUSTOS_CLIENT": str(profile)},
        check=False,
    )


def test_cli_shows_the_request_and_refuses_a_digest_it_did_not_compute(
    server: RunningServer, tmp_path: Path
) -> None:
    uri = enroll_totp(server.channel, "approver")
    key = server.create_key(f"cli-{uuid.uuid4().hex[:8]}")
    request_id = f"cli-{uuid.uuid4().hex}"
    held = server.signer().SignBatch(
        pb.SignBatchRequest(request_id=request_id, items=[_large(key)])
    )
    profile = _cli_profile(server.env, server.port, "approver", tmp_path)
    shown = _custos(profile, "approvals", "show", held.approval_id)
    assert shown.returncode == 0, shown.stderr
    batch = _approver(server).GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    assert f"digest {batch.request_digest}" in shown.stdout
    assert "MISMATCH" not in shown.stdout
    assert f"{builders.EVM_DEST}: 2 ETH ({2 * ETH} base units)" in shown.stdout
    assert batch.request.hex() in shown.stdout

    code = pyotp.parse_uri(uri).now()
    wrong = _custos(
        profile, "approvals", "approve", held.approval_id, "--digest", "ab" * 32, "--code", code
    )
    assert wrong.returncode == 1
    assert "refused" in wrong.stderr
    # Refused by the CLI itself: no approval reached the server, the code is unused.
    assert (
        not _approver(server)
        .GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
        .approved_by
    )

    # Someone with the database swaps the held request: the bytes no longer hash to the
    # digest the server reports, and the CLI says so and refuses.
    other = pb.SignBatchRequest(
        request_id=request_id,
        items=[builders.evm_item(key, chain_id=11155111, value=str(2 * ETH), to="0x" + "66" * 20)],
    )
    with sqlite3.connect(_sqlite_path(server.env)) as db:
        db.execute(
            "UPDATE pending SET request = ? WHERE approval_id = ?",
            (other.SerializeToString(deterministic=True), held.approval_id),
        )
    shown = _custos(profile, "approvals", "show", held.approval_id)
    # The server refuses the row itself (its HSM tag no longer fits): nothing to show.
    assert shown.returncode == 1
    assert "DATA_LOSS" in shown.stderr
    swapped = _custos(
        profile,
        "approvals",
        "approve",
        held.approval_id,
        "--digest",
        batch.request_digest,
        "--code",
        code,
    )
    assert swapped.returncode == 1
    assert "DATA_LOSS" in swapped.stderr
    # And the server refuses it too, whatever client asks.
    with pytest.raises(grpc.RpcError) as info:
        _approver(server).Approve(
            policy_pb2.DecideRequest(
                approval_id=held.approval_id, request_digest=batch.request_digest, totp_code=code
            )
        )
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert "integrity" in info.value.details()


def test_cancel_during_activation_delay_and_unlock_are_officer_actions(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    own_server.start()
    officer = policy_pb2_grpc.PoliciesStub(own_server.channel("officer"))
    officer2 = policy_pb2_grpc.PoliciesStub(own_server.channel("officer2"))
    uris = {name: enroll_totp(own_server.channel, name) for name in ("officer", "officer2")}
    uris["approver"] = enroll_totp(own_server.channel, "approver")
    # Codes of steps s-1, s and s+1 are all valid during step s: start well inside one.
    while 30 - time.time() % 30 < 15:
        time.sleep(0.5)
    step = int(time.time()) // 30

    def code(name: str, offset: int) -> str:
        return str(pyotp.parse_uri(uris[name]).at((step + offset) * 30))

    # v2 (active at once under v1's zero delay) asks a one-hour delay of later versions.
    active = officer.GetPolicy(policy_pb2.GetPolicyRequest())
    v2_text = active.document_yaml.replace("version: 1", "version: 2").replace(
        "activation_delay: 0s", "activation_delay: 1h"
    )
    v2 = officer.ProposePolicy(policy_pb2.ProposePolicyRequest(document_yaml=v2_text))
    assert (
        officer2.ApprovePolicy(
            policy_pb2.ApprovePolicyRequest(version=2, hash=v2.hash, totp_code=code("officer2", -1))
        ).state
        == "active"
    )
    # v3 freezes every Sepolia payment; approved, it waits out its delay.
    v3_text = v2_text.replace("version: 2", "version: 3").replace(
        "rules:\n", "rules:\n  - id: freeze\n    match: {networks: [sepolia]}\n    action: deny\n"
    )
    v3 = officer.ProposePolicy(policy_pb2.ProposePolicyRequest(document_yaml=v3_text))
    approved = officer2.ApprovePolicy(
        policy_pb2.ApprovePolicyRequest(version=3, hash=v3.hash, totp_code=code("officer2", 0))
    )
    assert approved.state == "approved"
    with pytest.raises(grpc.RpcError) as info:  # cancelling needs a code
        officer.CancelPolicy(policy_pb2.CancelPolicyRequest(version=3))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    profile = _cli_profile(own_server.env, own_server.port, "officer", tmp_path)
    cancelled = _custos(profile, "policy", "cancel", "3", "--code", code("officer", -1))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "version 3: cancelled" in cancelled.stdout
    history = officer.ListPolicies(policy_pb2.ListPoliciesRequest()).versions
    assert [(v.version, v.state) for v in history] == [
        (1, "superseded"),
        (2, "active"),
        (3, "cancelled"),
    ]
    with pytest.raises(grpc.RpcError) as info:  # cancelled stays cancelled
        officer2.ApprovePolicy(
            policy_pb2.ApprovePolicyRequest(version=3, hash=v3.hash, totp_code=code("officer2", 1))
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Sepolia still signs under v2.
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="still-v2", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    signed = signer_pb2_grpc.SignerStub(own_server.channel("payments")).SignBatch(
        pb.SignBatchRequest(request_id="after-cancel", items=[builders.evm_item(key)])
    )
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == builders.address(key, "ethereum", "sepolia")

    # Lock the approver out; re-enrolling keeps the lock; the officer lifts it.
    approver = policy_pb2_grpc.PoliciesStub(own_server.channel("approver"))
    for _ in range(5):
        with pytest.raises(grpc.RpcError):
            approver.EnrollTotp(policy_pb2.EnrollTotpRequest(totp_code="000000"))
    uris["approver"] = enroll_totp(own_server.channel, "approver")
    with pytest.raises(grpc.RpcError) as info:
        approver.EnrollTotp(policy_pb2.EnrollTotpRequest(totp_code=code("approver", 0)))
    assert "locked" in info.value.details()
    unlocked = officer.UnlockTotp(
        policy_pb2.UnlockTotpRequest(
            subject=subject_string("approver"), totp_code=code("officer", 0)
        )
    )
    assert unlocked.subject == subject_string("approver")
    rotated = approver.EnrollTotp(policy_pb2.EnrollTotpRequest(totp_code=code("approver", 0)))
    assert rotated.otpauth_uri.startswith("otpauth://")
    log = own_server.verified_log()
    kinds = [json.loads(line)["kind"] for line in log if line.strip()]
    for kind in ("policy.cancelled", "totp.locked", "totp.unlocked", "totp.token_issued"):
        assert kind in kinds


def test_batch_held_under_v1_is_rejected_on_approval_once_v2_denies_its_key(
    own_server: ServerProcess,
) -> None:
    own_server.start()
    uris = {
        name: enroll_totp(own_server.channel, name)
        for name in ("officer", "officer2", "approver", "approver2")
    }
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="held-key", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    signer = signer_pb2_grpc.SignerStub(own_server.channel("payments"))
    holesky = builders.evm_item(key, chain_id=17000, nonce=1, value=str(ETH * 9 // 10))
    request = pb.SignBatchRequest(request_id="held-v1", items=[_large(key), holesky])
    held = signer.SignBatch(request)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    stream = policy_pb2_grpc.ApprovalsStub(own_server.channel("payments")).WatchEvents(
        policy_pb2.WatchEventsRequest()
    )
    assert next(stream).kind == "watching"
    approver = policy_pb2_grpc.ApprovalsStub(own_server.channel("approver"))
    approver2 = policy_pb2_grpc.ApprovalsStub(own_server.channel("approver2"))
    digest = approver.GetPending(
        policy_pb2.GetPendingRequest(approval_id=held.approval_id)
    ).request_digest
    now = int(time.time())
    first = approver.Approve(
        policy_pb2.DecideRequest(
            approval_id=held.approval_id,
            request_digest=digest,
            totp_code=pyotp.parse_uri(uris["approver"]).at(now),
        )
    )
    assert first.missing == ["approvers: 1 more"]

    officer = policy_pb2_grpc.PoliciesStub(own_server.channel("officer"))
    text = officer.GetPolicy(policy_pb2.GetPolicyRequest()).document_yaml
    v2_text = text.replace("version: 1", "version: 2").replace(
        "rules:\n",
        "rules:\n  - id: frozen\n    match: {keys: [held-key]}\n    action: deny\n",
    )
    v2 = officer.ProposePolicy(policy_pb2.ProposePolicyRequest(document_yaml=v2_text))
    activated = policy_pb2_grpc.PoliciesStub(own_server.channel("officer2")).ApprovePolicy(
        policy_pb2.ApprovePolicyRequest(
            version=2, hash=v2.hash, totp_code=pyotp.parse_uri(uris["officer2"]).at(now)
        )
    )
    assert activated.state == "active"

    second = approver2.Approve(
        policy_pb2.DecideRequest(
            approval_id=held.approval_id,
            request_digest=digest,
            totp_code=pyotp.parse_uri(uris["approver2"]).at(now),
        )
    )
    assert second.state == "rejected"
    fetched = signer.GetBatch(pb.GetBatchRequest(request_id="held-v1"))
    assert fetched.status == pb.BATCH_STATUS_REJECTED
    assert fetched.policy_version == v2.hash  # the version that decided, not v1
    assert not fetched.items
    kinds_seen = []
    for event in stream:
        kinds_seen.append(event.kind)
        if event.kind == "rejected":
            break
    stream.cancel()
    assert "signed" not in kinds_seen
    log = own_server.verified_log()
    events = [json.loads(line) for line in log if line.strip()]
    mine = [e for e in events if e["fields"].get("request_id") == "held-v1"]
    kinds = [e["kind"] for e in mine]
    assert "approval.rejected" in kinds
    assert "sign.signed" not in kinds
    released = [e for e in mine if e["kind"] == "budget.released"]
    assert len(released) == 1
    rejected = next(e for e in mine if e["kind"] == "approval.rejected")
    assert rejected["fields"]["policy_version"] == v2.hash
    assert rejected["fields"]["rule"] == "frozen"
