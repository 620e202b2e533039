"""Ceremony rows on every backend: counted under a row lock, finished exactly once with
their key change, or not at all."""

from __future__ import annotations

import threading

from custos.audit.record import AuditEvent
from custos.signer.store.base import KeyRecord, KeyState, Store
from custos.signer.store.ceremony_tables import CeremonyRow
from custos.signer.store.wallet_tables import WalletRecord

KEY = KeyRecord("k1", b"\x04" + b"\x01" * 64, KeyState.ENABLED, "officer", 5, "testnet")


def _kinds(store: Store) -> list[str]:
    return [r.event.kind for r in store.audit_records()]


def _approved(store: Store, ceremony_id: str = "cer-1") -> CeremonyRow:
    row = CeremonyRow(ceremony_id, "create_key", "approved", '{"x": 1}', 1000, rev=2, mac=b"m")
    store.insert_ceremony(row, [AuditEvent("ceremony.proposed", "o1", {"ceremony_id": "cer-1"})])
    return row


def test_a_ceremony_finishes_once_with_its_key(store: Store) -> None:
    row = _approved(store)
    done = CeremonyRow(row.ceremony_id, row.kind, "executed", '{"x": 2}', 1000, rev=3, mac=b"n")
    results: list[bool] = []

    def finish() -> None:
        results.append(
            store.finish_ceremony(done, KEY, [AuditEvent("key.created", "o1", {"key_id": "k1"})])
        )

    threads = [threading.Thread(target=finish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False, False, False, True]
    assert store.get_ceremony("cer-1") == done
    assert store.get_key("k1") == KEY
    assert _kinds(store) == ["ceremony.proposed", "key.created"]


def test_a_key_that_changed_meanwhile_rolls_the_ceremony_back(store: Store) -> None:
    row = _approved(store)
    store.insert_key(KEY, AuditEvent("key.created", "o1", {"key_id": "k1"}))
    done = CeremonyRow(row.ceremony_id, row.kind, "executed", '{"x": 2}', 1000, rev=3, mac=b"n")
    # Created again: the id is taken. A successor of a version the row is not at: refused.
    assert not store.finish_ceremony(done, KEY, [AuditEvent("key.created", "o1", {})])
    stale = KeyRecord("k1", KEY.public_key, KeyState.DISABLED, "officer", 5, "testnet", 3)
    assert not store.finish_ceremony(done, stale, [AuditEvent("key.disabled", "o1", {})])
    assert store.get_ceremony("cer-1") == row  # nothing written
    assert _kinds(store) == ["ceremony.proposed", "key.created"]
    fresh = KeyRecord("k1", KEY.public_key, KeyState.DISABLED, "officer", 5, "testnet", 2)
    assert store.finish_ceremony(done, fresh, [AuditEvent("key.disabled", "o1", {})])
    assert store.get_key("k1") == fresh


def test_update_and_list(store: Store) -> None:
    _approved(store, "cer-1")
    later = CeremonyRow("cer-2", "disable_key", "open", "{}", 2000, mac=b"o")
    store.insert_ceremony(later, [])
    assert [r.ceremony_id for r in store.list_ceremonies()] == ["cer-2", "cer-1"]

    def approve(current: CeremonyRow) -> tuple[CeremonyRow, list[AuditEvent]]:
        new = CeremonyRow(current.ceremony_id, current.kind, "open", '{"a": 1}', 2000, 2, b"p")
        return new, [AuditEvent("ceremony.approved", "o2", {"ceremony_id": "cer-2"})]

    assert store.update_ceremony("cer-2", approve) == store.get_ceremony("cer-2")
    assert store.get_ceremony("cer-2").rev == 2  # type: ignore[union-attr]
    assert store.update_ceremony("missing", approve) is None
    assert store.update_ceremony("cer-2", lambda _row: None).rev == 2  # type: ignore[union-attr]


def test_a_wallet_is_stored_with_its_ceremony_once_or_not_at_all(store: Store) -> None:
    wallet = WalletRecord(
        "w1", "Hot", "_wallet_seal", b"sealed", "generated", "enabled", "o1", 7, 1, b"tag"
    )
    row = _approved(store)
    done = CeremonyRow(row.ceremony_id, row.kind, "executed", '{"x": 2}', 1000, rev=3, mac=b"n")
    event = AuditEvent("wallet.created", "o1", {"wallet_id": "w1"})
    assert store.finish_ceremony(done, None, [event], wallet=wallet)
    assert store.get_wallet("w1") == wallet
    assert store.list_wallets() == [wallet]
    # A second ceremony creating the same id writes nothing, not even its own end.
    other = _approved(store, "cer-2")
    again = CeremonyRow("cer-2", other.kind, "executed", '{"x": 3}', 1000, rev=3, mac=b"o")
    assert not store.finish_ceremony(again, None, [event], wallet=wallet)
    assert store.get_ceremony("cer-2") == other
    assert store.get_wallet("nope") is None
    assert _kinds(store) == ["ceremony.proposed", "wallet.created", "ceremony.proposed"]
