"""Group commit for SQLite: concurrent writers share one durable COMMIT.

With synchronous=FULL every COMMIT waits for an fsync (~0.3 ms here). Writers
hand their work to one committer thread, which runs every queued piece of work
in one transaction, each inside its own SAVEPOINT so that one failing piece
rolls back alone, then commits once and wakes them all. A writer returns only
after the COMMIT that holds its work succeeded.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from signer.store.base import StoreUnavailable

T = TypeVar("T")

Work = Callable[[sqlite3.Connection], Any]

MAX_GROUP = 256


class GroupCommitter:
    """Runs write work on `db` from one thread, many pieces per COMMIT."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._queue: queue.Queue[tuple[Work, Future[Any]] | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="custos-commit", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed")  # nobody would ever answer
        future: Future[T] = Future()
        self._queue.put((work, future))
        return future.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(item)
            self._commit(group)

    def _commit(self, group: list[tuple[Work, Future[Any]]]) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for _work, future in group:
                future.set_exception(StoreUnavailable(f"cannot start a transaction: {exc}"))
            return
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        for work, future in group:
            try:
                db.execute("SAVEPOINT piece")
                result = work(db)
                db.execute("RELEASE piece")
                outcomes.append((future, True, result))
            except BaseException as exc:  # noqa: BLE001 - delivered to the writer it belongs to
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK TO piece")
                    db.execute("RELEASE piece")
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    exc = StoreUnavailable(f"write failed: {exc}")
                outcomes.append((future, False, exc))
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for future, _ok, _value in outcomes:
                future.set_exception(StoreUnavailable(f"commit failed: {exc}"))
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)
