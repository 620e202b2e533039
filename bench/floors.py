"""What the issue-15 goals stand on, measured on this machine within each speed round.

- `raw_sign(...)`: bench/raw_sign.py in a process of its own: back-to-back C_Sign
  (rate, median, CPU per call) and C_Sign after a request's worth of other work.
- `raw_sign_two_processes_per_s`: two raw signers started together: what two cores
  of C_Sign alone give, the ceiling of an e2e run on two cores.
- `grpc_echo_p50_ms`: a bare grpcio server with the same mTLS (bench/grpc_echo.py),
  called back to back: one unary call's cost before any Custos code.

With them a round can say how far each goal is from what this machine allows:
the one-item floor is gRPC's call, one C_Sign inside a request and two fdatasyncs,
with no Custos work at all (`single_floor_ms`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from custos.signer.edge.config import load_config
from custos.signer.tools.client import ClientProfile

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ECHO_CALLS = 400
WINDOW_SECONDS = 2.0
WINDOW_LEAD_SECONDS = 3.0  # for both processes to start, log in and warm up


def _env(directory: Path) -> dict[str, str]:
    return {**os.environ, "SOFTHSM2_CONF": str(directory / "softhsm2.conf")}


def _raw(directory: Path, key_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(BENCH / "raw_sign.py"), str(directory / "hsm.pin"), key_id, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(directory),
    )


def _result(process: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = process.communicate(timeout=300)
    if process.returncode != 0:
        raise SystemExit(f"bench/raw_sign.py failed with exit code {process.returncode}")
    return {name: float(value) for name, value in json.loads(out).items()}


def raw_sign(directory: Path, signs: int) -> dict[str, float]:
    """per_s, p50_ms, cpu_us, after_work_p50_ms and after_idle_p50_ms of one raw signer."""
    return _result(_raw(directory, "bench-raw", str(signs)))


def raw_sign_two_processes_per_s(directory: Path) -> float:
    """Signatures per second of two raw signers over the same wall-clock window."""
    start = time.time() + WINDOW_LEAD_SECONDS
    window = ("--window", repr(start), repr(WINDOW_SECONDS))
    processes = [_raw(directory, f"bench-raw-{i}", *window) for i in range(2)]
    return sum(_result(process)["per_s"] for process in processes)


def grpc_echo_p50_ms(directory: Path, config: Path) -> float:
    """Median of back-to-back unary calls to a bare grpcio echo server over mTLS."""
    tls = load_config(config).tls
    server = subprocess.Popen(
        [
            sys.executable,
            str(BENCH / "grpc_echo.py"),
            str(tls.server_key),
            str(tls.server_cert),
            str(tls.ca_cert),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        profile = ClientProfile.load(directory / "clients" / "payments.toml")
        channel = profile.channel(f"127.0.0.1:{port}")
        call: Any = channel.unary_unary("/custos.v1.Signer/SignBatch")
        payload = b"\x0a" * 200  # about a one-item request's size
        for _ in range(ECHO_CALLS // 4):
            call(payload, timeout=10)
        latencies = []
        for _ in range(ECHO_CALLS):
            start = time.perf_counter()
            call(payload, timeout=10)
            latencies.append(time.perf_counter() - start)
        channel.close()
        return statistics.median(latencies) * 1000
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
