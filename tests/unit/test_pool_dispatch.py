"""hsm.pool's dispatch of a batch's chunks to its worker processes (hsm.pool._exchange).

The workers here are threads at the far end of real pipes, so the test decides when
each one answers; tests/integration/test_hsm_token.py runs the same code on SoftHSM.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import pytest

from custos.hsm.errors import HsmUnavailable
from custos.hsm.pool import _exchange, _Worker, _Workers

WAIT = 10.0


class FakeWorker:
    """A worker process stand-in: answers each (name, args) with (name, args[0]) once
    its gate lets it; `seen` lists the calls it got."""

    def __init__(self, name: str, *, dead: bool = False) -> None:
        self.name = name
        self.gate = threading.Semaphore(0)
        self.seen: list[Any] = []
        parent, self._child = multiprocessing.Pipe()
        self.worker = _Worker.__new__(_Worker)  # the parent's end only: no process
        self.worker.conn = parent
        if dead:  # its end of the pipe is gone, as when the process dies
            self._child.close()
            return
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        child: Connection = self._child
        while True:
            try:
                _name, args = child.recv()
            except EOFError:
                return
            self.seen.append(args[0])
            self.gate.acquire()
            if args[0] == "boom":
                child.send((False, HsmUnavailable("boom")))
            else:
                child.send((True, (self.name, args[0])))

    def open(self, calls: int = 1000) -> None:
        for _ in range(calls):
            self.gate.release()


def _workers(*fakes: FakeWorker) -> _Workers:
    workers = _Workers.__new__(_Workers)
    workers.all = [fake.worker for fake in fakes]
    workers.idle = queue.Queue()
    workers.broken = False
    return workers


@contextmanager
def _running(
    workers: _Workers, taken: list[_Worker], calls: list[tuple[str, tuple[object, ...]]]
) -> Iterator[dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["results"] = _exchange(workers, taken, calls, timeout=WAIT)
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield out
    thread.join(WAIT)
    assert not thread.is_alive()


def _calls(*names: str) -> list[tuple[str, tuple[object, ...]]]:
    return [("_sign_jobs", (name,)) for name in names]


def test_a_worker_with_no_call_left_is_free_before_the_batch_ends() -> None:
    # Waves kept the fast worker idle until the slow one finished its chunk.
    fast, slow = FakeWorker("fast"), FakeWorker("slow")
    workers = _workers(fast, slow)
    fast.open()
    with _running(workers, [fast.worker, slow.worker], _calls("c0", "c1", "c2", "c3")) as out:
        # The fast worker takes every chunk the slow one does not hold, then is free.
        assert workers.idle.get(timeout=WAIT) is fast.worker
        assert "results" not in out  # the slow worker still holds its chunk
        slow.open()
    assert slow.seen == ["c1"]
    assert fast.seen == ["c0", "c2", "c3"]
    # Results in call order, whoever signed them.
    assert out["results"] == [("fast", "c0"), ("slow", "c1"), ("fast", "c2"), ("fast", "c3")]
    assert workers.idle.get(timeout=WAIT) is slow.worker


def test_a_worker_idle_elsewhere_joins_a_batch_with_calls_left() -> None:
    first, later = FakeWorker("first"), FakeWorker("later")
    workers = _workers(first, later)
    with _running(workers, [first.worker], _calls("c0", "c1", "c2")) as out:
        workers.idle.put(later.worker)  # another batch let it go
        later.open()
        first.open(1)  # answers c0: the batch takes c1 and lets the idle worker take c2
        first.open()
    assert out["results"] == [("first", "c0"), ("first", "c1"), ("later", "c2")]
    assert sorted(id(w) for w in (workers.idle.get_nowait(), workers.idle.get_nowait())) == sorted(
        (id(first.worker), id(later.worker))
    )


def test_a_workers_error_stops_new_calls_and_leaves_no_reply_behind() -> None:
    good, bad = FakeWorker("good"), FakeWorker("bad")
    workers = _workers(good, bad)
    with _running(workers, [bad.worker, good.worker], _calls("boom", "c1", "c2", "c3")) as out:
        bad.open()
        good.open()
    assert isinstance(out["error"], HsmUnavailable)
    assert bad.seen == ["boom"]
    assert len(good.seen) <= 3  # calls already sent are answered and read, no new ones
    assert not workers.broken  # a worker's own error leaves the pipes in step
    for fake in (good, bad):
        assert not fake.worker.conn.poll(0)  # nothing left for the next caller
    assert workers.idle.qsize() == 2


def test_a_worker_that_dies_breaks_the_set_and_every_worker_comes_back() -> None:
    alive, dying = FakeWorker("alive"), FakeWorker("dying", dead=True)
    workers = _workers(alive, dying)
    alive.open()
    with _running(workers, [alive.worker, dying.worker], _calls("c0", "c1")) as out:
        pass
    assert isinstance(out["error"], HsmUnavailable)
    assert workers.broken
    assert workers.idle.qsize() == 2


def test_an_unexpected_error_with_a_reply_on_its_way_breaks_the_set() -> None:
    # A call that cannot even be sent (here: arguments that do not pickle) after
    # another worker got its call: that worker's reply would reach the next caller.
    first, second = FakeWorker("first"), FakeWorker("second")
    workers = _workers(first, second)
    calls = [*_calls("c0"), ("_sign_jobs", (lambda: None,))]
    with pytest.raises(Exception, match="pickle"):
        _exchange(workers, [first.worker, second.worker], calls, WAIT)
    assert workers.broken
    assert workers.idle.qsize() == 2


@pytest.mark.parametrize("count", [1, 2, 5])
def test_fewer_calls_than_workers_release_the_unused_ones_at_once(count: int) -> None:
    fakes = [FakeWorker(f"w{i}") for i in range(5)]
    workers = _workers(*fakes)
    for fake in fakes:
        fake.open()
    results = _exchange(
        workers, [f.worker for f in fakes], _calls(*[f"c{i}" for i in range(count)]), WAIT
    )
    assert [name for _worker, name in results] == [f"c{i}" for i in range(count)]
    assert workers.idle.qsize() == 5
