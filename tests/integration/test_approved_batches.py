"""Approved batches are proven, not trusted (issue 9 item 3, issue 8 item 2).

Real store (SQLite file) and the real HSM workers of the session's server,
with the approval desk, pipeline and governor wired as the server wires them
(grants from the configured identities), and a clock the test moves. Tests
that change the active policy run here, on their own store, so that the
session's server keeps its development policy.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from custos.common.secp256k1 import RecoverableSignature
from custos.hsm.errors import HsmUnavailable
from custos.hsm.keystore import SignRequest
from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.registry import ADAPTERS
from custos.signer.edge import requests as edge
from custos.signer.edge.auth import Authorizer, Identity
from custos.signer.edge.errors import (
    BudgetExceeded,
    FailedPrecondition,
    InvalidRequest,
    PermissionDenied,
)
from custos.signer.edge.events import EventBus
from custos.signer.edge.services import key_message
from custos.signer.store.sqlite import SqliteStore
from custos.signer.tools.devsetup import subject_string
from custos.signer.usecases.approval_desk import ApprovalDesk
from custos.signer.usecases.keys import KeyManager
from custos.signer.usecases.pipeline import SigningPipeline
from custos.signer.usecases.policy_governor import PolicyGovernor
from custos.signer.usecases.second_factor import SecondFactor
from tests import builders
from tests.conftest import RunningServer
from tests.second_impl import evm_sender
from tests.support import hsm_integrity

pytestmark = pytest.mark.integration

ETH = 10**18
PAYMENTS = subject_string("payments")
APPROVER, APPROVER2 = subject_string("approver"), subject_string("approver2")
OFFICER, OFFICER2 = subject_string("officer"), subject_string("officer2")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, 10, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class CountingSigner:
    """The HSM pool, counting the digests it signs: a second signature would show here."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.signed: list[bytes] = []
        self.lock = threading.Lock()
        self.down = False  # as if the HSM were unreachable

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        if self.down:
            raise HsmUnavailable("the test took the HSM away")
        with self.lock:
            self.signed.extend(r.digest for r in requests)
        return self.inner.sign(requests)  # type: ignore[no-any-return]


@dataclass
class Desk:
    clock: Clock
    store: SqliteStore
    path: Path
    governor: PolicyGovernor
    pipeline: SigningPipeline
    desk: ApprovalDesk
    factor: SecondFactor
    signer: CountingSigner
    inbox: Any
    key: keys_pb2.Key
    caller: Identity
    uris: dict[str, str]
    policy_text: str

    def code(self, name: str, steps_ahead: int = 0) -> str:
        return str(
            pyotp.parse_uri(self.uris[name]).at(
                self.clock.now + timedelta(seconds=30 * steps_ahead)
            )
        )

    def hold(self, request_id: str, extra: Sequence[pb.SignItem] = ()) -> pb.SignBatchResponse:
        large = builders.evm_item(self.key, chain_id=11155111, value=str(2 * ETH))
        request = pb.SignBatchRequest(request_id=request_id, items=[large, *extra])
        held = self.pipeline.sign_batch(self.caller, edge.sign_batch(request))
        assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
        return held

    def holesky(self, value: int, nonce: int) -> pb.SignItem:
        return builders.evm_item(self.key, chain_id=17000, nonce=nonce, value=str(value))

    def digest(self, approval_id: str) -> str:
        row = self.store.get_pending(approval_id)
        assert row is not None
        return str(json.loads(row.record)["pending"]["request_digest"])

    def activate(self, text: str) -> str:
        """Make `text` the active version the way officers do (TOTP checked by the RPC layer)."""
        proposed = self.governor.propose(OFFICER, text)
        self.governor.approve(OFFICER2, proposed.version, proposed.hash, totp_verified=True)
        active = self.governor.active()
        assert active.version == proposed.version
        return active.hash

    def kinds(self, request_id: str) -> list[str]:
        return [
            r.event.kind
            for r in self.store.audit_records(0, 10**6)
            if r.event.fields.get("request_id") == request_id
        ]

    def sql(self, statement: str, params: tuple[Any, ...]) -> None:
        """What someone with the database, but neither HSM nor certificate, can do."""
        with sqlite3.connect(self.path) as db:
            db.execute(statement, params)

    def events(self) -> list[str]:
        return [self.inbox.get_nowait().kind for _ in range(self.inbox.qsize())]


