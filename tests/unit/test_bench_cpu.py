"""bench/cpu.py's contention figures: which processes count as HSM workers."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from multiprocessing.connection import Connection

from bench.cpu import idle_cpu_s, worker_busy_s


def _wait_for_parent(conn: Connection) -> None:
    conn.send("up")
    conn.recv()  # until the test has measured


def test_worker_busy_counts_spawned_workers_only() -> None:
    _busy, before = worker_busy_s(os.getpid())  # other tests' pools may still be alive
    context = multiprocessing.get_context("spawn")  # as hsm.pool starts its workers
    parent_end, child_end = context.Pipe()
    worker = context.Process(target=_wait_for_parent, args=(child_end,), daemon=True)
    worker.start()
    # A plain child (not a spawned worker) must not be counted.
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert parent_end.recv() == "up"
        busy, count = worker_busy_s(os.getpid())
        assert count == before + 1
        assert busy > 0  # its interpreter start-up ran on a CPU
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait()
        worker.terminate()
        worker.join()


def test_idle_cpu_never_runs_backwards() -> None:
    first = idle_cpu_s()
    assert idle_cpu_s() >= first >= 0
