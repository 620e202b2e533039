"""Pending batches and TOTP rows sealed and checked by the store's RowGuard, on both backends.

The guard here uses a software key (tests.support.soft_integrity); the real
server's guard uses the token's state key, exercised in tests/integration.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

import psycopg
import pytest

from custos.signer.edge.errors import TamperedState
from custos.signer.store.base import ClaimOutcome, Store
from custos.signer.store.policy_tables import PendingChange, PendingRow
from custos.signer.usecases.authenticity import StoreGuard
from tests.store.conftest import Backend, PostgresBackend, SqliteBackend
from tests.store.helpers import budget, event, pending_row
from tests.support import soft_integrity

DIGEST = b"\x01" * 32


def _sql(backend: Backend, query: str, params: tuple[Any, ...] = ()) -> None:
    """The attacker: plain SQL against the store's tables."""
    if isinstance(backend, SqliteBackend):
        db = sqlite3.connect(backend.path, isolation_level=None)
        try:
            db.execute(query, params)
        finally:
            db.close()
    else:
        assert isinstance(backend, PostgresBackend)
        options = f"-c search_path={backend.schema}"
        with psycopg.connect(backend.url, autocommit=True, options=options) as conn:
            conn.execute(query.replace("?", "%s").encode(), params)


@pytest.fixture
def guarded(store: Store) -> Store:
    store.guard_rows(StoreGuard(soft_integrity()))
    return store


def _hold(store: Store, approval_id: str, request_id: str) -> PendingRow:
    claim = store.claim_batch(
        "svc",
        request_id,
        DIGEST,
        1000,
        [event("sign.authorized")],
        admission=budget("b", 1, 100, pending=pending_row(approval_id, "svc", request_id, 9**9)),
    )
    assert claim.outcome is ClaimOutcome.HELD
    row = guarded_row(store, approval_id)
    assert row.mac is not None
    assert row.rev == 1
    return row


def guarded_row(store: Store, approval_id: str) -> PendingRow:
    row = store.get_pending(approval_id)
    assert row is not None
    return row


def _approve(current: PendingRow) -> PendingChange:
    return PendingChange(
        dataclasses.replace(current, state="approved", record='{"approvals": ["alice"]}'),
        [event("approval.given", "alice")],
    )


def test_sealed_rows_round_trip_and_each_change_is_a_new_version(guarded: Store) -> None:
    _hold(guarded, "ap1", "r1")
    approved = guarded.update_pending("ap1", _approve)
    assert isinstance(approved, PendingRow)
    assert approved.rev == 2
    assert guarded_row(guarded, "ap1") == approved
    assert guarded.list_pending(["approved"]) == [approved]


@pytest.mark.parametrize(
    ("attack", "sql"),
    [
        ("hand-approved", "UPDATE pending SET state = 'approved' WHERE approval_id = 'ap1'"),
        ("forged approval", 'UPDATE pending SET record = \'{"approvals": ["mallory"]}\''),
        ("swapped request", "UPDATE pending SET request = ? WHERE approval_id = 'ap1'"),
        ("moved", "UPDATE pending SET approval_id = 'ap9' WHERE approval_id = 'ap1'"),
        ("untagged", "UPDATE pending SET mac = NULL"),
    ],
)
def test_altered_rows_are_refused_everywhere(
    guarded: Store, backend: Backend, attack: str, sql: str
) -> None:
    _hold(guarded, "ap1", "r1")
    _hold(guarded, "ap2", "r2")
    _sql(
        backend,
        sql if "WHERE" in sql else sql + " WHERE approval_id = 'ap1'",
        (b"other request",) if "?" in sql else (),
    )
    approval_id = "ap9" if attack == "moved" else "ap1"
    with pytest.raises(TamperedState, match=f"pending row '{approval_id}'"):
        guarded.get_pending(approval_id)
    # Listings leave a tampered row out, so it cannot hide the others.
    assert [r.approval_id for r in guarded.list_pending(["pending", "approved"])] == ["ap2"]
    with pytest.raises(TamperedState):
        guarded.update_pending(approval_id, _approve)


def test_forged_rows_are_refused(guarded: Store, backend: Backend) -> None:
    _sql(
        backend,
        "INSERT INTO pending (approval_id, caller, request_id, state, expires_at_ms, record,"
        " request, rev, mac) VALUES ('apx', 'svc', 'rx', 'approved', 1, '{}', ?, 1, ?)",
        (b"request", b"\x05" * 32),
    )
    with pytest.raises(TamperedState, match="pending row 'apx' does not match"):
        guarded.get_pending("apx")


def test_an_older_version_put_back_is_refused(guarded: Store, backend: Backend) -> None:
    held = _hold(guarded, "ap1", "r1")
    guarded.update_pending("ap1", _approve)
    # Back to the authentic version 1 (state pending), as a backup would hold it.
    _sql(
        backend,
        "UPDATE pending SET state = ?, record = ?, rev = 1, mac = ? WHERE approval_id = 'ap1'",
        (held.state, held.record, held.mac),
    )
    with pytest.raises(TamperedState, match="older than version 2"):
        guarded.get_pending("ap1")


def _put(secret: bytes, state: str) -> Any:
    def change(_row: tuple[bytes, str] | None) -> tuple[tuple[bytes, str], list[Any], None]:
        return (secret, state), [event("totp.enrolled")], None

    return change


def _use_code(row: tuple[bytes, str] | None) -> tuple[tuple[bytes, str], list[Any], str]:
    assert row is not None
    return (row[0], row[1] + "+used"), [event("totp.used")], "ok"


def test_totp_rows_are_sealed_and_checked(guarded: Store, backend: Backend) -> None:
    guarded.change_totp("CN=alice", _put(b"sealed secret", "fresh"))
    assert guarded.get_totp("CN=alice") == (b"sealed secret", "fresh")
    assert guarded.change_totp("CN=alice", _use_code) == "ok"
    assert guarded.get_totp("CN=alice") == (b"sealed secret", "fresh+used")

    # A failure count or last-used step reset by hand; a secret moved from another identity.
    for subject, attack in (
        ("CN=carol", "UPDATE totp SET state = 'reset' WHERE subject = 'CN=carol'"),
        ("CN=dave", "UPDATE totp SET sealed = ? WHERE subject = 'CN=dave'"),
    ):
        guarded.change_totp(subject, _put(b"sealed secret", "fresh"))
        _sql(backend, attack, (b"mallory's",) if "?" in attack else ())
        with pytest.raises(TamperedState, match=f"totp row '{subject}' does not match"):
            guarded.get_totp(subject)
        with pytest.raises(TamperedState):
            guarded.change_totp(subject, _use_code)


def test_an_older_totp_state_put_back_is_refused(guarded: Store, backend: Backend) -> None:
    guarded.change_totp("CN=bob", _put(b"sealed", "step=1"))
    _sql(backend, "CREATE TABLE totp_backup AS SELECT * FROM totp")
    guarded.change_totp("CN=bob", _use_code)
    _sql(backend, "DELETE FROM totp")
    _sql(backend, "INSERT INTO totp SELECT * FROM totp_backup")
    with pytest.raises(TamperedState, match="older than version 2"):
        guarded.get_totp("CN=bob")
