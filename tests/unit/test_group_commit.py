"""SQLite group commit: writers lead in turn, every write is committed or refused alone."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from custos.signer.store.base import StoreUnavailable
from custos.signer.store.group_commit import GroupCommitter


def _committer(path: Path) -> tuple[GroupCommitter, sqlite3.Connection]:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    return GroupCommitter(db), db


def test_concurrent_writers_each_get_their_own_outcome(tmp_path: Path) -> None:
    committer, db = _committer(tmp_path / "g.db")
    results: dict[int, object] = {}
    threads_seen: set[str] = set()

    def write(n: int) -> None:
        def work(conn: sqlite3.Connection) -> int:
            threads_seen.add(threading.current_thread().name)
            if n % 7 == 0:
                raise ValueError(f"piece {n} fails")
            conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
            return n * 2

        try:
            results[n] = committer.submit(work)
        except ValueError as exc:
            results[n] = str(exc)

    threads = [threading.Thread(target=write, args=(n,), name=f"w{n}") for n in range(400)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert results == {n: f"piece {n} fails" if n % 7 == 0 else n * 2 for n in range(400)}
    # A failing piece rolled back alone; every other write is committed.
    stored = {row[0] for row in db.execute("SELECT n FROM t")}
    assert stored == {n for n in range(400) if n % 7}
    # The writers themselves committed (no committer thread of its own).
    assert threads_seen <= {f"w{n}" for n in range(400)}
    committer.close()


def test_a_lone_write_is_committed_by_its_own_thread(tmp_path: Path) -> None:
    committer, _db = _committer(tmp_path / "g.db")
    seen = committer.submit(lambda conn: threading.current_thread().name)
    assert seen == threading.current_thread().name
    # Durable: another connection reads it.
    committer.submit(lambda conn: conn.execute("INSERT INTO t (n) VALUES (1)"))
    other = sqlite3.connect(tmp_path / "g.db")
    assert other.execute("SELECT n FROM t").fetchall() == [(1,)]
    committer.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        committer.submit(lambda conn: None)


def test_a_failed_commit_fails_every_piece_of_its_group(tmp_path: Path) -> None:
    committer, _db = _committer(tmp_path / "g.db")
    # A piece that leaves the transaction (COMMIT inside) makes the group's COMMIT fail.
    with pytest.raises(StoreUnavailable):
        committer.submit(lambda conn: conn.execute("COMMIT"))
    # The committer is usable afterwards: the lead was given back.
    assert committer.submit(lambda conn: 5) == 5
    committer.close()
