"""Keys carry their origin (generated or imported), stored, migrated, and covered by the HSM tag.

Stores from before origins existed hold generated keys only: the migration
makes them so, and their tags stay valid (the tag names the origin only when
it is not "generated"). Changing a row's origin in the database breaks its tag.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from custos.signer.edge.errors import TamperedState
from custos.signer.store.base import KeyRecord, KeyState, Store
from custos.signer.store.sqlite import SqliteStore
from custos.signer.usecases.keys import key_fact, verify_keys
from tests.store.helpers import event
from tests.support import soft_integrity

PUBLIC = b"\x04" + b"\x03" * 64


def test_the_origin_round_trips_and_the_database_refuses_others(store: Store) -> None:
    generated = KeyRecord("g", PUBLIC, KeyState.ENABLED, "officer", 5, "testnet")
    imported = dataclasses.replace(generated, key_id="i", origin="imported")
    store.insert_key(generated, event("key.created"))
    store.insert_key(imported, event("key.imported"))
    assert {k.key_id: k.origin for k in store.list_keys()} == {"g": "generated", "i": "imported"}
    assert store.get_keys(["i"])["i"] == imported
    with pytest.raises(Exception):  # noqa: B017, PT011 - each backend's integrity error
        store.insert_key(dataclasses.replace(generated, key_id="x", origin="minted"), event())
    assert store.get_key("x") is None


def test_the_tag_covers_the_origin_and_keeps_older_tags_valid() -> None:
    integrity = soft_integrity()
    generated = KeyRecord("k", PUBLIC, KeyState.ENABLED, "officer", 5, "mainnet")
    # The fields of a key record before origins existed: its tag must still verify.
    assert [name for name, _ in key_fact(generated).fields] == [
        "public_key",
        "state",
        "created_by",
        "created_at_ms",
        "network_class",
    ]
    imported = dataclasses.replace(generated, origin="imported")
    assert key_fact(imported).encode() != key_fact(generated).encode()
    for record in (generated, imported):
        tagged = dataclasses.replace(record, mac=integrity.tag(key_fact(record)))
        verify_keys(integrity, [tagged], None)
        flipped = "generated" if record.origin == "imported" else "imported"
        forged = dataclasses.replace(tagged, origin=flipped)
        with pytest.raises(TamperedState):
            verify_keys(integrity, [forged], None)


def test_an_sqlite_store_from_before_origins_makes_its_keys_generated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE keys (key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL,"
        " state TEXT NOT NULL, created_by TEXT NOT NULL, created_at_ms INTEGER NOT NULL,"
        " network_class TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1, mac BLOB)"
    )
    db.execute(
        "INSERT INTO keys VALUES ('old', ?, 'enabled', 'officer', 1, 'testnet', 1, NULL)", (PUBLIC,)
    )
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert store.get_key("old") == KeyRecord(
            "old", PUBLIC, KeyState.ENABLED, "officer", 1, "testnet"
        )
        assert store.get_key("old").origin == "generated"  # type: ignore[union-attr]
    finally:
        store.close()
