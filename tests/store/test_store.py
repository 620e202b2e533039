"""The store contract, run against every backend: keys, claims, leases, budgets, audit, policy."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable

import pytest

from custos.audit.record import AuditEvent
from custos.audit.verify import verify_chain
from custos.policies.velocity import Spent
from custos.signer.store.base import (
    ClaimOutcome,
    KeyAlreadyExists,
    KeyRecord,
    KeyState,
    Store,
    StoredCheckpoint,
    VersionExists,
)
from custos.signer.store.policy_tables import PendingChange, PendingRow, PolicyRow
from tests.store.conftest import Backend
from tests.store.helpers import Clock, budget, event, pending_row

DIGEST = b"\x11" * 32
OTHER = b"\x22" * 32


def _all_records(store: Store) -> list[bytes]:
    return [r.encode() for r in store.audit_records(0, 10_000)]


def _kinds(store: Store) -> list[str]:
    return [r.event.kind for r in store.audit_records(0, 10_000)]


def _run_threads(count: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# -- keys ---------------------------------------------------------------------


def test_key_registry_round_trip_with_audit(store: Store) -> None:
    key = KeyRecord("k1", b"\x04" + b"\x01" * 64, KeyState.ENABLED, "officer", 5)
    store.insert_key(key, event("key.created"))
    assert store.get_key("k1") == key
    with pytest.raises(KeyAlreadyExists):
        store.insert_key(key, event("key.created"))
    disabled = dataclasses.replace(key, state=KeyState.DISABLED, version=2, mac=b"t" * 32)
    assert store.replace_key(disabled, event("key.disabled"))
    assert store.get_key("k1") == disabled
    # Compare-and-set on the version: a successor of version 1 no longer fits.
    assert not store.replace_key(dataclasses.replace(disabled, mac=b"u" * 32), event("x"))
    missing = dataclasses.replace(disabled, key_id="nope")
    assert not store.replace_key(missing, event("key.disabled"))
    assert store.get_key("k1") == disabled
    # The failed insert, the stale successor and the missing key left no record.
    assert _kinds(store) == ["key.created", "key.disabled"]


def test_get_keys_and_list_keys(store: Store) -> None:
    for key_id in ("b", "a", "c"):
        store.insert_key(
            KeyRecord(key_id, b"\x04" * 65, KeyState.ENABLED, "officer", 7), event("key.created")
        )
    assert [k.key_id for k in store.list_keys()] == ["a", "b", "c"]
    found = store.get_keys(["c", "a", "missing", "a"])
    assert sorted(found) == ["a", "c"]
    assert found["a"].public_key == b"\x04" * 65
    assert store.get_key("missing") is None
    assert store.get_keys([]) == {}


def test_failed_transaction_leaves_nothing(store: Store) -> None:
    key = KeyRecord("k1", b"\x04" * 65, KeyState.ENABLED, "officer", 5)
    store.insert_key(key, event())
    before = _all_records(store)
    with pytest.raises(KeyAlreadyExists):
        store.insert_key(key, event())
    assert _all_records(store) == before


def test_insert_keys_writes_all_or_nothing(store: Store) -> None:
    """A restore's registration: a taken id anywhere in the batch writes no key and no record."""
    taken = KeyRecord("k2", b"\x04" * 65, KeyState.ENABLED, "officer", 5)
    store.insert_key(taken, event("key.created"))
    batch = [
        KeyRecord(key_id, b"\x04" * 65, KeyState.ENABLED, "operator", 6) for key_id in ("k1", "k2")
    ]
    with pytest.raises(KeyAlreadyExists):
        store.insert_keys(batch, [event("key.restored"), event("key.restored")])
    assert [k.key_id for k in store.list_keys()] == ["k2"]
    assert _kinds(store) == ["key.created"]
    fresh = [dataclasses.replace(k, key_id=f"r{i}") for i, k in enumerate(batch)]
    store.insert_keys(fresh, [event("key.restored"), event("key.restored")])
    assert [k.key_id for k in store.list_keys()] == ["k2", "r0", "r1"]
    assert _kinds(store) == ["key.created", "key.restored", "key.restored"]


# -- claims -------------------------------------------------------------------


