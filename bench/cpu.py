"""CPU and disk figures for `make bench`, read from /proc and the bench's own disk.

The speed goals are ratios within one run, so each figure here is measured in
the same run as the raw signing it is compared with:
- process_tree_cpu_s: user + system CPU of a process and its descendants (the
  server and its HSM worker processes), from /proc/<pid>/stat;
- idle_cpu_s: CPU time no process used, machine-wide, from /proc/stat (the
  machine is shared: other tenants' load takes cores the service would use);
- worker_busy_s: time the server's HSM worker processes spent on the CPU or
  waiting for one, from /proc/<pid>/schedstat (the rest of a window they slept:
  no signature to make, so the service, not the CPU, held them up);
- fdatasync_p50_ms: the median latency of one 4 KiB write + fdatasync in the
  directory that holds the store (the floor under a durable commit).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def _descendants(root: int) -> list[int]:
    """The root and every live process below it (scanning /proc for parents)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid` alone (0 once it is gone)."""
    fields = _stat_fields(pid)  # utime and stime: fields 14 and 15 of /proc/<pid>/stat
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICKS


def process_tree_cpu_s(root: int) -> float:
    """User + system CPU seconds used so far by `root` and its live descendants.

    Only deltas over a window mean anything; the HSM workers live as long as the
    server, so a delta over a run counts every process that did its work.
    """
    return sum(process_cpu_s(pid) for pid in _descendants(root))


def idle_cpu_s() -> float:
    """Idle + iowait CPU seconds of the whole machine so far (all cores)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / _TICKS


def worker_busy_s(root: int) -> tuple[float, int]:
    """Seconds the HSM workers below `root` ran or were runnable, summed; and how many.

    Workers are the spawned children (not multiprocessing's resource tracker);
    /proc/<pid>/schedstat is the main thread's: the one that signs.
    """
    total, count = 0, 0
    for pid in _descendants(root):
        try:
            if b"spawn_main" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            run_ns, wait_ns, _slices = Path(f"/proc/{pid}/schedstat").read_text().split()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        total, count = total + int(run_ns) + int(wait_ns), count + 1
    return total / 1e9, count


def fdatasync_p50_ms(directory: Path, rounds: int = 200) -> float:
    """Median latency of a 4 KiB write followed by fdatasync, in `directory`."""
    path = directory / "fsync-probe"
    latencies = []
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(latencies) * 1000
