"""The signing pipeline and approval desk wired as the server wires them, without SoftHSM.

A real SqliteStore (a file under the test's tmp_path), the development policy,
state authentication and TOTP sealing in memory, and keys held by
tests.support.SoftwareHsm: fast enough for unit tests of the use cases. The
integration tests (tests/integration/test_approved_batches.py and others) run
the same objects against the HSM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp

from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.registry import make_adapters
from custos.signer.edge import requests
from custos.signer.edge.auth import Authorizer, Identity
from custos.signer.edge.config import IdentityConfig
from custos.signer.edge.events import EventBus
from custos.signer.edge.services import key_message
from custos.signer.store.sqlite import SqliteStore
from custos.signer.tools.devsetup import DEV_POLICY, subject_string
from custos.signer.usecases.approval_desk import ApprovalDesk
from custos.signer.usecases.keys import KeyManager
from custos.signer.usecases.pipeline import SigningPipeline
from custos.signer.usecases.policy_governor import PolicyGovernor
from custos.signer.usecases.second_factor import SecondFactor
from tests.support import SoftwareHsm, soft_integrity

ETH = 10**18
PAYMENTS = subject_string("payments")
APPROVERS = {"approver": subject_string("approver"), "approver2": subject_string("approver2")}
OFFICER = subject_string("officer")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, 10, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()

    def ms(self) -> int:
        return int(self.now.timestamp() * 1000)


@dataclass
class FastEnv:
    clock: Clock
    store: SqliteStore
    path: Path  # the store's file, for tests that write it as an attacker would
    hsm: SoftwareHsm
    pipeline: SigningPipeline
    desk: ApprovalDesk
    caller: Identity
    key: keys_pb2.Key  # a testnet key granted to the caller
    uris: dict[str, str]  # the approvers' TOTP secrets

    def sign(self, request_id: str, *items: pb.SignItem) -> pb.SignBatchResponse:
        """One SignBatch through the edge's decoding and the pipeline."""
        request = pb.SignBatchRequest(request_id=request_id, items=items)
        return self.pipeline.sign_batch(self.caller, requests.sign_batch(request))

    def code(self, approver: str) -> str:
        return str(pyotp.parse_uri(self.uris[approver]).at(self.clock.now))

    def request_digest(self, approval_id: str) -> str:
        row = self.store.get_pending(approval_id)
        assert row is not None
        return str(json.loads(row.record)["pending"]["request_digest"])

    def kinds(self, request_id: str) -> list[str]:
        return [
            r.event.kind
            for r in self.store.audit_records(0, 10**6)
            if r.event.fields.get("request_id") == request_id
        ]


def fast_env(directory: Path) -> FastEnv:
    clock = Clock()
    path = directory / "custos.db"
    store = SqliteStore(path, clock_ms=clock.ms)
    integrity = soft_integrity()
    policy = directory / "policy.yaml"
    names = ("officer", "officer2", "approver", "approver2")
    policy.write_text(DEV_POLICY.format(**{name: subject_string(name) for name in names}))
    governor = PolicyGovernor(store, policy, clock, integrity=integrity)
    authorizer = Authorizer([IdentityConfig(subject=PAYMENTS, roles=["service"], keys=["fast-*"])])
    hsm = SoftwareHsm()
    events = EventBus()
    pipeline = SigningPipeline(
        store,
        hsm,
        make_adapters(clock=clock.seconds),
        max_batch_items=10,
        lease_ms=60_000,
        governor=governor,
        events=events,
        integrity=integrity,
        clock=clock,
        identities=authorizer.identity_of,
    )
    factor = SecondFactor(store, hsm, clock)
    desk = ApprovalDesk(
        store,
        pipeline,
        governor=governor,
        second_factor=factor,
        events=events,
        clock=clock,
        sign_within=timedelta(minutes=10),
    )
    uris = {
        name: factor.enroll(subject, token=factor.issue_token(OFFICER, subject).token)
        for name, subject in APPROVERS.items()
    }
    record = KeyManager(store, hsm, integrity=integrity).create("fast-1", "testnet", "officer")
    caller = authorizer.identity_of(PAYMENTS)
    assert caller is not None
    return FastEnv(clock, store, path, hsm, pipeline, desk, caller, key_message(record), uris)
