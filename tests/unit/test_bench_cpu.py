"""bench/cpu.py's contention figures: which processes count as HSM workers."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from multiprocessing.connection import Connection

from bench.cpu import idle_cpu_s, process_cpu_s, process_tree_cpu_s, worker_busy_s


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


def test_process_cpu_counts_this_process_and_its_tree_counts_children() -> None:
    before_own, before_tree = process_cpu_s(os.getpid()), process_tree_cpu_s(os.getpid())
    burn = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass",
        ],
        check=True,
    )
    assert burn.returncode == 0
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    own = process_cpu_s(os.getpid()) - before_own
    assert own >= 0.15  # this process's own burn, in clock ticks
    # The child has exited: neither figure keeps its CPU, so the tree grew by ours alone.
    assert process_tree_cpu_s(os.getpid()) - before_tree < own + 0.2
    assert process_cpu_s(2**22 + 1) == 0.0  # no such process
