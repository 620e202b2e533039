"""PostgreSQL fixtures for any test package: a reachable server and a schema of one's own.

tests/store/conftest.py imports them; another package's conftest can do the
same (`from tests.store.postgres_fixtures import pg_schema, postgres_url`).
The server comes from CUSTOS_TEST_POSTGRES_URL (default: the local server,
database `test`). Without one, PostgreSQL tests are skipped, or fail when
CI=true: CI must not pass by testing only one backend.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

POSTGRES_URL = os.environ.get(
    "CUSTOS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
RUN = secrets.token_hex(3)  # schemas of this run: custos_test_<RUN>_<n>
_schemas = itertools.count()


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The test server's URL (no `schema` parameter), once it answered."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        message = f"PostgreSQL is not reachable (CUSTOS_TEST_POSTGRES_URL): {type(exc).__name__}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield POSTGRES_URL
    # A test killed half-way leaves its schema behind; sweep this run's leftovers.
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
            (f"custos_test_{RUN}_%",),
        ).fetchall()
    for (name,) in rows:
        drop_schema(POSTGRES_URL, name)


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema name for this test (created by the first store that opens it), dropped after."""
    name = f"custos_test_{RUN}_{next(_schemas)}"
    yield name
    drop_schema(postgres_url, name)
