"""`make bench`: raw SoftHSM signing versus end-to-end SignBatch, in one run.

Figures (written to bench/results.json):
- raw_sign_per_s / raw_sign_p50_ms: one process, one session, C_Sign over
  32-byte digests with CKM_ECDSA: the HSM ceiling the service is measured against.
- e2e_tx_per_s: SignBatch over mTLS to a real `custos serve` process (SQLite
  store, signing worker pool), batches of 100 EVM transactions, 4 concurrent
  clients, each with its own channel.
- single_p50_ms: median latency of a one-item SignBatch, sequential.

Medians and ratios, not single timings: these machines are shared and noisy.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hsm.pkcs11_token import Pkcs11Token  # noqa: E402
from proto.custos.v1 import keys_pb2, keys_pb2_grpc, signer_pb2_grpc  # noqa: E402
from proto.custos.v1 import signer_pb2 as pb  # noqa: E402
from signer.client import ClientProfile  # noqa: E402
from signer.devsetup import init_dev  # noqa: E402

LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"
BATCH = 100
CLIENTS = 4
BATCHES_PER_CLIENT = int(os.environ.get("BENCH_BATCHES", "12"))
RAW_SIGNS = int(os.environ.get("BENCH_RAW_SIGNS", "4000"))


def measure_raw(directory: Path) -> tuple[float, float]:
    """Rate and median latency of raw C_Sign in a separate process (own login)."""
    code = f"""
import hashlib, json, statistics, time
from hsm.pkcs11_token import Pkcs11Token
t = Pkcs11Token({LIBRARY!r}, "custos-dev", open({str(directory / "hsm.pin")!r}).read())
t.generate_secp256k1("bench-raw") if b"bench-raw" else None
digests = [hashlib.sha256(str(i).encode()).digest() for i in range({RAW_SIGNS})]
for d in digests[:200]:
    t.sign_raw("bench-raw", d)
lat = []
start = time.perf_counter()
for d in digests:
    s = time.perf_counter()
    t.sign_raw("bench-raw", d)
    lat.append(time.perf_counter() - s)
total = time.perf_counter() - start
print(json.dumps([len(digests) / total, statistics.median(lat) * 1000]))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "SOFTHSM2_CONF": str(directory / "softhsm2.conf")},
    )
    rate, p50 = json.loads(out.stdout)
    return float(rate), float(p50)


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = directory / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "signer.cli",
            "serve",
            "--config",
            str(directory / "custos.toml"),
            "--port-file",
            str(port_file),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(directory / "server.log").open("wb"),
    )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start; see server.log")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def evm_batch(key_id: str, request_id: str, first_nonce: int, size: int) -> pb.SignBatchRequest:
    items = [
        pb.SignItem(
            key_id=key_id,
            evm=pb.EvmTransaction(
                chain_id=1,
                type=pb.EVM_TX_TYPE_EIP1559,
                nonce=first_nonce + i,
                to="0x3535353535353535353535353535353535353535",
                value=str(10**15 + i),
                gas_limit=21_000,
                max_fee_per_gas="30000000000",
                max_priority_fee_per_gas="1000000000",
            ),
        )
        for i in range(size)
    ]
    return pb.SignBatchRequest(request_id=request_id, items=items)


def measure_e2e(directory: Path, port: int) -> tuple[float, float]:
    endpoint = f"127.0.0.1:{port}"
    officer = ClientProfile.load(directory / "clients" / "officer.toml")
    keys_pb2_grpc.KeysStub(officer.channel(endpoint)).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="bench-e2e")
    )
    profile = ClientProfile.load(directory / "clients" / "payments.toml")
    run = uuid.uuid4().hex[:8]
    # Requests are built before the clock starts: the clients' own cost is not the service's.
    plans = [
        [
            evm_batch("bench-e2e", f"b-{run}-{c}-{n}", (c * 1000 + n) * BATCH, BATCH)
            for n in range(BATCHES_PER_CLIENT)
        ]
        for c in range(CLIENTS)
    ]
    stubs = [signer_pb2_grpc.SignerStub(profile.channel(endpoint)) for _ in range(CLIENTS)]
    for stub in stubs:  # warm-up: connections, worker handle caches
        stub.SignBatch(evm_batch("bench-e2e", f"w-{uuid.uuid4().hex}", 0, BATCH), timeout=60)
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            for request in plans[index]:
                response = stubs[index].SignBatch(request, timeout=120)
                assert len(response.items) == BATCH
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"e2e run failed: {errors[0]!r}")
    rate = CLIENTS * BATCHES_PER_CLIENT * BATCH / elapsed

    latencies = []
    for n in range(300):
        request = evm_batch("bench-e2e", f"s-{run}-{n}", 10**7 + n, 1)
        s = time.perf_counter()
        stubs[0].SignBatch(request, timeout=30)
        latencies.append(time.perf_counter() - s)
    return rate, statistics.median(latencies[50:]) * 1000


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="custos-bench-") as tmp:
        directory = Path(tmp)
        init_dev(directory, listen="127.0.0.1:0")
        os.environ["SOFTHSM2_CONF"] = str(directory / "softhsm2.conf")
        raw_rate, raw_p50 = measure_raw(directory)
        process, port = start_server(directory)
        try:
            e2e_rate, single_p50 = measure_e2e(directory, port)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    results = {
        "raw_sign_per_s": round(raw_rate, 1),
        "raw_sign_p50_ms": round(raw_p50, 3),
        "e2e_tx_per_s": round(e2e_rate, 1),
        "single_p50_ms": round(single_p50, 3),
        "e2e_over_raw": round(e2e_rate / raw_rate, 3),
        "single_minus_raw_ms": round(single_p50 - raw_p50, 3),
        "goals": {
            "e2e_over_raw>=1.0": e2e_rate / raw_rate >= 1.0,
            "single_p50<=raw_p50+3ms": single_p50 <= raw_p50 + 3,
        },
        "setup": {
            "batch_items": BATCH,
            "clients": CLIENTS,
            "batches_per_client": BATCHES_PER_CLIENT,
            "raw_signs": RAW_SIGNS,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    del Pkcs11Token, hashlib  # imported to fail early when the package is not installed
    sys.exit(main())
