"""Keys carry their network class; stores from before classes migrate their keys to mainnet.

Mainnet is the safe reading of an unlabelled key: it may hold mainnet funds,
and a Bitcoin or Tron signature does not depend on the network label, so it
must never be judged by testnet rules. (A test key so migrated can only sign
mainnet-labelled requests, under the mainnet rules: refused work, never an
unchecked spend.)
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from custos.signer.store.base import KeyRecord, KeyState, Store
from custos.signer.store.migrations import POSTGRES
from custos.signer.store.postgres import PostgresStore
from custos.signer.store.sqlite import SqliteStore
from tests.store.helpers import event

PUBLIC = b"\x04" + b"\x02" * 64


def test_the_class_round_trips_and_is_listed(store: Store) -> None:
    for key_id, network_class in (("m", "mainnet"), ("t", "testnet")):
        store.insert_key(
            KeyRecord(key_id, PUBLIC, KeyState.ENABLED, "officer", 5, network_class),
            event("key.created"),
        )
    assert store.get_key("t") == KeyRecord("t", PUBLIC, KeyState.ENABLED, "officer", 5, "testnet")
    assert {k.key_id: k.network_class for k in store.list_keys()} == {
        "m": "mainnet",
        "t": "testnet",
    }
    assert store.get_keys(["m"])["m"].network_class == "mainnet"
    # Changing the state keeps the class: it is fixed for the key's life.
    current = store.get_key("t")
    assert current is not None
    successor = dataclasses.replace(current, state=KeyState.DISABLED, version=2, mac=b"t" * 32)
    assert store.replace_key(successor, event("key.disabled"))
    disabled = store.get_key("t")
    assert disabled is not None
    assert disabled.network_class == "testnet"


def test_another_class_is_refused_by_the_database(store: Store) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - each backend's integrity error
        store.insert_key(
            KeyRecord("x", PUBLIC, KeyState.ENABLED, "officer", 5, "devnet"), event("key.created")
        )
    assert store.get_key("x") is None


def test_an_sqlite_store_from_before_classes_makes_its_keys_mainnet(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE keys (key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL,"
        " state TEXT NOT NULL, created_by TEXT NOT NULL, created_at_ms INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO keys VALUES ('old', ?, 'enabled', 'officer', 1)", (PUBLIC,))
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert store.get_key("old") == KeyRecord(
            "old", PUBLIC, KeyState.ENABLED, "officer", 1, "mainnet"
        )
        store.insert_key(
            KeyRecord("new", PUBLIC, KeyState.ENABLED, "officer", 2, "testnet"), event()
        )
        assert store.get_key("new") is not None
        assert store.get_key("new").network_class == "testnet"  # type: ignore[union-attr]
    finally:
        store.close()
    reopened = SqliteStore(path)  # the migration runs once
    try:
        assert [k.network_class for k in reopened.list_keys()] == ["testnet", "mainnet"]
    finally:
        reopened.close()


def test_a_postgres_store_from_before_classes_makes_its_keys_mainnet(
    postgres_url: str, pg_schema: str
) -> None:
    name = sql.Identifier(pg_schema)
    with psycopg.connect(postgres_url) as conn:  # the schema as release 1 left it
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        conn.execute(sql.SQL("SET search_path TO {}").format(name))
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        conn.execute(POSTGRES[0].sql.encode())
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'initial schema')")
        conn.execute("INSERT INTO keys VALUES ('old', %s, 'enabled', 'officer', 1)", (PUBLIC,))
    store = PostgresStore(postgres_url, schema=pg_schema)
    try:
        assert store.get_key("old") == KeyRecord(
            "old", PUBLIC, KeyState.ENABLED, "officer", 1, "mainnet"
        )
        store.insert_key(
            KeyRecord("new", PUBLIC, KeyState.ENABLED, "officer", 2, "testnet"), event()
        )
        assert {k.key_id: k.network_class for k in store.list_keys()} == {
            "new": "testnet",
            "old": "mainnet",
        }
    finally:
        store.close()
    # The default served the migration only: a new row must name its class.
    with psycopg.connect(postgres_url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(name))
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(
                "INSERT INTO keys (key_id, public_key, state, created_by, created_at_ms)"
                " VALUES ('bare', %s, 'enabled', 'officer', 3)",
                (PUBLIC,),
            )
