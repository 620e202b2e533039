"""open_store: the URL picks the backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from custos.signer.store.factory import open_store
from custos.signer.store.postgres import PostgresStore
from custos.signer.store.sqlite import SqliteStore
from tests.store.helpers import event


def test_sqlite_urls_name_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(f"sqlite:///{tmp_path / 'abs.db'}")  # sqlite:////tmp/.../abs.db
    try:
        assert isinstance(absolute, SqliteStore)
        absolute.append_audit([event()])
    finally:
        absolute.close()
    assert (tmp_path / "abs.db").exists()
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel.db")
    relative.close()
    assert (tmp_path / "rel.db").exists()


def test_postgres_urls_open_the_schema_they_name(postgres_url: str, pg_schema: str) -> None:
    joiner = "&" if "?" in postgres_url else "?"
    store = open_store(f"{postgres_url}{joiner}schema={pg_schema}")
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema == pg_schema
        store.append_audit([event()])
        assert store.audit_size() == 1
    finally:
        store.close()


@pytest.mark.parametrize(
    "url", ["mysql://custos:hunter2@db/custos", "sqlite:///", "custos.db", "sqlite://rel.db"]
)
def test_other_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///PATH") as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)