def test_claim_replay_conflict_and_lease(store: Store, clock: Clock) -> None:
    assert store.claim_batch("svc", "r1", DIGEST, 1000, [event()]).outcome is ClaimOutcome.CLAIMED
    again = store.claim_batch("svc", "r1", DIGEST, 1000, [event()])
    assert again.outcome is ClaimOutcome.IN_PROGRESS
    other = store.claim_batch("svc", "r1", OTHER, 1000, [event()])
    assert other.outcome is ClaimOutcome.CONFLICT
    clock.now += 1001  # the first attempt crashed: its lease runs out
    retry = store.claim_batch("svc", "r1", DIGEST, 1000, [event()])
    assert retry.outcome is ClaimOutcome.CLAIMED
    assert retry.token is not None
    store.complete_batch("svc", "r1", b"result", [event("sign.signed")], token=retry.token)
    done = store.claim_batch("svc", "r1", DIGEST, 1000, [event()])
    assert (done.outcome, done.result) == (ClaimOutcome.DONE, b"result")
    # A different payload is refused even after the id was signed.
    assert store.claim_batch("svc", "r1", OTHER, 1000, []).outcome is ClaimOutcome.CONFLICT
    # Request ids are scoped per caller.
    assert store.claim_batch("svc2", "r1", OTHER, 1000, []).outcome is ClaimOutcome.CLAIMED
    # Claims refused for in-progress/conflict/done wrote no audit records; the
    # take-over closed the crashed attempt with a record of its own.
    assert _kinds(store) == ["test", "sign.failed", "test", "sign.signed"]
    batch = store.get_batch("svc", "r1")
    assert batch is not None
    assert (batch.payload_digest, batch.done, batch.result, batch.approval_id) == (
        DIGEST,
        True,
        b"result",
        None,
    )
    assert store.get_batch("svc", "nope") is None


def test_release_lets_a_retry_claim(store: Store, backend: Backend) -> None:
    claim = store.claim_batch("svc", "r1", DIGEST, 60_000, [event()], admission=budget("b", 5, 100))
    assert claim.token is not None
    assert backend.reserved("b") == (5, 1)
    assert store.release_batch("svc", "r1", [event("sign.failed")], token=claim.token)
    assert store.get_batch("svc", "r1") is None
    assert backend.reserved("b") == (0, 0)  # the budget came back with the id
    assert store.claim_batch("svc", "r1", DIGEST, 60_000, []).outcome is ClaimOutcome.CLAIMED
    assert _kinds(store) == ["test", "sign.failed"]


def test_release_keeps_a_completed_batch_and_its_budget(store: Store, backend: Backend) -> None:
    # Also what a PostgreSQL COMMIT of unknown outcome leads to: the pipeline
    # releases under its token, and if the COMMIT did complete the batch, nothing moves.
    claim = store.claim_batch("svc", "r1", DIGEST, 60_000, [], admission=budget("b", 5, 100))
    assert claim.token is not None
    store.complete_batch("svc", "r1", b"signed", [event("sign.signed")], token=claim.token)
    assert not store.release_batch("svc", "r1", [event("sign.failed")], token=claim.token)
    batch = store.get_batch("svc", "r1")
    assert batch is not None
    assert batch.result == b"signed"
    assert backend.reserved("b") == (5, 1)
    assert _kinds(store) == ["sign.signed"]  # the refused release wrote nothing


def test_concurrent_claims_of_one_id_have_one_winner(store: Store) -> None:
    outcomes: list[ClaimOutcome] = []
    lock = threading.Lock()

    def claim(n: int) -> None:
        result = store.claim_batch("svc", "same", DIGEST, 60_000, [event("sign.authorized")])
        with lock:
            outcomes.append(result.outcome)

    _run_threads(8, claim)
    assert sorted(o.value for o in outcomes) == ["claimed"] + ["in_progress"] * 7
    assert _kinds(store) == ["sign.authorized"]


# -- budgets (Admission) --------------------------------------------------------


