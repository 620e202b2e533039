"""Offline audit verification speed: verify_export over a 1,000,000-record export.

Generates realistic "sign.signed" records (caller subject, request id, items
with key id, chain and tx id; ~250-400 bytes each) hash-chained as the service
writes them, a checkpoint every 10,000 records signed by a local Ed25519 key,
writes the export file, then times verify_export_files over it (reading the
file is part of what an auditor waits for). Prints JSON with
audit_verify_records_per_s; the target on the 2-core dev machines is 200,000.

    .venv/bin/python bench/audit_verify_bench.py [--records N] [--every N] [--repeat N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from custos.audit.checkpoint import Checkpoint, public_key_pem, sign_note  # noqa: E402
from custos.audit.export import write_export  # noqa: E402
from custos.audit.merkle import TreeBuilder  # noqa: E402
from custos.audit.record import AuditEvent, ChainHead, next_record  # noqa: E402
from custos.audit.verify import verify_export_files  # noqa: E402

KEY_NAME = "custos.example/audit"
CHAINS = [
    ("ethereum", "evm"),
    ("bsc", "evm"),
    ("bitcoin", "btc"),
    ("tron", "tron"),
]
CALLERS = ["CN=payments,O=Custos dev", "CN=treasury-bot,O=Custos dev", "CN=settlement,O=Custos"]


def _tx_id(rng: random.Random, kind: str) -> str:
    raw = rng.getrandbits(256).to_bytes(32, "big").hex()
    return "0x" + raw if kind == "evm" else raw


def records(n: int, seed: int = 7) -> Iterator[bytes]:
    """Encoded, chained "sign.signed" records, like the pipeline writes after signing."""
    rng = random.Random(seed)
    head: ChainHead | None = None
    ts = 1_760_000_000_000
    for _ in range(n):
        items = []
        for _ in range(1 if rng.random() < 0.8 else 2):
            chain, kind = rng.choice(CHAINS)
            items.append(
                {
                    "key_id": f"{chain}-hot-{rng.randrange(8)}",
                    "chain": chain,
                    "tx_id": _tx_id(rng, kind),
                }
            )
        event = AuditEvent(
            "sign.signed",
            rng.choice(CALLERS),
            {"request_id": str(uuid.UUID(int=rng.getrandbits(128))), "items": items},
        )
        ts += rng.randrange(1, 40)
        record = next_record(head, event, ts)
        data = record.encode()
        leaf = hashlib.sha256(b"\x00" + data).digest()
        head = ChainHead(record.seq, leaf)
        yield data


def build(directory: Path, n: int, every: int) -> tuple[Path, Path, list[Path], float]:
    """Export file, public key PEM, checkpoint files and the mean record size."""
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    tree = TreeBuilder()
    checkpoints: list[Path] = []
    total = 0

    def tapped() -> Iterator[bytes]:
        nonlocal total
        for data in records(n):
            total += len(data)
            tree.append(hashlib.sha256(b"\x00" + data).digest())
            if tree.size % every == 0 or tree.size == n:
                note = sign_note(
                    Checkpoint(KEY_NAME, tree.size, tree.root()), KEY_NAME, raw, key.sign
                )
                path = directory / f"checkpoint-{tree.size}.txt"
                path.write_text(note, encoding="utf-8")
                checkpoints.append(path)
            yield data

    export = directory / "audit-export.jsonl"
    write_export(tapped(), export)
    pem = directory / "audit-key.pem"
    pem.write_bytes(public_key_pem(raw))
    return export, pem, checkpoints, total / n


def main() -> None:
    """Build the export once, verify it --repeat times, print the median rate as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="custos-audit-bench-") as tmp:
        start = time.perf_counter()
        export, pem, checkpoints, mean_size = build(Path(tmp), args.records, args.every)
        build_s = time.perf_counter() - start
        rates = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            report = verify_export_files(export, pem, checkpoints, KEY_NAME)
            elapsed = time.perf_counter() - start
            if not report.ok or report.records != args.records:
                raise SystemExit(f"verification failed:\n{report.summary()}")
            rates.append(args.records / elapsed)
        print(
            json.dumps(
                {
                    "audit_verify_records_per_s": round(statistics.median(rates)),
                    "runs_records_per_s": [round(r) for r in rates],
                    "records": args.records,
                    "checkpoints": report.checkpoints_verified,
                    "mean_record_bytes": round(mean_size, 1),
                    "export_bytes": export.stat().st_size,
                    "build_s": round(build_s, 1),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
