"""Fenced claims, on every backend: a late attempt cannot touch the work of the retry that took over.

The race of issue 8 item 7, reproduced step by step with a settable clock: an
attempt claims a request id, its lease runs out while it is still signing, a
retry takes the id over; then the first attempt finishes (or fails) late.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from custos.signer.store import migrations
from custos.signer.store.base import ClaimLost, ClaimOutcome, Store
from custos.signer.store.postgres import PostgresStore
from custos.signer.store.sqlite import SqliteStore
from tests.store.conftest import Backend
from tests.store.helpers import Clock, budget, event, pending_row, unclosed_authorizations

DIGEST = b"\x11" * 32
LEASE = 1000


def _kinds(store: Store, request_id: str = "r1") -> list[str]:
    return [
        r.event.kind
        for r in store.audit_records(0, 10_000)
        if r.event.fields.get("request_id") == request_id
    ]


def _authorized(request_id: str = "r1") -> list:  # type: ignore[type-arg]
    return [event("sign.authorized", "svc", request_id=request_id)]


def _signed(request_id: str = "r1") -> list:  # type: ignore[type-arg]
    return [event("sign.signed", "svc", request_id=request_id)]


def _failed(request_id: str = "r1") -> list:  # type: ignore[type-arg]
    return [event("sign.failed", "svc", request_id=request_id, reason="test")]


def test_a_late_attempt_can_neither_complete_nor_release_after_a_take_over(
    store: Store, backend: Backend, clock: Clock
) -> None:
    first = store.claim_batch(
        "svc", "r1", DIGEST, LEASE, _authorized(), admission=budget("b", 30, 100)
    )
    assert first.outcome is ClaimOutcome.CLAIMED
    assert first.token is not None
    clock.now += LEASE + 1  # the first attempt is still signing, but its lease ran out
    retry = store.claim_batch(
        "svc", "r1", DIGEST, LEASE, _authorized(), admission=budget("b", 30, 100)
    )
    assert retry.outcome is ClaimOutcome.CLAIMED
    assert retry.token is not None
    assert retry.token != first.token
    assert backend.reserved("b") == (30, 1)  # the abandoned reservation came back
    before = store.audit_size()

    # The first attempt's late failure releases nothing of the retry's.
    assert not store.release_batch("svc", "r1", _failed(), token=first.token)
    # Its late result is refused and writes nothing.
    with pytest.raises(ClaimLost):
        store.complete_batch("svc", "r1", b"first", _signed(), token=first.token)
    assert store.audit_size() == before
    assert backend.reserved("b") == (30, 1)
    batch = store.get_batch("svc", "r1")
    assert batch is not None
    assert (batch.done, batch.result) == (False, None)

    store.complete_batch("svc", "r1", b"retry", _signed(), token=retry.token)
    # Late either way: still nothing moves, and the id replays the one stored result.
    assert not store.release_batch("svc", "r1", _failed(), token=first.token)
    assert not store.release_batch("svc", "r1", _failed(), token=retry.token)
    with pytest.raises(ClaimLost):
        store.complete_batch("svc", "r1", b"first", _signed(), token=first.token)
    with pytest.raises(ClaimLost):
        store.complete_batch("svc", "r1", b"again", _signed(), token=retry.token)
    done = store.claim_batch("svc", "r1", DIGEST, LEASE, _authorized())
    assert (done.outcome, done.result, done.token) == (ClaimOutcome.DONE, b"retry", None)
    assert backend.reserved("b") == (30, 1)
    assert _kinds(store) == ["sign.authorized", "sign.failed", "sign.authorized", "sign.signed"]
    assert unclosed_authorizations(store.audit_records(0, 10_000)) == []


def test_the_take_over_record_closes_the_abandoned_attempt(store: Store, clock: Clock) -> None:
    store.claim_batch("svc", "r1", DIGEST, LEASE, _authorized())
    assert unclosed_authorizations(store.audit_records()) == [("svc", "r1", 0)]
    clock.now += LEASE + 1
    store.claim_batch("svc", "r1", DIGEST, LEASE, _authorized())
    records = store.audit_records()
    failed = records[1]
    assert (failed.event.kind, failed.event.actor) == ("sign.failed", "svc")
    assert failed.event.fields == {
        "request_id": "r1",
        "reason": "lease expired; taken over by a retry",
    }
    # Committed with the new claim: one timestamp, adjacent records.
    assert [r.ts_ms for r in records] == [records[0].ts_ms, clock.now, clock.now]
    assert unclosed_authorizations(records) == [("svc", "r1", 2)]  # the live claim


def test_a_take_over_refused_by_the_budget_still_closes_the_abandoned_attempt(
    store: Store, backend: Backend, clock: Clock
) -> None:
    store.claim_batch("svc", "r1", DIGEST, LEASE, _authorized(), admission=budget("b", 60, 100))
    store.claim_batch(
        "svc", "other", DIGEST, 60_000, _authorized("other"), admission=budget("b", 40, 100)
    )
    clock.now += LEASE + 1
    # The budget shrank meanwhile (a new policy): the retry no longer fits.
    over = store.claim_batch(
        "svc", "r1", DIGEST, LEASE, _authorized(), admission=budget("b", 70, 100)
    )
    assert over.outcome is ClaimOutcome.OVER_LIMIT
    assert over.breach == ("breach", "b", 40)  # the abandoned 60 no longer counts
    assert backend.reserved("b") == (40, 1)
    assert store.get_batch("svc", "r1") is None  # the id is free
    assert _kinds(store) == ["sign.authorized", "sign.failed"]
    fits = store.claim_batch(
        "svc", "r1", DIGEST, LEASE, _authorized(), admission=budget("b", 60, 100)
    )
    assert fits.outcome is ClaimOutcome.CLAIMED
    assert backend.reserved("b") == (100, 2)


def test_complete_and_release_need_the_claims_own_token(store: Store, backend: Backend) -> None:
    claim = store.claim_batch(
        "svc", "r1", DIGEST, 60_000, _authorized(), admission=budget("b", 5, 100)
    )
    assert claim.token is not None
    forged = bytes(len(claim.token))
    with pytest.raises(ClaimLost):
        store.complete_batch("svc", "r1", b"forged", _signed(), token=forged)
    assert not store.release_batch("svc", "r1", _failed(), token=forged)
    with pytest.raises(ClaimLost):  # another id's claim is not this one's
        store.complete_batch("svc", "r2", b"x", _signed("r2"), token=claim.token)
    assert backend.reserved("b") == (5, 1)
    assert _kinds(store) == ["sign.authorized"]
    assert store.release_batch("svc", "r1", _failed(), token=claim.token)
    assert backend.reserved("b") == (0, 0)
    with pytest.raises(ClaimLost):  # released: the token is spent
        store.complete_batch("svc", "r1", b"late", _signed(), token=claim.token)
    assert _kinds(store) == ["sign.authorized", "sign.failed"]


def test_every_sign_authorized_is_closed(store: Store, clock: Clock) -> None:
    """Crashes, take-overs, failures and successes: each authorization ends in a record."""
    tokens: dict[str, bytes] = {}

    def claim(request_id: str) -> None:
        taken = store.claim_batch(
            "svc", request_id, DIGEST, LEASE, _authorized(request_id), admission=budget("b", 1, 99)
        )
        assert taken.outcome is ClaimOutcome.CLAIMED
        assert taken.token is not None
        tokens[request_id] = taken.token

    for n in range(4):
        claim(f"r{n}")
    store.complete_batch("svc", "r0", b"ok", _signed("r0"), token=tokens["r0"])
    store.release_batch("svc", "r1", _failed("r1"), token=tokens["r1"])
    # r2 and r3 crash; their leases run out and each is retried.
    clock.now += LEASE + 1
    claim("r2")
    claim("r3")
    store.complete_batch("svc", "r2", b"ok", _signed("r2"), token=tokens["r2"])
    store.release_batch("svc", "r3", _failed("r3"), token=tokens["r3"])
    records = store.audit_records(0, 10_000)
    assert len(records) == 12
    assert unclosed_authorizations(records) == []


# -- migrations: stores written before claims carried tokens ----------------------


def _take_over_an_old_claim(store: Store, clock: Clock) -> None:
    """The row an older release left (no token) can only be taken over once its lease ran out."""
    assert store.claim_batch("svc", "old", DIGEST, LEASE, []).outcome is ClaimOutcome.IN_PROGRESS
    clock.now += 10_000
    retry = store.claim_batch("svc", "old", DIGEST, LEASE, _authorized("old"))
    assert retry.outcome is ClaimOutcome.CLAIMED
    assert retry.token is not None
    store.complete_batch("svc", "old", b"ok", _signed("old"), token=retry.token)
    assert _kinds(store, "old") == ["sign.failed", "sign.authorized", "sign.signed"]


def test_an_older_sqlite_store_gains_claim_tokens(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    # The batches table as the first release wrote it (no approval_id, no claim_token).
    db.executescript(
        "CREATE TABLE batches (caller TEXT NOT NULL, request_id TEXT NOT NULL,"
        " payload_digest BLOB NOT NULL, done INTEGER NOT NULL DEFAULT 0,"
        " lease_until_ms INTEGER NOT NULL, result BLOB, PRIMARY KEY (caller, request_id));"
    )
    db.execute("INSERT INTO batches VALUES ('svc', 'old', ?, 0, ?, NULL)", (DIGEST, clock.now + 5))
    db.commit()
    db.close()
    store = SqliteStore(path, clock_ms=clock)
    try:
        _take_over_an_old_claim(store, clock)
    finally:
        store.close()


def test_a_version_1_postgres_schema_is_migrated(
    postgres_url: str, pg_schema: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "POSTGRES", migrations.POSTGRES[:1])
        PostgresStore(postgres_url, schema=pg_schema, clock_ms=clock).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.batches (caller, request_id, payload_digest, lease_until_ms)"
                " VALUES ('svc', 'old', %s, %s)"
            ).format(sql.Identifier(pg_schema)),
            (DIGEST, clock.now + 5),
        )
    store = PostgresStore(postgres_url, schema=pg_schema, clock_ms=clock)
    try:
        assert store.migrate() == []  # version 2 was applied on open
        _take_over_an_old_claim(store, clock)
    finally:
        store.close()


def test_expire_claims_closes_claims_nobody_retried(
    store: Store, backend: Backend, clock: Clock
) -> None:
    crashed = store.claim_batch(
        "svc", "r1", DIGEST, LEASE, _authorized(), admission=budget("b", 30, 100)
    )
    assert crashed.token is not None
    live = store.claim_batch(
        "svc", "r2", DIGEST, 10 * LEASE, _authorized("r2"), admission=budget("b", 20, 100)
    )
    assert live.token is not None
    done = store.claim_batch("svc", "r3", DIGEST, LEASE, _authorized("r3"))
    assert done.token is not None
    store.complete_batch("svc", "r3", b"ok", _signed("r3"), token=done.token)
    store.claim_batch(
        "svc",
        "r4",
        DIGEST,
        LEASE,
        _authorized("r4"),
        admission=budget("b", 1, 100, pending=pending_row("ap4", "svc", "r4", clock.now + 10)),
    )
    assert store.expire_claims() == 0  # no lease has run out yet
    clock.now += LEASE
    assert store.expire_claims() == 1  # r1 only: r2 is live, r3 done, r4 held for approvals
    assert store.get_batch("svc", "r1") is None
    assert backend.reserved("b") == (21, 2)
    failed = store.audit_records(0, 10_000)[-1]
    assert (failed.event.kind, failed.event.actor) == ("sign.failed", "svc")
    assert failed.event.fields == {"request_id": "r1", "reason": "lease expired; no retry came"}
    # The crashed attempt, were it to wake, finds its claim gone.
    with pytest.raises(ClaimLost):
        store.complete_batch("svc", "r1", b"late", _signed(), token=crashed.token)
    assert not store.release_batch("svc", "r1", _failed(), token=crashed.token)
    assert store.expire_claims() == 0
    assert [u[1] for u in unclosed_authorizations(store.audit_records(0, 10_000))] == ["r2", "r4"]
    # A retry of the closed id claims it afresh.
    retry = store.claim_batch("svc", "r1", DIGEST, LEASE, _authorized())
    assert retry.outcome is ClaimOutcome.CLAIMED