def test_admission_reserves_and_over_limit_writes_nothing(store: Store, backend: Backend) -> None:
    seen: list[Spent] = []
    first = store.claim_batch(
        "svc", "r1", DIGEST, 60_000, [event()], admission=budget("b", 60, 100, seen=seen)
    )
    assert first.outcome is ClaimOutcome.CLAIMED
    over = store.claim_batch(
        "svc", "r2", DIGEST, 60_000, [event()], admission=budget("b", 50, 100, seen=seen)
    )
    assert over.outcome is ClaimOutcome.OVER_LIMIT
    assert over.breach == ("breach", "b", 60)
    assert seen == [Spent(0, 0), Spent(60, 1)]
    assert store.get_batch("svc", "r2") is None  # the id stays free
    assert backend.reserved("b") == (60, 1)
    assert len(store.audit_records()) == 1
    # The refused id can be claimed once the budget allows it.
    fits = store.claim_batch("svc", "r2", DIGEST, 60_000, [], admission=budget("b", 40, 100))
    assert fits.outcome is ClaimOutcome.CLAIMED
    assert backend.reserved("b") == (100, 2)


def test_window_counts_only_recent_unreleased_reservations(
    store: Store, backend: Backend, clock: Clock
) -> None:
    store.claim_batch("svc", "old", DIGEST, 60_000, [], admission=budget("b", 90, 100))
    clock.now += 10_000
    window_start = clock.now - 5_000  # the first reservation is outside this window
    seen: list[Spent] = []
    claim = store.claim_batch(
        "svc",
        "new",
        DIGEST,
        60_000,
        [],
        admission=budget("b", 90, 100, start_ms=window_start, seen=seen),
    )
    assert claim.outcome is ClaimOutcome.CLAIMED
    assert seen == [Spent(0, 0)]
    assert backend.reserved("b") == (180, 2)


def test_expired_lease_rereserves_without_stacking(
    store: Store, backend: Backend, clock: Clock
) -> None:
    store.claim_batch("svc", "r1", DIGEST, 1000, [], admission=budget("b", 30, 100))
    clock.now += 1001  # that attempt crashed holding its reservation
    retry = store.claim_batch("svc", "r1", DIGEST, 1000, [], admission=budget("b", 30, 100))
    assert retry.outcome is ClaimOutcome.CLAIMED
    assert backend.reserved("b") == (30, 1)


def test_uint256_amounts_sum_exactly(store: Store, backend: Backend) -> None:
    big = 2**256 - 1
    seen: list[Spent] = []
    for n in range(3):
        claim = store.claim_batch(
            "svc", f"r{n}", DIGEST, 60_000, [], admission=budget("eth", big, 3 * big, seen=seen)
        )
        assert claim.outcome is ClaimOutcome.CLAIMED
    assert seen[-1] == Spent(2 * big, 2)
    over = store.claim_batch("svc", "r4", DIGEST, 60_000, [], admission=budget("eth", 1, 3 * big))
    assert over.outcome is ClaimOutcome.OVER_LIMIT
    assert backend.reserved("eth") == (3 * big, 3)


def test_racing_claims_never_overspend_one_bucket(store: Store, backend: Backend) -> None:
    outcomes: list[ClaimOutcome] = []
    lock = threading.Lock()

    def spend(n: int) -> None:
        for i in range(6):
            claim = store.claim_batch(
                f"svc{n}",
                f"r{i}",
                DIGEST,
                60_000,
                [event("sign.authorized", f"svc{n}")],
                admission=budget("hot", 7, 100),
            )
            with lock:
                outcomes.append(claim.outcome)

    _run_threads(12, spend)
    claimed = outcomes.count(ClaimOutcome.CLAIMED)
    assert claimed == 100 // 7  # every claim that fitted got in, and no more
    assert outcomes.count(ClaimOutcome.OVER_LIMIT) == 12 * 6 - claimed
    amount, count = backend.reserved("hot")
    assert amount <= 100
    assert (amount, count) == (7 * claimed, claimed)
    assert len(store.audit_records(0, 10_000)) == claimed


# -- approvals (pending batches) --------------------------------------------------