@pytest.fixture
def env(server: RunningServer, tmp_path: Path) -> Iterator[Desk]:
    pool = server.server.pool  # type: ignore[attr-defined]
    clock = Clock()
    path = tmp_path / "custos.db"
    store = SqliteStore(path, clock_ms=lambda: int(clock.now.timestamp() * 1000))
    policy_text = (server.env.dir / "policy.yaml").read_text()
    # No RowGuard on this store: these tests prove the desk's own checks (the second
    # layer); tests/store/test_row_guard.py and test_hostile_db.py the tags (the first).
    integrity = hsm_integrity(pool)
    governor = PolicyGovernor(store, server.env.dir / "policy.yaml", clock, integrity=integrity)
    events = EventBus()
    inbox = events.subscribe()
    signer = CountingSigner(pool)
    authorizer = Authorizer(server.env.config().identities)
    pipeline = SigningPipeline(
        store,
        signer,  # type: ignore[arg-type]
        ADAPTERS,
        max_batch_items=10,
        lease_ms=60_000,
        governor=governor,
        events=events,
        integrity=integrity,
        clock=clock,
        identities=authorizer.identity_of,
    )
    factor = SecondFactor(store, pool, clock)
    desk = ApprovalDesk(
        store, pipeline, governor=governor, second_factor=factor, events=events, clock=clock
    )
    uris = {}
    for name, subject in (("approver", APPROVER), ("approver2", APPROVER2)):
        token = factor.issue_token(OFFICER, subject).token
        uris[name] = factor.enroll(subject, token=token)
    key = key_message(
        KeyManager(store, pool, integrity=integrity).create(
            f"ab-{id(clock) % 10**8}", "testnet", "officer"
        )
    )
    caller = authorizer.identity_of(PAYMENTS)
    assert caller is not None
    yield Desk(
        clock,
        store,
        path,
        governor,
        pipeline,
        desk,
        factor,
        signer,
        inbox,
        key,
        caller,
        uris,
        policy_text,
    )
    store.close()


def _approve(env: Desk, name: str, approval_id: str, steps_ahead: int = 0) -> Any:
    subject = {"approver": APPROVER, "approver2": APPROVER2}[name]
    return env.desk.approve(
        subject, approval_id, env.digest(approval_id), env.code(name, steps_ahead)
    )


def _deny_key(text: str, key_id: str, version: int = 2) -> str:
    rule = (
        f"  - id: frozen-key\n    match: {{keys: [{key_id}]}}\n    action: deny\n"
        "    reason: key frozen\n"
    )
    return text.replace("version: 1", f"version: {version}").replace("rules:\n", "rules:\n" + rule)


