"""The SQLite store: keys, idempotent claims, leases and the audit chain."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from audit.record import AuditEvent
from audit.verify import verify_chain
from signer.store.base import ClaimOutcome, KeyAlreadyExists, KeyRecord, KeyState
from signer.store.sqlite import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> SqliteStore:
    return SqliteStore(tmp_path / "custos.db", clock_ms=clock)


def _event(kind: str = "test") -> AuditEvent:
    return AuditEvent(kind, "tester", {})


def _all_records(store: SqliteStore) -> list[bytes]:
    return [r.encode() for r in store.audit_records(0, 10_000)]


def test_key_registry_round_trip_with_audit(store: SqliteStore) -> None:
    key = KeyRecord("k1", b"\x04" + b"\x01" * 64, KeyState.ENABLED, "officer", 5)
    store.insert_key(key, _event("key.created"))
    assert store.get_key("k1") == key
    with pytest.raises(KeyAlreadyExists):
        store.insert_key(key, _event("key.created"))
    disabled = store.set_key_state("k1", KeyState.DISABLED, _event("key.disabled"))
    assert disabled is not None
    assert disabled.state is KeyState.DISABLED
    assert store.set_key_state("nope", KeyState.DISABLED, _event("key.disabled")) is None
    kinds = [r.event.kind for r in store.audit_records()]
    assert kinds == ["key.created", "key.disabled"]  # the failed insert left no record


def test_claim_replay_conflict_and_lease(store: SqliteStore, clock: Clock) -> None:
    digest = b"\x11" * 32
    assert store.claim_batch("svc", "r1", digest, 1000, [_event()]).outcome is ClaimOutcome.CLAIMED
    again = store.claim_batch("svc", "r1", digest, 1000, [_event()])
    assert again.outcome is ClaimOutcome.IN_PROGRESS
    other = store.claim_batch("svc", "r1", b"\x22" * 32, 1000, [_event()])
    assert other.outcome is ClaimOutcome.CONFLICT
    clock.now += 1001  # the first attempt crashed: its lease runs out
    assert store.claim_batch("svc", "r1", digest, 1000, [_event()]).outcome is ClaimOutcome.CLAIMED
    store.complete_batch("svc", "r1", b"result", [_event("sign.signed")])
    done = store.claim_batch("svc", "r1", digest, 1000, [_event()])
    assert (done.outcome, done.result) == (ClaimOutcome.DONE, b"result")
    # Request ids are scoped per caller.
    assert store.claim_batch("svc2", "r1", b"\x22" * 32, 1000, []).outcome is ClaimOutcome.CLAIMED
    # Claims refused for in-progress/conflict/done wrote no audit records.
    assert len(store.audit_records()) == 3


def test_release_lets_a_retry_claim(store: SqliteStore) -> None:
    digest = b"\x11" * 32
    store.claim_batch("svc", "r1", digest, 60_000, [_event()])
    store.release_batch("svc", "r1", [_event("sign.failed")])
    assert store.get_batch("svc", "r1") is None
    assert store.claim_batch("svc", "r1", digest, 60_000, []).outcome is ClaimOutcome.CLAIMED


def test_audit_chain_survives_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "custos.db"
    first = SqliteStore(path, clock_ms=clock)
    first.append_audit([_event("a"), _event("b")])
    first.close()
    second = SqliteStore(path, clock_ms=clock)
    second.append_audit([_event("c")])
    records = _all_records(second)
    assert len(records) == 3
    assert verify_chain(records) is None


def test_failed_transaction_leaves_nothing(store: SqliteStore) -> None:
    key = KeyRecord("k1", b"\x04" * 65, KeyState.ENABLED, "officer", 5)
    store.insert_key(key, _event())
    before = _all_records(store)
    with pytest.raises(KeyAlreadyExists):
        store.insert_key(key, _event())
    assert _all_records(store) == before


def test_group_commit_under_concurrency_keeps_one_chain(store: SqliteStore) -> None:
    import threading

    errors: list[BaseException] = []
    key = KeyRecord("dup", b"\x04" * 65, KeyState.ENABLED, "officer", 5)

    def writer(n: int) -> None:
        try:
            for i in range(25):
                store.append_audit([AuditEvent("w", f"t{n}", {"i": i})])
                if i == 10:
                    # Every thread tries; exactly one wins, the failures roll back alone.
                    with contextlib.suppress(KeyAlreadyExists):
                        store.insert_key(key, _event("key.created"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    records = _all_records(store)
    assert len(records) == 16 * 25 + 1
    assert verify_chain(records) is None
    assert sum(1 for r in store.audit_records(0, 10_000) if r.event.kind == "key.created") == 1
    assert store.audit_size() == len(records)
    assert len(store.leaf_hashes(store.audit_size())) == len(records)