def test_held_batch_waits_then_rejection_releases_budget(store: Store, backend: Backend) -> None:
    row = pending_row("ap1", "svc", "r1", expires_at_ms=5_000_000)
    held = store.claim_batch(
        "svc",
        "r1",
        DIGEST,
        1000,
        [event("sign.authorized"), event("approval.requested")],
        admission=budget("b", 40, 100, pending=row),
    )
    assert held.outcome is ClaimOutcome.HELD
    batch = store.get_batch("svc", "r1")
    assert batch is not None
    assert (batch.done, batch.result, batch.approval_id) == (False, None, "ap1")
    again = store.claim_batch("svc", "r1", DIGEST, 1000, [event()])
    assert (again.outcome, again.approval_id) == (ClaimOutcome.PENDING, "ap1")
    assert store.get_pending("ap1") == row
    assert store.list_pending(["pending", "approved"]) == [row]
    assert store.list_pending(["approved"]) == []
    assert backend.reserved("b") == (40, 1)

    def approve(current: PendingRow) -> PendingChange:
        return PendingChange(
            dataclasses.replace(current, state="approved", record='{"n": 1}'),
            [event("approval.given", "alice")],
        )

    approved = store.update_pending("ap1", approve)
    assert isinstance(approved, PendingRow)
    assert (approved.state, approved.record) == ("approved", '{"n": 1}')
    assert store.get_pending("ap1") == approved
    assert backend.reserved("b") == (40, 1)  # approval keeps the budget reserved

    def reject(current: PendingRow) -> PendingChange:
        return PendingChange(
            dataclasses.replace(current, state="rejected"),
            [event("approval.refused", "bob"), event("budget.released", "system")],
            release_budget=True,
            final_result=b"rejected",
        )

    store.update_pending("ap1", reject)
    assert backend.reserved("b") == (0, 0)
    settled = store.get_batch("svc", "r1")
    assert settled is not None
    assert (settled.done, settled.result) == (True, b"rejected")
    replay = store.claim_batch("svc", "r1", DIGEST, 1000, [event()])
    assert (replay.outcome, replay.result) == (ClaimOutcome.DONE, b"rejected")
    assert store.list_pending(["pending", "approved"]) == []
    assert _kinds(store) == [
        "sign.authorized",
        "approval.requested",
        "approval.given",
        "approval.refused",
        "budget.released",
    ]


def test_update_pending_refusal_and_missing(store: Store) -> None:
    store.claim_batch(
        "svc",
        "r1",
        DIGEST,
        1000,
        [],
        admission=budget("b", 1, 10, pending=pending_row("ap1", "svc", "r1", 9_000_000)),
    )
    before = store.get_pending("ap1")
    refused = store.update_pending("ap1", lambda row: "refused: counts once")
    assert refused == "refused: counts once"
    assert store.get_pending("ap1") == before
    assert store.update_pending("nope", lambda row: pytest.fail("no row to change")) is None
    assert store.audit_size() == 0


def test_concurrent_approvals_do_not_lose_updates(store: Store) -> None:
    store.claim_batch(
        "svc",
        "r1",
        DIGEST,
        1000,
        [],
        admission=budget("b", 1, 10, pending=pending_row("ap1", "svc", "r1", 9_000_000)),
    )

    def count(row: PendingRow) -> PendingChange:
        n = json.loads(row.record)["n"]
        return PendingChange(
            dataclasses.replace(row, record=json.dumps({"n": n + 1})), [event("approval.given")]
        )

    def approver(n: int) -> None:
        for _ in range(5):
            store.update_pending("ap1", count)

    _run_threads(8, approver)
    final = store.get_pending("ap1")
    assert final is not None
    assert json.loads(final.record)["n"] == 40
    assert store.audit_size() == 40


# -- policy versions ----------------------------------------------------------------


def _policy(version: int, state: str, activated: int | None = None) -> PolicyRow:
    return PolicyRow(version, f"h{version}", f"version: {version}\n", state, "{}", activated)


def test_policy_versions_insert_approve_activate(store: Store) -> None:
    store.insert_policy_version(_policy(1, "active", 10), [event("policy.activated")])
    store.insert_policy_version(_policy(2, "proposed"), [event("policy.proposed")])
    with pytest.raises(VersionExists):
        store.insert_policy_version(_policy(2, "proposed"), [event("policy.proposed")])
    assert [r.version for r in store.policy_versions()] == [1, 2]
    assert store.policy_versions()[0] == _policy(1, "active", 10)

    unchanged = store.update_policy_version(2, lambda row: None)
    assert unchanged == _policy(2, "proposed")
    assert store.update_policy_version(9, lambda row: pytest.fail("no such version")) is None

    approved = store.update_policy_version(
        2,
        lambda row: (
            dataclasses.replace(row, state="approved", record='{"a": 1}'),
            [event("policy.approved")],
        ),
    )
    assert approved is not None
    assert approved.state == "approved"
    store.update_policy_version(
        2,
        lambda row: (
            dataclasses.replace(row, state="active", activated_at_ms=20),
            [event("policy.activated")],
        ),
    )
    assert [(r.version, r.state, r.record, r.activated_at_ms) for r in store.policy_versions()] == [
        (1, "superseded", "{}", 10),
        (2, "active", '{"a": 1}', 20),
    ]
    # The refused duplicate and the skipped change left no record.
    assert _kinds(store) == [
        "policy.activated",
        "policy.proposed",
        "policy.approved",
        "policy.activated",
    ]


