"""The store suite runs against every backend: `store` is parametrized over SQLite and PostgreSQL.

Each PostgreSQL case gets its own schema (tests.store.postgres_fixtures), dropped
at teardown; without a reachable server those cases are skipped, or fail when CI=true.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from custos.signer.store.base import Store
from custos.signer.store.postgres import PostgresStore
from custos.signer.store.sqlite import SqliteStore
from tests.store.helpers import Clock
from tests.store.postgres_fixtures import pg_schema, postgres_url

__all__ = ["pg_schema", "postgres_url"]  # fixtures used by this package's tests


class Backend:
    """One backend under test: opens stores on the same data and reads its tables directly."""

    name = ""

    def __init__(self) -> None:
        self._opened: list[Store] = []

    def open(self, clock: Clock) -> Store:
        store = self._open(clock)
        self._opened.append(store)
        return store

    def _open(self, clock: Clock) -> Store:
        raise NotImplementedError

    def reserved(self, bucket: str) -> tuple[int, int]:
        """(amount, count) of the bucket's unreleased reservations, summed outside the store."""
        raise NotImplementedError

    def close_all(self) -> None:
        for store in self._opened:
            store.close()


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _open(self, clock: Clock) -> Store:
        return SqliteStore(self.path, clock_ms=clock)

    def reserved(self, bucket: str) -> tuple[int, int]:
        db = sqlite3.connect(self.path)
        try:
            rows = db.execute(
                "SELECT amount, count FROM reservations WHERE bucket = ? AND released = 0",
                (bucket,),
            ).fetchall()
        finally:
            db.close()
        return sum(int(a) for a, _ in rows), sum(int(c) for _, c in rows)


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, url: str, schema: str) -> None:
        super().__init__()
        self.url = url
        self.schema = schema

    def _open(self, clock: Clock) -> Store:
        return PostgresStore(self.url, schema=self.schema, clock_ms=clock)

    def reserved(self, bucket: str) -> tuple[int, int]:
        query = sql.SQL(
            "SELECT COALESCE(SUM(amount), 0), COALESCE(SUM(count), 0) FROM {}.reservations"
            " WHERE bucket = %s AND NOT released"
        ).format(sql.Identifier(self.schema))
        with psycopg.connect(self.url) as conn:
            row = conn.execute(query, (bucket,)).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    chosen: Backend
    if request.param == "sqlite":
        chosen = SqliteBackend(tmp_path / "custos.db")
    else:
        url = request.getfixturevalue("postgres_url")
        chosen = PostgresBackend(url, request.getfixturevalue("pg_schema"))
    yield chosen
    chosen.close_all()


@pytest.fixture
def store(backend: Backend, clock: Clock) -> Store:
    return backend.open(clock)
