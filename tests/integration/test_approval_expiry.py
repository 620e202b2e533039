"""Expired approvals give their budget back (real store and HSM workers, a clock we move)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custos.hsm.pool import SigningPool
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.registry import ADAPTERS
from custos.signer.edge import requests as edge
from custos.signer.edge.auth import Identity
from custos.signer.edge.errors import BudgetExceeded
from custos.signer.edge.events import EventBus
from custos.signer.edge.services import key_message
from custos.signer.store.sqlite import SqliteStore
from custos.signer.usecases.approval_desk import ApprovalDesk
from custos.signer.usecases.authenticity import StoreGuard
from custos.signer.usecases.keys import KeyManager
from custos.signer.usecases.pipeline import SigningPipeline
from custos.signer.usecases.policy_governor import PolicyGovernor
from custos.signer.usecases.second_factor import SecondFactor
from tests import builders
from tests.conftest import SOFTHSM_LIBRARY, DevEnv
from tests.support import hsm_integrity

pytestmark = pytest.mark.integration

ETH = 10**18
CALLER = Identity("CN=payments,O=Custos Dev", frozenset({"service"}), ("*",))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def pool(dev_env: DevEnv) -> Iterator[SigningPool]:
    p = SigningPool(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin(), workers=1)
    yield p
    p.close()


def test_expiry_releases_the_budget_and_settles_the_request(
    tmp_path: Path, pool: SigningPool, dev_env: DevEnv
) -> None:
    clock = Clock()
    store = SqliteStore(tmp_path / "custos.db", clock_ms=lambda: int(clock.now.timestamp() * 1000))
    integrity = hsm_integrity(pool)
    store.guard_rows(StoreGuard(integrity))
    governor = PolicyGovernor(store, dev_env.dir / "policy.yaml", clock, integrity=integrity)
    events = EventBus()
    inbox = events.subscribe()
    pipeline = SigningPipeline(
        store,
        pool,
        ADAPTERS,
        max_batch_items=10,
        lease_ms=60_000,
        governor=governor,
        events=events,
        integrity=integrity,
        clock=clock,
        identities={CALLER.subject: CALLER}.get,
    )
    desk = ApprovalDesk(
        store,
        pipeline,
        governor=governor,
        second_factor=SecondFactor(store, pool, clock),
        events=events,
        clock=clock,
    )
    key = key_message(
        KeyManager(store, pool, integrity=integrity).create("expiry-key", "testnet", "officer")
    )

    def holesky(value: int, nonce: int) -> pb.SignItem:
        return builders.evm_item(key, chain_id=17000, nonce=nonce, value=str(value))

    large = builders.evm_item(key, chain_id=11155111, value=str(2 * ETH))
    held_request = pb.SignBatchRequest(request_id="held", items=[large, holesky(ETH * 9 // 10, 0)])
    held = pipeline.sign_batch(CALLER, edge.sign_batch(held_request))
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    # The held batch reserved 0.9 ETH of the Holesky hourly budget.
    with pytest.raises(BudgetExceeded):
        pipeline.sign_batch(
            CALLER,
            edge.sign_batch(pb.SignBatchRequest(request_id="r1", items=[holesky(ETH // 2, 1)])),
        )

    clock.now += timedelta(minutes=29)
    desk.sweep()
    assert store.get_pending(held.approval_id).state == "pending"  # type: ignore[union-attr]
    clock.now += timedelta(minutes=2)  # past its 30 minutes
    desk.sweep()
    assert store.get_pending(held.approval_id).state == "expired"  # type: ignore[union-attr]
    kinds = [inbox.get_nowait().kind for _ in range(inbox.qsize())]
    assert kinds == ["pending", "expired"]

    # Its budget is back, and the request id answers with the expiry.
    signed = pipeline.sign_batch(
        CALLER, edge.sign_batch(pb.SignBatchRequest(request_id="r2", items=[holesky(ETH // 2, 1)]))
    )
    assert signed.status == pb.BATCH_STATUS_SIGNED
    replay = pipeline.sign_batch(CALLER, edge.sign_batch(held_request))
    assert replay.status == pb.BATCH_STATUS_EXPIRED
    kinds_logged = [r.event.kind for r in store.audit_records(0, 1000)]
    assert "approval.expired" in kinds_logged
    assert "budget.released" in kinds_logged
