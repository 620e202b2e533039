"""Open the store a URL names: SQLite for one process, PostgreSQL for replicas."""

from __future__ import annotations

from custos.signer.store.base import Store
from custos.signer.store.sqlite import SqliteStore

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def open_store(url: str) -> Store:
    """The store at `url`, its schema brought up to date.

    - `sqlite:///PATH`: SqliteStore on the file PATH (`sqlite:///custos.db` is
      relative to the working directory, `sqlite:////var/lib/custos.db` absolute);
    - `postgresql://USER@HOST:PORT/DB[?schema=NAME&...]` (or `postgres://`):
      PostgresStore in schema NAME (default "custos"); other query parameters
      are libpq's (sslmode, application_name, connect_timeout, ...).

    The PostgreSQL backend is imported only when asked for, so SQLite users
    never load psycopg.
    """
    if url.startswith(SQLITE_PREFIX):
        path = url.removeprefix(SQLITE_PREFIX)
        if not path:
            raise ValueError("sqlite store URL names no file: use sqlite:///PATH")
        return SqliteStore(path)
    if url.startswith(POSTGRES_PREFIXES):
        from custos.signer.store.postgres import PostgresStore  # noqa: PLC0415 - see docstring

        return PostgresStore(url)
    # Only the scheme: the rest of a URL may hold a password.
    scheme = url.split(":", 1)[0] if ":" in url else "(none)"
    raise ValueError(
        f"store URL scheme {scheme!r} is not supported: use sqlite:///PATH or postgresql://..."
    )
