"""Store.change_totp on every backend: one transaction reads and writes (secret, state).

TOTP enrollment, tokens, unlocking and checks all go through it, so a token is
redeemed once and a lockout is never lost to a concurrent write.
"""

from __future__ import annotations

import threading

from custos.audit.record import AuditEvent
from custos.signer.store.base import Store
from tests.store.helpers import event

Row = tuple[bytes, str] | None


def test_first_write_creates_the_row_and_audits_it(store: Store) -> None:
    def create(row: Row) -> tuple[Row, list[AuditEvent], str]:
        assert row is None
        return (b"", '{"token": "h"}'), [event("totp.token_issued", "officer")], "made"

    assert store.change_totp("alice", create) == "made"
    assert store.get_totp("alice") == (b"", '{"token": "h"}')

    def leave(row: Row) -> tuple[Row, list[AuditEvent], str]:
        assert row == (b"", '{"token": "h"}')
        return None, [event("totp.enroll_refused", "alice")], "refused"

    assert store.change_totp("alice", leave) == "refused"
    assert store.get_totp("alice") == (b"", '{"token": "h"}')  # None leaves the row
    kinds = [r.event.kind for r in store.audit_records(0, 100)]
    assert kinds == ["totp.token_issued", "totp.enroll_refused"]


def test_concurrent_changes_never_lose_one(store: Store) -> None:
    def bump(row: Row) -> tuple[Row, list[AuditEvent], None]:
        count = int(row[1]) if row else 0
        return (b"s", str(count + 1)), [], None

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                store.change_totp("bob", bump)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.get_totp("bob") == (b"s", "60")
