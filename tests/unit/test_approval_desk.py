"""The approval desk with a software signer: held batches decoded from their stored bytes.

Fast (no SoftHSM): tests/fast_env.py. The HSM-backed cases (policy changes,
tampered rows, races) are tests/integration/test_approved_batches.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.edge.errors import FailedPrecondition
from tests import builders
from tests.fast_env import APPROVERS, ETH, FastEnv, fast_env
from tests.second_impl import evm_sender


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FastEnv]:
    env = fast_env(tmp_path)
    yield env
    env.store.close()


def _hold(env: FastEnv, request_id: str) -> str:
    held = env.sign(request_id, builders.evm_item(env.key, value=str(2 * ETH)))
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    assert held.rules == ["large-sepolia-payments"]
    return held.approval_id


def _approve(env: FastEnv, approver: str, approval_id: str) -> str:
    row = env.desk.approve(
        APPROVERS[approver], approval_id, env.request_digest(approval_id), env.code(approver)
    )
    return row.state


def test_two_approvals_sign_the_held_batch_once(env: FastEnv) -> None:
    approval_id = _hold(env, "large")
    assert _approve(env, "approver", approval_id) == "pending"
    assert env.hsm.signed == []
    env.clock.now += timedelta(seconds=30)  # the second approver's code, a step later
    assert _approve(env, "approver2", approval_id) == "signed"

    signed = env.pipeline.get_batch(env.caller, "large")
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert signed.approval_id == approval_id
    assert evm_sender(signed.items[0].raw_tx) == builders.address(env.key, "ethereum", "sepolia")
    assert len(env.hsm.signed) == 1
    env.desk.sweep()  # a signed batch is not signed again
    assert len(env.hsm.signed) == 1
    kinds = env.kinds("large")
    assert kinds.index("approval.proven") < kinds.index("sign.signed")


def test_the_requester_cannot_approve_and_a_rejection_settles_the_batch(env: FastEnv) -> None:
    approval_id = _hold(env, "refused")
    digest = env.request_digest(approval_id)
    with pytest.raises(FailedPrecondition, match="own_request"):
        env.desk.approve(env.caller.subject, approval_id, digest, "")
    row = env.desk.reject(APPROVERS["approver"], approval_id, digest, env.code("approver"))
    assert row.state == "rejected"
    assert env.pipeline.get_batch(env.caller, "refused").status == pb.BATCH_STATUS_REJECTED
    assert env.hsm.signed == []


def test_stored_bytes_that_no_longer_decode_are_refused_as_tampering(env: FastEnv) -> None:
    approval_id = _hold(env, "junk")
    with sqlite3.connect(env.path) as db:
        db.execute(
            "UPDATE pending SET request = ? WHERE approval_id = ?", (b"\xff\xff", approval_id)
        )
    with pytest.raises(FailedPrecondition, match="integrity"):
        _approve(env, "approver", approval_id)
    assert env.hsm.signed == []
    assert "approval.integrity_failed" in env.kinds("junk")
