"""Fail closed: when the store cannot durably record, nothing signed leaves.

A real SQLite store and real HSM workers; the store is made to fail at one
chosen step (as a full disk or a lost database would), and a spy counts what
the HSM signed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from custos.audit.record import AuditEvent
from custos.common.secp256k1 import RecoverableSignature
from custos.hsm.keystore import SignRequest
from custos.hsm.pool import SigningPool
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.registry import ADAPTERS
from custos.signer.edge import requests as edge
from custos.signer.edge.auth import Identity
from custos.signer.edge.events import EventBus
from custos.signer.edge.services import key_message
from custos.signer.store.base import StoreUnavailable
from custos.signer.store.sqlite import SqliteStore
from custos.signer.usecases.keys import KeyManager
from custos.signer.usecases.pipeline import SigningPipeline
from custos.signer.usecases.policy_governor import PolicyGovernor
from tests import builders
from tests.conftest import SOFTHSM_LIBRARY, DevEnv
from tests.support import hsm_integrity

pytestmark = pytest.mark.integration

CALLER = Identity("CN=svc", frozenset({"service"}), ("*",))


class FailingStore(SqliteStore):
    """A real SQLite store whose `fail_on` method raises as an unreachable database would."""

    fail_on: str | None = None

    def _maybe_fail(self, name: str) -> None:
        if self.fail_on == name:
            raise StoreUnavailable(f"injected failure in {name}")

    def claim_batch(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail("claim_batch")
        return super().claim_batch(*args, **kwargs)

    def complete_batch(self, *args: Any, **kwargs: Any) -> None:
        self._maybe_fail("complete_batch")
        super().complete_batch(*args, **kwargs)


class SpySigner:
    def __init__(self, inner: SigningPool) -> None:
        self.inner = inner
        self.signed = 0

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        self.signed += len(requests)
        return self.inner.sign(requests)


@pytest.fixture(scope="module")
def pool(dev_env: DevEnv) -> Iterator[SigningPool]:
    p = SigningPool(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin(), workers=1)
    yield p
    p.close()


@pytest.fixture
def setup(
    tmp_path: Path, pool: SigningPool, dev_env: DevEnv
) -> tuple[FailingStore, SpySigner, SigningPipeline, Any]:
    store = FailingStore(tmp_path / "custos.db")
    spy = SpySigner(pool)
    integrity = hsm_integrity(pool)
    record = KeyManager(store, pool, integrity=integrity).create(
        f"fc-{tmp_path.name[-8:].lower().replace('_', '-')}", "testnet", "officer"
    )
    governor = PolicyGovernor(store, dev_env.dir / "policy.yaml", integrity=integrity)
    pipeline = SigningPipeline(
        store,
        spy,
        ADAPTERS,
        max_batch_items=10,
        lease_ms=60_000,
        governor=governor,
        events=EventBus(),
        integrity=integrity,
    )
    return store, spy, pipeline, key_message(record)


def _kinds(store: SqliteStore, request_id: str) -> list[str]:
    return [
        r.event.kind
        for r in store.audit_records(0, 10_000)
        if r.event.fields.get("request_id") == request_id
    ]


def test_no_signing_when_the_authorization_record_cannot_be_written(setup: Any) -> None:
    store, spy, pipeline, key = setup
    store.fail_on = "claim_batch"
    with pytest.raises(StoreUnavailable):
        pipeline.sign_batch(
            CALLER,
            edge.sign_batch(pb.SignBatchRequest(request_id="r1", items=[builders.evm_item(key)])),
        )
    assert spy.signed == 0
    assert store.get_batch(CALLER.subject, "r1") is None
    assert "sign.authorized" not in _kinds(store, "r1")


def test_no_signature_returned_when_the_result_cannot_be_stored(setup: Any) -> None:
    store, spy, pipeline, key = setup
    store.fail_on = "complete_batch"
    request = pb.SignBatchRequest(request_id="r2", items=[builders.evm_item(key)])
    with pytest.raises(StoreUnavailable):
        pipeline.sign_batch(CALLER, edge.sign_batch(request))
    assert spy.signed == 1  # signed inside the service, but never returned
    assert _kinds(store, "r2") == ["sign.authorized", "sign.failed"]
    # The claim was given back: once the store works, a retry signs and is recorded.
    store.fail_on = None
    response = pipeline.sign_batch(CALLER, edge.sign_batch(request))
    assert len(response.items) == 1
    assert _kinds(store, "r2") == [
        "sign.authorized",
        "sign.failed",
        "sign.authorized",
        "sign.signed",
    ]


def test_refusals_are_audited_without_a_batch_record(setup: Any) -> None:
    store, spy, pipeline, key = setup
    bad = builders.evm_item(key)
    bad.evm.to = "0x1234"
    with pytest.raises(Exception, match=r"items\[0\]\.evm\.to"):
        pipeline.sign_batch(
            CALLER, edge.sign_batch(pb.SignBatchRequest(request_id="r3", items=[bad]))
        )
    assert spy.signed == 0
    assert store.get_batch(CALLER.subject, "r3") is None
    assert _kinds(store, "r3") == ["sign.refused"]
    event: AuditEvent = next(
        r.event for r in store.audit_records(0, 10_000) if r.event.kind == "sign.refused"
    )
    assert event.fields["error"] == "InvalidRequest"
