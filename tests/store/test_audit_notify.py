"""Prompt wake-ups across replicas: PostgreSQL NOTIFY on every committed append.

Polling is turned off here (an hour between looks), so a waiter that returns
was woken by the other store's notification, not by a poll.
"""

from __future__ import annotations

import threading

import pytest

from custos.audit.record import AuditEvent
from custos.signer.store import postgres
from custos.signer.store.postgres import PostgresStore
from custos.signer.store.sql import Rollback, Tx
from tests.store.postgres_fixtures import drop_schema

HOUR = 3600.0
LIVENESS_SECONDS = 60  # a bound on a hang only


def _waiter(store: PostgresStore, size: int) -> threading.Thread:
    thread = threading.Thread(target=store.wait_for_audit, args=(size, HOUR), daemon=True)
    thread.start()
    return thread


def test_a_waiter_sleeps_through_rollbacks_and_other_schemas_and_wakes_on_a_commit(
    postgres_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "AUDIT_POLL_SECONDS", HOUR)
    monkeypatch.setattr(postgres, "LISTENING_POLL_SECONDS", HOUR)
    watcher = PostgresStore(postgres_url, pg_schema)
    writer = PostgresStore(postgres_url, pg_schema)
    other = PostgresStore(postgres_url, f"{pg_schema}_other")  # another deployment
    try:
        writer.append_audit([AuditEvent("test", "system", {"n": 0})])
        size = watcher.audit_size()
        thread = _waiter(watcher, size)

        # A rolled-back append notifies nobody, and another schema's append is not ours.
        def append_then_roll_back(tx: Tx) -> None:
            writer._append(tx, [AuditEvent("test", "system", {"n": "rolled back"})])
            raise Rollback(None)

        writer._transact(append_then_roll_back)
        other.append_audit([AuditEvent("test", "system", {"n": "elsewhere"})])
        assert watcher.audit_size() == size
        assert thread.is_alive()  # still waiting: nothing of ours committed

        writer.append_audit([AuditEvent("test", "system", {"n": 1})])
        thread.join(LIVENESS_SECONDS)
        assert not thread.is_alive()
        assert watcher.audit_size() == size + 1
    finally:
        watcher.close()
        writer.close()
        other.close()
        drop_schema(postgres_url, f"{pg_schema}_other")