# -- TOTP -------------------------------------------------------------------------


# -- audit log --------------------------------------------------------------------


def test_audit_chain_survives_reopen(backend: Backend, clock: Clock) -> None:
    first = backend.open(clock)
    first.append_audit([event("a"), event("b")])
    first.close()
    second = backend.open(clock)
    second.append_audit([event("c")])
    records = _all_records(second)
    assert len(records) == 3
    assert verify_chain(records) is None
    assert [r.seq for r in second.audit_records()] == [0, 1, 2]


def test_concurrent_writers_keep_one_chain(store: Store) -> None:
    key = KeyRecord("dup", b"\x04" * 65, KeyState.ENABLED, "officer", 5)

    def writer(n: int) -> None:
        for i in range(25):
            store.append_audit([AuditEvent("w", f"t{n}", {"i": i})])
            if i == 10:
                # Every thread tries; exactly one wins, the failures roll back alone.
                with contextlib.suppress(KeyAlreadyExists):
                    store.insert_key(key, event("key.created"))

    _run_threads(16, writer)
    records = _all_records(store)
    assert len(records) == 16 * 25 + 1
    assert verify_chain(records) is None
    assert sum(1 for r in store.audit_records(0, 10_000) if r.event.kind == "key.created") == 1
    assert store.audit_size() == len(records)
    assert len(store.leaf_hashes(store.audit_size())) == len(records)


def test_audit_rows_leaf_hashes_and_paging(store: Store, clock: Clock) -> None:
    assert store.audit_size() == 0
    assert store.audit_records() == []
    store.append_audit([event("e", i=i) for i in range(5)])
    store.append_audit([])  # nothing to chain: no record
    rows = store.audit_rows(1, 3)
    assert [seq for seq, _, _ in rows] == [1, 2, 3]
    records = store.audit_records(0, 10)
    assert [r.event.fields["i"] for r in records] == [0, 1, 2, 3, 4]
    assert {r.ts_ms for r in records} == {clock.now}
    assert [data for _, data, _ in rows] == [r.encode() for r in records[1:4]]
    assert [leaf for _, _, leaf in rows] == [r.leaf_hash() for r in records[1:4]]
    assert store.leaf_hashes(2) == [r.leaf_hash() for r in records[:2]]
    assert store.audit_size() == 5


def test_checkpoints_are_stored_once_per_size(store: Store) -> None:
    assert store.latest_checkpoint() is None
    store.append_audit([event()])
    first = StoredCheckpoint(1, b"\x01" * 32, "note 1")
    store.save_checkpoint(first, event("audit.checkpoint"))
    store.save_checkpoint(StoredCheckpoint(1, b"\x09" * 32, "other"), event("audit.checkpoint"))
    assert store.latest_checkpoint() == first  # the first checkpoint of a size stays
    later = StoredCheckpoint(3, b"\x03" * 32, "note 3")
    store.save_checkpoint(later, event("audit.checkpoint"))
    assert store.latest_checkpoint() == later
    # Every checkpoint, smallest first: what an auditor's export keeps.
    assert store.all_checkpoints() == [first, later]
    assert store.audit_size() == 4  # every save is itself audited


def test_wait_for_audit(store: Store) -> None:
    store.append_audit([event()])
    started = time.monotonic()
    store.wait_for_audit(0, timeout=5)  # already more than 0 records: no wait
    assert time.monotonic() - started < 1
    started = time.monotonic()
    store.wait_for_audit(1, timeout=0.3)  # nothing comes: times out
    assert 0.25 < time.monotonic() - started < 2
    timer = threading.Timer(0.2, lambda: store.append_audit([event("late")]))
    timer.start()
    started = time.monotonic()
    store.wait_for_audit(1, timeout=10)
    waited = time.monotonic() - started
    timer.join()
    assert store.audit_size() == 2
    assert waited < 2


def test_ping_and_close(backend: Backend, clock: Clock) -> None:
    store = backend.open(clock)
    store.ping()
    store.close()
