"""Group commit for SQLite: concurrent writers share one durable COMMIT.

With synchronous=FULL every COMMIT waits for an fsync (~0.3 ms here). Writers
queue their work; one of them, the leader, runs every queued piece of work in
one transaction, each inside its own SAVEPOINT so that one failing piece
rolls back alone, then commits once and wakes the others. A writer returns
only after the COMMIT that holds its work succeeded.

The leader is a writer thread, not a thread of its own: a writer that finds
nobody committing commits itself, so a lone write costs no hand-off to another
thread and back (two context switches each way, which on a one-item signing
request cost more than its two fsyncs). A leader whose own work is committed
hands the lead to the oldest waiting writer, so nobody commits for others
indefinitely.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from custos.signer.store.base import StoreUnavailable

T = TypeVar("T")

Work = Callable[[sqlite3.Connection], Any]

MAX_GROUP = 256
CLOSE_WAIT_SECONDS = 10.0


class _Piece:
    """One writer's work, its outcome, and the event that wakes its writer."""

    __slots__ = ("error", "finished", "result", "wake", "work")

    def __init__(self, work: Work) -> None:
        self.work = work
        self.wake = threading.Event()
        # The COMMIT holding it ended (result or error set); woken unfinished: lead.
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self, result: Any, error: BaseException | None) -> None:
        self.result, self.error, self.finished = result, error, True
        self.wake.set()


class GroupCommitter:
    """Runs write work on `db`, many pieces per COMMIT, one leader at a time."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when nobody leads
        self._queue: list[_Piece] = []
        self._leading = False
        self._closed = False

    def submit(self, work: Callable[[sqlite3.Connection], T]) -> T:
        piece = _Piece(work)
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the store is closed")  # nobody would ever answer
            self._queue.append(piece)
            lead = not self._leading
            self._leading = True
        if not lead:
            piece.wake.wait()  # committed by a leader, or handed the lead
        if not piece.finished:
            self._lead(piece)
        if piece.error is not None:
            raise piece.error
        return piece.result  # type: ignore[no-any-return]

    def _lead(self, own: _Piece) -> None:
        """Commit queued groups until `own` is committed, then pass the lead on."""
        try:
            while not own.finished:
                with self._lock:
                    group = self._queue[:MAX_GROUP]
                    del self._queue[:MAX_GROUP]
                self._commit(group)
        finally:
            with self._lock:
                if not own.finished:  # left by an exception of this thread's own
                    own.finish(None, StoreUnavailable("the write was interrupted"))
                if self._queue:
                    self._queue[0].wake.set()  # the oldest writer leads next
                else:
                    self._leading = False
                    self._idle.notify_all()

    def _commit(self, group: list[_Piece]) -> None:
        try:
            self._run(group)
        finally:
            # Whatever ended the group early, no writer of it is left waiting.
            for piece in group:
                if not piece.finished:
                    piece.finish(None, StoreUnavailable("the write was interrupted"))

    def _run(self, group: list[_Piece]) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for piece in group:
                piece.finish(None, StoreUnavailable(f"cannot start a transaction: {exc}"))
            return
        outcomes: list[tuple[_Piece, Any, BaseException | None]] = []
        for piece in group:
            try:
                db.execute("SAVEPOINT piece")
                result = piece.work(db)
                db.execute("RELEASE piece")
                outcomes.append((piece, result, None))
            except BaseException as exc:  # noqa: BLE001 - delivered to the writer it belongs to
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK TO piece")
                    db.execute("RELEASE piece")
                error: BaseException = exc
                if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
                    error = StoreUnavailable(f"write failed: {exc}")
                outcomes.append((piece, None, error))
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            for piece, _result, _error in outcomes:
                piece.finish(None, StoreUnavailable(f"commit failed: {exc}"))
            return
        for piece, result, failure in outcomes:
            piece.finish(result, failure)

    def close(self) -> None:
        """Refuse new work and wait (bounded) for the writes under way to commit."""
        with self._lock:
            self._closed = True
            self._idle.wait_for(lambda: not self._leading, timeout=CLOSE_WAIT_SECONDS)
