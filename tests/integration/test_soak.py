"""Restarts always succeed: SIGKILL a server under load, again and again.

`CUSTOS_SOAK_KILLS` sets how many kills (default 5 in `make test`, 20 with
CI=true; `make soak` runs 100). After every kill the server must start again
(never `UserPinNotInitialized` or a lost token), its HSM workers must be gone,
the audit log must verify, and every result a client received must be in it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc, signer_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("CUSTOS_SOAK_KILLS", "20" if os.environ.get("CI") == "true" else "5"))


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _wait_gone(pids: set[int], what: str) -> float:
    """Seconds until every process in `pids` has exited (reported, not asserted)."""
    started = time.monotonic()
    while alive := {p for p in pids if _alive(p)}:
        assert time.monotonic() < started + 10, f"{what} still alive: {sorted(alive)}"
        time.sleep(0.02)
    return time.monotonic() - started


def _kill_during_start_up(server: ServerProcess, delay: float) -> None:
    """Start `custos serve` and SIGKILL it `delay` s later, wherever start-up is then."""
    server.process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "custos.signer.tools.cli",
            "serve",
            "--config",
            str(server.env.config_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    workers = _children(server.process.pid)
    server.process.kill()
    server.process.wait()
    _wait_gone(workers, "HSM workers of a server killed during start-up")


def test_workers_die_with_a_killed_server(own_server: ServerProcess) -> None:
    own_server.start()
    assert own_server.process is not None
    workers = _children(own_server.process.pid)
    assert workers, "the server has no HSM worker processes"
    own_server.process.kill()
    own_server.process.wait()
    took = _wait_gone(workers, "HSM workers of a killed server")
    print(
        f"\n{len(workers)} child processes (HSM workers, resource tracker) gone "
        f"{took:.2f} s after their server's SIGKILL"
    )


@pytest.mark.timeout(120 + 30 * KILLS)  # a kill and restart take ~5-10 s on a busy machine
def test_sigkill_soak_every_restart_succeeds(own_server: ServerProcess) -> None:
    own_server.start()
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="soak", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    received: dict[str, list[str]] = {}
    slowest_exit = 0.0
    rng = random.Random(int(os.environ.get("CUSTOS_SOAK_SEED", "1234")))
    started = time.monotonic()
    for kill in range(KILLS):
        stop = threading.Event()

        def load(stop: threading.Event = stop) -> None:
            stub = signer_pb2_grpc.SignerStub(own_server.channel("payments"))
            while not stop.is_set():
                rid = f"soak-{uuid.uuid4().hex}"
                try:
                    response = stub.SignBatch(
                        pb.SignBatchRequest(
                            request_id=rid,
                            items=[builders.evm_item(key, nonce=i) for i in range(5)],
                        ),
                        timeout=10,
                    )
                except grpc.RpcError:
                    continue  # the server died under us: this result was never received
                received[rid] = [item.tx_id for item in response.items]

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        threading.Event().wait(rng.uniform(0.2, 0.8))
        assert own_server.process is not None
        workers = _children(own_server.process.pid)
        own_server.process.kill()  # SIGKILL: no shutdown, no final checkpoint
        own_server.process.wait()
        stop.set()
        for t in threads:
            t.join()
        slowest_exit = max(slowest_exit, _wait_gone(workers, f"HSM workers after kill {kill + 1}"))
        if kill % 4 == 3:
            # Also kill one start-up midway (workers logging in, set-up keys).
            _kill_during_start_up(own_server, rng.uniform(0.1, 1.5))
        own_server.start()  # fails with the server's log if the restart fails

        # After each restart: the log verifies, and every result a client got is in it.
        signed = {}
        for line in own_server.verified_log():
            record = json.loads(line)
            if record["kind"] == "sign.signed":
                signed[record["fields"]["request_id"]] = [
                    i["tx_id"] for i in record["fields"]["items"]
                ]
        for rid, tx_ids in received.items():
            assert signed.get(rid) == tx_ids, rid
    elapsed = time.monotonic() - started
    print(
        f"\nsoak: {KILLS} SIGKILLs under load (+{KILLS // 4} during start-up), every restart "
        f"succeeded, {len(received)} received results all in the verified log; {elapsed:.0f} s; "
        f"HSM workers gone at most {slowest_exit:.2f} s after their server"
    )
    assert len(received) > KILLS  # the load really ran
