"""Budget rows against the audit log's ledger, on every backend (signer.usecases.budget_ledger).

Every legitimate path that reserves or releases budget (claims, completions,
failed attempts, take-overs, lapsed claims, held batches judged again, rejected
or expired ones) leaves the ledger replayed from the log equal to the rows, so
the floor never trips on honest work; rows deleted or edited with plain SQL
make the next admission on that bucket fail with TamperedState and an alarm.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from psycopg import sql

from custos.audit.record import AuditEvent
from custos.signer.edge.errors import TamperedState
from custos.signer.store.base import ClaimOutcome, Store
from custos.signer.store.policy_tables import PendingChange
from custos.signer.usecases.budget_ledger import BudgetLedger
from tests.store.conftest import Backend, PostgresBackend, SqliteBackend
from tests.store.helpers import Clock, budget, pending_row

DIGEST = b"\x22" * 32
LEASE = 1000
LIMIT = 100
NOBODY = ("", "")


class Fed:
    """A ledger fed with the store's records, as AuditLog feeds the server's once verified."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen = 0
        self.refreshes = 0
        self.stale = 0  # refreshes still to come that find nothing new (a lagging replica)
        self.alarms: list[TamperedState] = []
        self.ledger = BudgetLedger(10**9, refresh=self.refresh, alarm=self.alarms.append)
        store.floor_budget(self.ledger)

    def refresh(self) -> None:
        self.refreshes += 1
        if self.stale:
            self.stale -= 1
            return
        for seq, data, _leaf in self.store.audit_rows(self.seen, 10_000):
            self.ledger.observe(bytes(data))
            self.seen = seq + 1

    def agrees(self, backend: Backend, bucket: str = "b") -> tuple[int, int]:
        """The ledger equals the rows exactly; returns (amount, count)."""
        self.refresh()
        logged = self.ledger.usage(bucket, 0, NOBODY)
        assert (logged.amount, logged.count) == backend.reserved(bucket)
        return logged.amount, logged.count


def _authorized(request_id: str, amount: int, decision: str = "allow") -> AuditEvent:
    """The pipeline's sign.authorized, as far as the ledger reads it."""
    return AuditEvent(
        "sign.authorized",
        "svc",
        {"request_id": request_id, "decision": decision, "reserved": [["b", str(amount), 1]]},
    )


def _claim(store: Store, request_id: str, amount: int) -> Any:
    return store.claim_batch(
        "svc",
        request_id,
        DIGEST,
        LEASE,
        [_authorized(request_id, amount)],
        admission=budget("b", amount, LIMIT),
    )


def _sql(backend: Backend, query: str, params: Sequence[Any] = ()) -> None:
    if isinstance(backend, SqliteBackend):
        db = sqlite3.connect(backend.path, isolation_level=None)
        try:
            db.execute(query, params)
        finally:
            db.close()
        return
    assert isinstance(backend, PostgresBackend)
    with psycopg.connect(backend.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(backend.schema)).as_string(conn)
        )
        conn.execute(query.replace("?", "%s").encode(), params)


def test_honest_work_keeps_the_ledger_equal_to_the_rows(
    store: Store, backend: Backend, clock: Clock
) -> None:
    fed = Fed(store)
    signed = _claim(store, "signed", 30)
    store.complete_batch(
        "svc",
        "signed",
        b"ok",
        [AuditEvent("sign.signed", "svc", {"request_id": "signed"})],
        token=signed.token,
    )
    assert fed.agrees(backend) == (30, 1)

    # A failed attempt gives its budget back (the pipeline's sign.failed).
    failed = _claim(store, "failed", 20)
    failure = AuditEvent("sign.failed", "svc", {"request_id": "failed", "reason": "hsm"})
    assert store.release_batch("svc", "failed", [failure], token=failed.token)
    assert fed.agrees(backend) == (30, 1)

    # A lapsed claim taken over by a retry, and one closed by the sweep.
    _claim(store, "lapsed", 10)
    clock.now += LEASE + 1
    assert _claim(store, "lapsed", 15).outcome is ClaimOutcome.CLAIMED
    assert fed.agrees(backend) == (45, 2)
    clock.now += LEASE + 1
    assert store.expire_claims() == 1
    assert fed.agrees(backend) == (30, 1)

    # A held batch: judged again when proven (its budget re-reserved), then rejected.
    held = pending_row("ap1", "svc", "held", clock.now + 10 * LEASE)
    claim = store.claim_batch(
        "svc",
        "held",
        DIGEST,
        LEASE,
        [
            _authorized("held", 40, "approval"),
            AuditEvent("approval.requested", "svc", {"request_id": "held", "approval_id": "ap1"}),
        ],
        admission=budget("b", 40, LIMIT, pending=held),
    )
    assert claim.outcome is ClaimOutcome.HELD
    assert fed.agrees(backend) == (70, 2)
    proven = AuditEvent(
        "approval.proven",
        "system",
        {"approval_id": "ap1", "request_id": "held", "reserved": [["b", "50", 1]]},
    )
    clock.now += 1
    store.update_pending(
        "ap1", lambda row: PendingChange(row, [proven], rebudget=budget("b", 50, LIMIT))
    )
    assert fed.agrees(backend) == (80, 2)
    released = AuditEvent("budget.released", "system", {"approval_id": "ap1", "request_id": "held"})
    store.update_pending(
        "ap1", lambda row: PendingChange(row, [released], release_budget=True, final_result=b"x")
    )
    assert fed.agrees(backend) == (30, 1)
    assert fed.alarms == []


def test_a_release_not_yet_replayed_is_caught_up_not_alarmed(
    store: Store, backend: Backend
) -> None:
    fed = Fed(store)
    first = _claim(store, "first", 60)
    fed.refresh()  # the ledger holds 60 ...
    failure = AuditEvent("sign.failed", "svc", {"request_id": "first", "reason": "hsm"})
    assert store.release_batch("svc", "first", [failure], token=first.token)
    # ... and its catch-up before the next admission misses the release (committed
    # just after it, by another replica say): the rows hold less than it, so the
    # store rolls back, catches up again and admits, without an alarm.
    fed.stale = 1
    before = fed.refreshes
    assert _claim(store, "second", 90).outcome is ClaimOutcome.CLAIMED
    assert fed.refreshes == before + 2
    assert fed.alarms == []
    assert fed.agrees(backend) == (90, 1)


@pytest.mark.parametrize(
    "tamper",
    [
        "DELETE FROM reservations",
        "UPDATE reservations SET amount = '1'",
        "UPDATE reservations SET released = TRUE",
        "UPDATE reservations SET reserved_at_ms = -5",
        "UPDATE reservations SET bucket = 'elsewhere'",
    ],
)
def test_rows_deleted_or_edited_refuse_the_bucket(
    store: Store, backend: Backend, tamper: str
) -> None:
    fed = Fed(store)
    for n in range(3):
        _claim(store, f"r{n}", 30)
    fed.refresh()
    _sql(backend, tamper)
    # 30 more would fit what the rows say now; the log proves 90 of 100 are taken.
    with pytest.raises(TamperedState) as caught:
        _claim(store, "over", 30)
    assert "reservations row 'b'" in str(caught.value)
    assert "the audit log proves 90 (count 3)" in str(caught.value)
    assert [a.table for a in fed.alarms] == ["reservations"]
    # Nothing was admitted: no claim, no reservation, no record of it.
    assert store.get_batch("svc", "over") is None
    assert all(r.event.fields.get("request_id") != "over" for r in store.audit_records(0, 100))