def test_held_under_v1_then_v2_denies_the_key_approval_rejects_it(env: Desk) -> None:
    held = env.hold("frozen", [env.holesky(ETH * 9 // 10, 0)])
    # The held batch reserved 0.9 ETH of the Holesky hourly budget.
    with pytest.raises(BudgetExceeded):
        env.pipeline.sign_batch(
            env.caller,
            edge.sign_batch(pb.SignBatchRequest(request_id="r1", items=[env.holesky(ETH // 2, 1)])),
        )
    _approve(env, "approver", held.approval_id)
    v2 = env.activate(_deny_key(env.policy_text, env.key.key_id))

    row = _approve(env, "approver2", held.approval_id)
    assert row.state == "rejected"
    assert env.signer.signed == []  # nothing reached the HSM
    replay = env.pipeline.get_batch(env.caller, "frozen")
    assert replay.status == pb.BATCH_STATUS_REJECTED
    assert replay.policy_version == v2  # the version that really decided
    kinds = env.kinds("frozen")
    assert "approval.rejected" in kinds
    assert "budget.released" in kinds
    assert "sign.signed" not in kinds
    assert "rejected" in env.events()
    # Its budget is back (v2 freezes the key, so look at the reservation itself).
    with sqlite3.connect(env.path) as db:
        (released,) = db.execute(
            "SELECT MIN(released) FROM reservations WHERE request_id = 'frozen'"
        ).fetchone()
    assert released == 1


def test_v2_needing_fewer_approvals_applies_and_names_v2(env: Desk) -> None:
    held = env.hold("fewer")
    text = env.policy_text.replace("version: 1", "version: 2").replace(
        "approval: {approvals: 2,", "approval: {approvals: 1,"
    )
    v2 = env.activate(text)
    row = _approve(env, "approver", held.approval_id)
    assert row.state == "signed"
    signed = env.pipeline.get_batch(env.caller, "fewer")
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert signed.policy_version == v2
    assert evm_sender(signed.items[0].raw_tx) == builders.address(env.key, "ethereum", "sepolia")
    assert "approval.requirement_changed" in env.kinds("fewer")


def test_hand_edited_row_marked_approved_is_not_signed_by_the_sweep(env: Desk) -> None:
    held = env.hold("forged")
    row = env.store.get_pending(held.approval_id)
    assert row is not None
    record = json.loads(row.record)
    record["pending"]["state"] = "approved"
    # Approvals that never happened: by the requester, twice by one approver, by a stranger.
    record["pending"]["approvals"] = [
        {"approver": PAYMENTS, "groups": ["approvers"], "approved_at": env.clock.now.isoformat()},
        {"approver": APPROVER, "groups": ["approvers"], "approved_at": env.clock.now.isoformat()},
        {"approver": APPROVER, "groups": ["approvers"], "approved_at": env.clock.now.isoformat()},
        {
            "approver": "CN=mallory",
            "groups": ["approvers"],
            "approved_at": env.clock.now.isoformat(),
        },
    ]
    env.sql(
        "UPDATE pending SET state = 'approved', record = ? WHERE approval_id = ?",
        (json.dumps(record), held.approval_id),
    )
    env.desk.sweep()
    assert env.signer.signed == []
    after = env.store.get_pending(held.approval_id)
    assert after is not None
    assert after.state == "pending"
    assert "sign.signed" not in env.kinds("forged")
    assert "approval.requirement_changed" in env.kinds("forged")
    assert env.pipeline.get_batch(env.caller, "forged").status == pb.BATCH_STATUS_PENDING_APPROVAL


def _approved_unsigned(env: Desk, request_id: str, extra: Sequence[pb.SignItem] = ()) -> str:
    """A batch with its full quorum whose signing failed (the HSM away for a moment)."""
    held = env.hold(request_id, extra)
    _approve(env, "approver", held.approval_id)
    env.signer.down = True
    row = _approve(env, "approver2", held.approval_id)
    env.signer.down = False
    assert row.state == "approved"
    assert "sign.abandoned" in env.kinds(request_id)
    return held.approval_id


def test_swapped_request_after_approval_is_refused(env: Desk) -> None:
    approval_id = _approved_unsigned(env, "swapped")
    other = pb.SignBatchRequest(
        request_id="swapped",
        items=[
            builders.evm_item(env.key, chain_id=11155111, value=str(2 * ETH), to="0x" + "66" * 20)
        ],
    )
    env.sql(
        "UPDATE pending SET request = ? WHERE approval_id = ?",
        (other.SerializeToString(deterministic=True), approval_id),
    )
    env.desk.sweep()
    assert env.signer.signed == []
    row = env.store.get_pending(approval_id)
    assert row is not None
    assert row.state == "rejected"
    kinds = env.kinds("swapped")
    assert "approval.integrity_failed" in kinds
    assert "sign.signed" not in kinds


def test_swapped_request_and_digest_still_refused_by_the_claimed_payload(env: Desk) -> None:
    from custos.policies import approvals

    approval_id = _approved_unsigned(env, "swapped2")
    other = pb.SignBatchRequest(
        request_id="swapped2",
        items=[
            builders.evm_item(env.key, chain_id=11155111, value=str(2 * ETH), to="0x" + "66" * 20)
        ],
    )
    data = other.SerializeToString(deterministic=True)
    row = env.store.get_pending(approval_id)
    assert row is not None
    record = json.loads(row.record)
    record["pending"]["request_digest"] = approvals.request_digest(PAYMENTS, "swapped2", data).hex()
    env.sql(
        "UPDATE pending SET request = ?, record = ? WHERE approval_id = ?",
        (data, json.dumps(record), approval_id),
    )
    env.desk.sweep()
    assert env.signer.signed == []
    assert "sign.signed" not in env.kinds("swapped2")


def test_approve_racing_the_sweep_signs_once(env: Desk) -> None:
    approval_id = _approved_unsigned(env, "race")
    barrier = threading.Barrier(2, timeout=30)
    real = env.pipeline.rejudge

    def rejudge(caller: str, request: Any) -> Any:
        held = real(caller, request)
        barrier.wait()  # both attempts have proven the batch before either takes it
        return held

    env.pipeline.rejudge = rejudge  # type: ignore[method-assign]
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(env.desk.sign(approval_id))),
        threading.Thread(target=lambda: results.append(env.desk.sweep())),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(env.signer.signed) == 1  # one HSM signature
    assert env.kinds("race").count("sign.signed") == 1
    signed = env.pipeline.get_batch(env.caller, "race")
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == builders.address(env.key, "ethereum", "sepolia")
    assert env.events().count("signed") == 1


def test_approved_batch_not_signed_in_time_expires_and_releases_budget(env: Desk) -> None:
    _approved_unsigned(env, "late", [env.holesky(ETH * 9 // 10, 0)])
    env.clock.now += timedelta(minutes=11)
    env.desk.sweep()
    assert env.signer.signed == []
    assert env.pipeline.get_batch(env.caller, "late").status == pb.BATCH_STATUS_EXPIRED
    signed = env.pipeline.sign_batch(
        env.caller,
        edge.sign_batch(pb.SignBatchRequest(request_id="after", items=[env.holesky(ETH // 2, 1)])),
    )
    assert signed.status == pb.BATCH_STATUS_SIGNED  # the 0.9 ETH came back


def test_a_refused_approval_does_not_use_the_code(env: Desk) -> None:
    held = env.hold("burn")
    code = env.code("approver")
    with pytest.raises(FailedPrecondition, match="digest"):
        env.desk.approve(APPROVER, held.approval_id, "00" * 32, code)
    with pytest.raises(FailedPrecondition, match="own_request"):
        env.desk.approve(PAYMENTS, held.approval_id, env.digest(held.approval_id), code)
    with pytest.raises(FailedPrecondition, match="not_in_group"):
        env.desk.approve(OFFICER, held.approval_id, env.digest(held.approval_id), code)
    with pytest.raises(InvalidRequest, match="code required"):
        env.desk.approve(APPROVER, held.approval_id, env.digest(held.approval_id), "")
    # The same code still works: none of the refusals above consumed it.
    row = env.desk.approve(APPROVER, held.approval_id, env.digest(held.approval_id), code)
    assert row.approval_id == held.approval_id
    next_code = env.code("approver", 1)
    with pytest.raises(FailedPrecondition, match="already_approved"):
        env.desk.approve(APPROVER, held.approval_id, env.digest(held.approval_id), next_code)
    env.factor.check(APPROVER, next_code)  # still unused
    assert "totp.failed" not in [r.event.kind for r in env.store.audit_records(0, 10**6)]


def test_lockout_survives_reenrolling_and_only_an_officer_lifts_it(env: Desk) -> None:
    for _ in range(5):
        with pytest.raises(PermissionDenied):
            env.factor.check(APPROVER2, "000000")
    with pytest.raises(PermissionDenied, match="locked"):
        env.factor.check(APPROVER2, env.code("approver2"))
    token = env.factor.issue_token(OFFICER, APPROVER2).token
    env.uris["approver2"] = env.factor.enroll(APPROVER2, token=token)
    with pytest.raises(PermissionDenied, match="locked"):
        env.factor.check(APPROVER2, env.code("approver2"))
    with pytest.raises(PermissionDenied):  # nobody unlocks itself
        env.factor.unlock(APPROVER2, APPROVER2)
    env.factor.unlock(OFFICER, APPROVER2)
    env.factor.check(APPROVER2, env.code("approver2"))
    kinds = [r.event.kind for r in env.store.audit_records(0, 10**6)]
    assert "totp.locked" in kinds
    assert "totp.unlocked" in kinds


def test_enrollment_needs_a_token_for_the_subject_used_once(env: Desk) -> None:
    with pytest.raises(FailedPrecondition, match="enrollment_token"):
        env.factor.enroll(OFFICER)  # a certificate alone does not enroll
    token = env.factor.issue_token(OFFICER2, OFFICER).token
    with pytest.raises(PermissionDenied):
        env.factor.enroll(APPROVER, token=token)  # bound to its subject
    uri = env.factor.enroll(OFFICER, token=token)
    assert uri.startswith("otpauth://")
    with pytest.raises(PermissionDenied):
        env.factor.enroll(OFFICER, token=token)  # used once
    with pytest.raises(PermissionDenied):
        env.factor.issue_token(OFFICER, OFFICER)  # not to itself
    # Rotating with the current code works without an officer.
    code = str(pyotp.parse_uri(uri).at(env.clock.now))
    assert env.factor.enroll(OFFICER, code=code) != uri
    dump = "\n".join(sqlite3.connect(env.path).iterdump())
    assert token not in dump
    assert pyotp.parse_uri(uri).secret not in dump


def test_a_late_signing_attempt_cannot_overwrite_the_one_that_took_over(env: Desk) -> None:
    approval_id = _approved_unsigned(env, "fenced")
    inside, release = threading.Event(), threading.Event()
    real = env.pipeline.sign_approved

    def slow(held: Any, approval: str) -> Any:
        result = real(held, approval)
        if threading.current_thread().name == "first":
            inside.set()
            assert release.wait(30)  # the first attempt stalls after signing
        return result

    env.pipeline.sign_approved = slow  # type: ignore[method-assign]
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(env.desk.sign(approval_id)), name="first")
    thread.start()
    assert inside.wait(30)
    # Its lease runs out: the sweep gives the batch back and the next attempt signs it.
    env.clock.now += timedelta(minutes=3)
    env.desk.sweep()  # signing -> approved (lease expired)
    env.desk.sweep()  # approved -> signed by this attempt
    taken_over = env.pipeline.get_batch(env.caller, "fenced")
    assert taken_over.status == pb.BATCH_STATUS_SIGNED
    release.set()
    thread.join()
    assert first == [None]  # the late attempt stored nothing
    final = env.pipeline.get_batch(env.caller, "fenced")
    assert final.items[0].raw_tx == taken_over.items[0].raw_tx  # one stored result
    assert env.kinds("fenced").count("sign.signed") == 1
    assert evm_sender(final.items[0].raw_tx) == builders.address(env.key, "ethereum", "sepolia")


def test_signed_only_with_the_callers_own_grants(env: Desk) -> None:
    _approved_unsigned(env, "grants")
    # The configuration now grants the caller other keys only (e.g. after a restart).
    narrowed = Identity(PAYMENTS, frozenset({"service"}), ("other-*",))
    env.pipeline._identities = {PAYMENTS: narrowed}.get  # type: ignore[attr-defined]
    env.desk.sweep()
    assert env.signer.signed == []
    assert env.pipeline.get_batch(env.caller, "grants").status == pb.BATCH_STATUS_REJECTED
    rejected = [
        r.event
        for r in env.store.audit_records(0, 10**6)
        if r.event.kind == "approval.rejected" and r.event.fields.get("request_id") == "grants"
    ]
    assert rejected[0].fields["error"] == "PermissionDenied"
    assert "not granted" in rejected[0].fields["message"]


def test_a_held_batch_is_charged_to_the_limits_of_the_policy_that_signs_it(env: Desk) -> None:
    # Held under v1 with 0.9 ETH on Holesky, reserved in v1's bucket.
    held = env.hold("rebudget", [env.holesky(ETH * 9 // 10, 0)])
    _approve(env, "approver", held.approval_id)
    # v2 replaces the limit with one of its own (a new bucket, empty), and another
    # batch spends 0.5 ETH of it before the second approval arrives.
    v2 = env.activate(
        env.policy_text.replace("version: 1", "version: 2").replace(
            "id: holesky-hourly-per-key", "id: holesky-hourly-v2"
        )
    )
    spent = env.pipeline.sign_batch(
        env.caller,
        edge.sign_batch(
            pb.SignBatchRequest(request_id="meanwhile", items=[env.holesky(ETH // 2, 1)])
        ),
    )
    assert spent.status == pb.BATCH_STATUS_SIGNED
    signed_before = list(env.signer.signed)
    # 0.5 + 0.9 ETH would overfill v2's 1 ETH: the held batch is refused, not signed.
    row = _approve(env, "approver2", held.approval_id)
    assert row.state == "rejected"
    assert env.signer.signed == signed_before
    replay = env.pipeline.get_batch(env.caller, "rebudget")
    assert replay.status == pb.BATCH_STATUS_REJECTED
    assert replay.policy_version == v2
    rejected = [
        r.event.fields
        for r in env.store.audit_records(0, 10**6)
        if r.event.kind == "approval.rejected" and r.event.fields.get("request_id") == "rebudget"
    ]
    assert rejected
    assert rejected[0]["limit"] == "holesky-hourly-v2"
    assert "sign.signed" not in env.kinds("rebudget")
    # Its reservations are all released: 0.25 ETH more (and its fee) fits v2's bucket.
    with sqlite3.connect(env.path) as db:
        (unreleased,) = db.execute(
            "SELECT COUNT(*) FROM reservations WHERE request_id = 'rebudget' AND NOT released"
        ).fetchone()
    assert unreleased == 0
    again = env.pipeline.sign_batch(
        env.caller,
        edge.sign_batch(
            pb.SignBatchRequest(request_id="after-reject", items=[env.holesky(ETH // 4, 2)])
        ),
    )
    assert again.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(again.items[0].raw_tx) == builders.address(env.key, "ethereum", "holesky")
