"""The claim race through the signing pipeline, on every backend, with a real SoftHSM token.

An attempt is held inside the HSM call (a signer that waits for the test) while
its lease runs out; a retry of the same request id takes the id over and signs.
Then the first attempt is let go: whether it finishes or fails, it neither
overwrites nor releases the retry's work, one result is stored, and the budget
counts the batch once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from custos.common.secp256k1 import RecoverableSignature
from custos.hsm.errors import HsmUnavailable
from custos.hsm.keystore import Signer, SignRequest
from custos.hsm.pool import SigningPool
from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.registry import ADAPTERS
from custos.signer.edge import requests as edge
from custos.signer.edge.auth import Identity
from custos.signer.edge.errors import InProgress
from custos.signer.edge.events import EventBus
from custos.signer.edge.services import key_message
from custos.signer.store.base import Store, StoreUnavailable
from custos.signer.store.sql import now_ms
from custos.signer.usecases.keys import KeyManager
from custos.signer.usecases.pipeline import SigningPipeline
from custos.signer.usecases.policy_governor import PolicyGovernor
from tests import builders
from tests.conftest import SOFTHSM_LIBRARY, DevEnv
from tests.second_impl import evm_sender
from tests.store.conftest import Backend, PostgresBackend
from tests.store.helpers import Clock, LosesCommitReply, unclosed_authorizations
from tests.support import hsm_integrity

pytestmark = pytest.mark.integration

CALLER = Identity("CN=svc", frozenset({"service"}), ("*",))
LEASE_MS = 60_000
HOLESKY = 17000  # the development policy limits native ETH per key per hour on Holesky
WAIT = 120  # seconds: a bound for a hung test, never a timing assertion


class GatedSigner:
    """Signs for real; the first two calls wait inside the HSM step until the test lets each go."""

    def __init__(self, inner: SigningPool) -> None:
        self.inner = inner
        self.entered = {1: threading.Event(), 2: threading.Event()}
        self.go = {1: threading.Event(), 2: threading.Event()}
        self.fail_first = False
        self.calls = 0
        self._lock = threading.Lock()

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        with self._lock:
            self.calls += 1
            call = self.calls
        if call in self.go:
            self.entered[call].set()
            assert self.go[call].wait(WAIT), f"the test never let call {call} go"
            if call == 1 and self.fail_first:
                raise HsmUnavailable("injected: the first attempt's HSM call failed late")
        return self.inner.sign(requests)


class Attempt(threading.Thread):
    """One SignBatch call in its own thread; `outcome` is its response or its exception."""

    def __init__(self, pipeline: SigningPipeline, request: pb.SignBatchRequest) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.request = request
        self.outcome: pb.SignBatchResponse | BaseException | None = None

    def run(self) -> None:
        try:
            self.outcome = self.pipeline.sign_batch(CALLER, edge.sign_batch(self.request))
        except BaseException as exc:  # noqa: BLE001 - examined by the test
            self.outcome = exc

    def finish(self) -> pb.SignBatchResponse | BaseException | None:
        self.join(WAIT)
        assert not self.is_alive()
        return self.outcome


@pytest.fixture(scope="module")
def pool(dev_env: DevEnv) -> Iterator[SigningPool]:
    p = SigningPool(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin(), workers=1)
    yield p
    p.close()


@pytest.fixture
def signer(pool: SigningPool, backend: Backend) -> Iterator[GatedSigner]:
    """A gated signer; a failing test lets its held calls go before the stores close."""
    gated = GatedSigner(pool)
    yield gated
    for gate in gated.go.values():
        gate.set()


def _pipeline(
    store: Store, pool: SigningPool, signer: Signer, dev_env: DevEnv, key_id: str
) -> tuple[SigningPipeline, keys_pb2.Key]:
    """A pipeline over `store` under the development policy, and a fresh key in the token."""
    integrity = hsm_integrity(pool)
    record = KeyManager(store, pool, integrity=integrity).create(
        key_id.lower().replace("_", "-"), "testnet", "officer"
    )
    pipeline = SigningPipeline(
        store,
        signer,
        ADAPTERS,
        max_batch_items=10,
        lease_ms=LEASE_MS,
        governor=PolicyGovernor(store, dev_env.dir / "policy.yaml", integrity=integrity),
        events=EventBus(),
        integrity=integrity,
    )
    return pipeline, key_message(record)


def _check(item: pb.SignedItem) -> None:
    assert evm_sender(item.raw_tx) == item.address  # second implementation


@pytest.mark.parametrize("late", ["completes", "fails"])
@pytest.mark.parametrize("when", ["while-the-retry-signs", "after-the-retry-finished"])
def test_a_late_attempt_after_a_take_over_leaves_one_result(
    late: str,
    when: str,
    backend: Backend,
    clock: Clock,
    pool: SigningPool,
    signer: GatedSigner,
    dev_env: DevEnv,
    tmp_path: Path,
) -> None:
    clock.now = now_ms()  # budgets' windows are judged on the wall clock
    store: Store = backend.open(clock)
    signer.fail_first = late == "fails"
    pipeline, key = _pipeline(
        store, pool, signer, dev_env, f"race-{backend.name}-{late}-{tmp_path.name[-6:]}"
    )
    request = pb.SignBatchRequest(
        request_id="race-1", items=[builders.evm_item(key, chain_id=HOLESKY)]
    )

    first = Attempt(pipeline, request)
    first.start()
    assert signer.entered[1].wait(WAIT)
    clock.now += LEASE_MS + 1  # the first attempt is still signing when its lease runs out
    second = Attempt(pipeline, request)
    second.start()
    assert signer.entered[2].wait(WAIT)  # the retry took the id over and is signing
    if when == "while-the-retry-signs":
        signer.go[1].set()
        late_outcome = first.finish()
        signer.go[2].set()
        retry = second.finish()
    else:
        signer.go[2].set()
        retry = second.finish()
        signer.go[1].set()
        late_outcome = first.finish()
    assert signer.calls == 2  # both attempts signed inside the service...

    assert isinstance(retry, pb.SignBatchResponse), retry
    assert retry.status == pb.BATCH_STATUS_SIGNED
    assert not retry.replayed
    # ...but only the retry's signatures ever leave it.
    if late == "fails":
        assert isinstance(late_outcome, HsmUnavailable)  # the edge says UNAVAILABLE
    elif when == "while-the-retry-signs":
        assert isinstance(late_outcome, InProgress)  # nothing stored yet: retry later
    else:
        assert isinstance(late_outcome, pb.SignBatchResponse)
        assert late_outcome.replayed
        assert list(late_outcome.items) == list(retry.items)
    stored = store.get_batch(CALLER.subject, "race-1")
    assert stored is not None
    assert stored.done
    assert stored.result == retry.SerializeToString(deterministic=True)
    again = pipeline.sign_batch(CALLER, edge.sign_batch(request))
    assert again.replayed
    assert list(again.items) == list(retry.items)
    for item in retry.items:
        _check(item)

    records = [
        r for r in store.audit_records(0, 10_000) if r.event.fields.get("request_id") == "race-1"
    ]
    assert [r.event.kind for r in records] == [
        "sign.authorized",
        "sign.failed",  # the take-over closed the first attempt
        "sign.authorized",
        "sign.signed",
    ]
    assert records[1].event.fields["reason"] == "lease expired; taken over by a retry"
    assert unclosed_authorizations(store.audit_records(0, 10_000)) == []
    # The budget counts the batch once: what one authorization reserved, no more, no less.
    reserved = records[2].event.fields["reserved"]
    assert reserved == records[0].event.fields["reserved"]
    assert isinstance(reserved, list)
    assert reserved, "the development policy reserves budget for a Holesky transfer"
    for bucket, amount, count in reserved:
        assert backend.reserved(bucket) == (int(amount), count)


class ArmsLostCommit:
    """Signs for real, then makes the store lose the reply of its next COMMIT (the result's)."""

    def __init__(self, inner: SigningPool, store: LosesCommitReply) -> None:
        self.inner = inner
        self.store = store

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        signatures = self.inner.sign(requests)
        self.store.lose_next_commit = True
        return signatures


def test_a_result_whose_commit_outcome_was_unknown_keeps_its_budget(
    postgres_url: str,
    pg_schema: str,
    clock: Clock,
    pool: SigningPool,
    dev_env: DevEnv,
    tmp_path: Path,
) -> None:
    clock.now = now_ms()
    store = LosesCommitReply(postgres_url, schema=pg_schema, clock_ms=clock)
    try:
        pipeline, key = _pipeline(
            store, pool, ArmsLostCommit(pool, store), dev_env, f"unknown-{tmp_path.name[-6:]}"
        )
        request = pb.SignBatchRequest(
            request_id="unknown-1",
            items=[builders.evm_item(key, chain_id=HOLESKY)],
        )
        # The result was committed, but the pipeline heard only an error: it
        # releases under its token, which must leave the completed batch alone.
        with pytest.raises(StoreUnavailable, match="unknown"):
            pipeline.sign_batch(CALLER, edge.sign_batch(request))
        stored = store.get_batch(CALLER.subject, "unknown-1")
        assert stored is not None
        assert stored.done
        retry = pipeline.sign_batch(CALLER, edge.sign_batch(request))
        assert retry.replayed
        assert stored.result is not None
        assert list(retry.items) == list(pb.SignBatchResponse.FromString(stored.result).items)
        for item in retry.items:
            _check(item)
        records = [
            r
            for r in store.audit_records(0, 10_000)
            if r.event.fields.get("request_id") == "unknown-1"
        ]
        assert [r.event.kind for r in records] == ["sign.authorized", "sign.signed"]
        reserved = records[0].event.fields["reserved"]
        assert isinstance(reserved, list)
        assert reserved
        for bucket, amount, count in reserved:
            assert PostgresBackend(postgres_url, pg_schema).reserved(bucket) == (int(amount), count)
    finally:
        store.close()
