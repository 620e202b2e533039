"""A hostile database against the audit log, through real `custos serve` processes.

The attacker can write every table (SQLite file or PostgreSQL schema) but holds
neither the HSM nor the service host. They rewrite and re-chain records (with
and without deleting the checkpoint rows), delete records, reorder them, or
restore an older copy of the store. In every case the restarted service signs
nothing (FAILED_PRECONDITION naming the audit log), health says NOT_SERVING,
the server log says what is wrong, and `custos audit verify` of a fresh export
against the checkpoints an auditor saved earlier fails, naming the problem.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.audit.record import AuditEvent, AuditRecord, ChainHead, next_record
from custos.proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import DevEnv, ServerProcess
from tests.second_impl import evm_sender

pytestmark = pytest.mark.integration

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class Database:
    """Plain SQL on the store of a deployment, as an attacker with the database has it."""

    def __init__(self, sqlite_path: Path | None = None, pg: tuple[str, str] | None = None):
        self._sqlite = sqlite_path
        self._pg = pg

    def _connect(self) -> Any:
        if self._sqlite is not None:
            return sqlite3.connect(self._sqlite, timeout=30)
        assert self._pg is not None
        url, schema = self._pg
        conn = psycopg.connect(url, autocommit=False)
        conn.execute(f"SET search_path TO {schema}")
        # The append-only trigger stops mistakes, not a database administrator.
        conn.execute("SET session_replication_role = replica")
        return conn

    def run(self, work: Callable[[Callable[..., Any]], Any]) -> Any:
        conn = self._connect()
        try:

            def q(sql: str, params: tuple[Any, ...] = ()) -> Any:
                if self._pg is not None:
                    sql = sql.replace("?", "%s")
                return conn.execute(sql, params)

            result = work(q)
            if self._pg is not None:
                # A thorough attacker also moves PostgreSQL's head row to the forged end.
                q(
                    "UPDATE audit_head SET seq = last.seq, hash = last.hash FROM (SELECT seq, hash"
                    " FROM audit_log ORDER BY seq DESC LIMIT 1) AS last"
                )
            conn.commit()
            return result
        finally:
            conn.close()

    def records(self) -> list[AuditRecord]:
        rows = self.run(lambda q: q("SELECT record FROM audit_log ORDER BY seq").fetchall())
        return [AuditRecord.decode(bytes(r[0])) for r in rows]

    def replace_from(self, start: int, records: list[AuditRecord]) -> None:
        """Delete records from `start` on and insert `records`, each with a correct hash."""

        def work(q: Callable[..., Any]) -> None:
            q("DELETE FROM audit_log WHERE seq >= ?", (start,))
            for record in records:
                q(
                    "INSERT INTO audit_log (seq, record, hash) VALUES (?, ?, ?)",
                    (record.seq, record.encode(), record.leaf_hash()),
                )

        self.run(work)

    def set_raw(self, seq: int, data: bytes, leaf: bytes) -> None:
        self.run(
            lambda q: q(
                "UPDATE audit_log SET record = ?, hash = ? WHERE seq = ?", (data, leaf, seq)
            )
        )

    def delete_checkpoints(self) -> None:
        self.run(lambda q: q("DELETE FROM audit_checkpoints"))

    def delete_records_from(self, seq: int) -> None:
        self.run(lambda q: q("DELETE FROM audit_log WHERE seq >= ?", (seq,)))


def rechain(
    records: list[AuditRecord], start: int, keep: Callable[[AuditRecord], bool] = lambda _r: True
) -> list[AuditRecord]:
    """Records from `start` on, with forged request ids, every link and seq recomputed."""
    prev = records[start - 1]
    head = ChainHead(prev.seq, prev.leaf_hash())
    out = []
    for record in records[start:]:
        if not keep(record):
            continue
        fields = dict(record.event.fields)
        if "request_id" in fields:
            fields["request_id"] = "forged-" + str(fields["request_id"])
        forged = next_record(
            head, AuditEvent(record.event.kind, record.event.actor, fields), record.ts_ms
        )
        out.append(forged)
        head = ChainHead(forged.seq, forged.leaf_hash())
    return out


@dataclass
class Deployment:
    server: ServerProcess
    db: Database
    key: keys_pb2.Key | None = None

    @property
    def env(self) -> DevEnv:
        return self.server.env

    def fingerprint(self) -> str:
        fp = self.env.config().audit.key_fingerprint
        assert fp is not None
        return fp

    def sign(self) -> pb.SignBatchResponse:
        assert self.key is not None
        stub = signer_pb2_grpc.SignerStub(self.server.channel("payments"))
        request = pb.SignBatchRequest(
            request_id=f"i-{uuid.uuid4().hex}", items=[builders.evm_item(self.key)]
        )
        response: pb.SignBatchResponse = stub.SignBatch(request, timeout=30)
        return response

    def sign_checked(self, count: int) -> None:
        assert self.key is not None
        for _ in range(count):
            response = self.sign()
            assert evm_sender(response.items[0].raw_tx) == builders.address(
                self.key, "ethereum", "sepolia"
            )

    def cli(self, *args: str, client: str | None = "auditor") -> subprocess.CompletedProcess[str]:
        extra: list[str] = []
        if client is not None:
            profile = self.env.dir / "clients" / f"{client}.toml"
            profile.write_text(
                "\n".join(
                    f'endpoint = "127.0.0.1:{self.server.port}"'
                    if line.startswith("endpoint")
                    else line
                    for line in profile.read_text().splitlines()
                )
                + "\n"
            )
            extra = ["--client", str(profile)]
        return subprocess.run(
            [sys.executable, "-m", "custos.signer.tools.cli", *args, *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
            check=False,
        )

    def health(self) -> int:
        stub = health_pb2_grpc.HealthStub(self.server.channel("auditor"))
        request = health_pb2.HealthCheckRequest(service="custos.v1.Signer")
        return int(stub.Check(request, timeout=10).status)

    def log_text(self) -> str:
        return (self.env.dir / f"{self.server.name}.log").read_text(errors="replace")


def _sqlite_deployment(env: DevEnv) -> Deployment:
    return Deployment(ServerProcess(env), Database(sqlite_path=env.dir / "custos.db"))


def _pg_deployment(env: DevEnv, url: str, schema: str) -> Deployment:
    text = env.config_path.read_text()
    old = next(line for line in text.splitlines() if line.startswith("url = "))
    env.config_path.write_text(text.replace(old, f'url = "{url}?schema={schema}"'))
    return Deployment(ServerProcess(env), Database(pg=(url, schema)))


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_env: Callable[[Path], DevEnv]
) -> Iterator[Deployment]:
    env = fresh_env(tmp_path / "env")
    if request.param == "sqlite":
        made = _sqlite_deployment(env)
    else:
        url = request.getfixturevalue("postgres_url")
        made = _pg_deployment(env, url, request.getfixturevalue("pg_schema"))
    yield made
    made.server.stop()


@pytest.fixture
def sqlite_deployment(tmp_path: Path, fresh_env: Callable[[Path], DevEnv]) -> Iterator[Deployment]:
    made = _sqlite_deployment(fresh_env(tmp_path / "env"))
    yield made
    made.server.stop()


def _history(d: Deployment, saved: Path) -> None:
    """Sign, let the auditor export (saving every checkpoint), sign more, export again, stop."""
    d.server.start()
    d.key = keys_pb2_grpc.KeysStub(d.server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="audited", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    d.sign_checked(3)
    first = d.cli("audit", "export", "--out", str(saved))
    assert first.returncode == 0, first.stderr
    d.sign_checked(3)
    made = d.cli("audit", "checkpoint", client="officer")
    assert made.returncode == 0, made.stderr
    second = d.cli("audit", "export", "--out", str(saved))
    assert second.returncode == 0, second.stderr
    assert len(list(Path(f"{saved}.checkpoints").glob("*.note"))) >= 2
    ok = _verify(d, saved, Path(f"{saved}.checkpoints"))
    assert ok.returncode == 0, ok.stderr + ok.stdout
    d.server.stop()  # a clean stop: a final checkpoint, and the witness file


def _verify(d: Deployment, export: Path, saved: Path) -> subprocess.CompletedProcess[str]:
    return d.cli(
        "audit",
        "verify",
        str(export),
        "--public-key",
        f"{export}.pub.pem",
        "--checkpoint",
        str(saved),
        "--key-fingerprint",
        d.fingerprint(),
        client=None,
    )


def _assert_refuses(d: Deployment, why: str) -> None:
    """Health NOT_SERVING, no signature, no checkpoint; the log says what is wrong."""
    assert d.health() == NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        d.sign()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "audit log" in (info.value.details() or "")
    assert why in (info.value.details() or ""), info.value.details()
    officer = audit_pb2_grpc.AuditStub(d.server.channel("officer"))
    with pytest.raises(grpc.RpcError) as info:
        officer.CreateCheckpoint(audit_pb2.CreateCheckpointRequest())
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "AUDIT LOG INTEGRITY FAILURE" in d.log_text()
    assert why in d.log_text()


def _auditor_catches(d: Deployment, tmp_path: Path, saved: Path, why: str) -> None:
    """A fresh export of everything the store holds fails against the saved checkpoints."""
    after = tmp_path / "after.jsonl"
    exported = d.cli("audit", "export", "--out", str(after), "--to", str(10**9))
    assert exported.returncode == 0, exported.stderr
    result = _verify(d, after, Path(f"{saved}.checkpoints"))
    assert result.returncode == 1, result.stdout
    assert why in result.stderr, result.stderr
    assert ".note)" in result.stderr  # the saved checkpoint is named by its file


def _first(records: list[AuditRecord], kind: str) -> int:
    return next(r.seq for r in records if r.event.kind == kind)


def test_rechained_rewrite_with_checkpoints_kept_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    saved = tmp_path / "saved.jsonl"
    _history(deployment, saved)
    records = deployment.db.records()
    start = _first(records, "sign.signed")
    deployment.db.replace_from(start, rechain(records, start))
    deployment.server.start()
    _assert_refuses(deployment, "do not match")
    _auditor_catches(deployment, tmp_path, saved, "does not match the export")


def test_rechained_rewrite_with_checkpoints_deleted_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    saved = tmp_path / "saved.jsonl"
    _history(deployment, saved)
    records = deployment.db.records()
    start = _first(records, "sign.signed")
    deployment.db.delete_checkpoints()
    # The checkpoints' own records go too: the forged log looks like one never checkpointed.
    forged = rechain(records, start, keep=lambda r: r.event.kind != "audit.checkpoint")
    deployment.db.replace_from(start, forged)
    deployment.server.start()
    _assert_refuses(deployment, "witness file")
    _auditor_catches(deployment, tmp_path, saved, "checkpoint #")


def test_deleted_records_are_refused(deployment: Deployment, tmp_path: Path) -> None:
    saved = tmp_path / "saved.jsonl"
    _history(deployment, saved)
    size = len(deployment.db.records())
    deployment.db.delete_records_from(size - 6)  # covered by the final checkpoint
    deployment.server.start()
    _assert_refuses(deployment, "were deleted")
    # The restarted service appends records of its own (start, refusals) where the
    # deleted ones were, so the saved checkpoints see a mismatch or a truncation.
    _auditor_catches(deployment, tmp_path, saved, "checkpoint #")


def test_reordered_records_are_refused(sqlite_deployment: Deployment, tmp_path: Path) -> None:
    d = sqlite_deployment
    saved = tmp_path / "saved.jsonl"
    _history(d, saved)
    records = d.db.records()
    k = _first(records, "sign.signed")
    a, b = records[k], records[k + 1]
    d.db.set_raw(k, b.encode(), b.leaf_hash())
    d.db.set_raw(k + 1, a.encode(), a.leaf_hash())
    d.server.start()
    _assert_refuses(d, f"record {k} carries sequence number {k + 1}")
    _auditor_catches(d, tmp_path, saved, f"record {k}")


def test_a_hash_column_that_lies_is_refused(sqlite_deployment: Deployment, tmp_path: Path) -> None:
    """The stored hash is never trusted: a record altered with its old hash kept is caught."""
    d = sqlite_deployment
    _history(d, tmp_path / "saved.jsonl")
    records = d.db.records()
    k = _first(records, "sign.signed")
    data = records[k].encode().replace(b'"tx_id":"0x', b'"tx_id":"0y', 1)
    d.db.set_raw(k, data, records[k].leaf_hash())
    d.server.start()
    _assert_refuses(d, f"the stored hash of record {k} does not match its bytes")


def test_a_restored_older_copy_of_the_store_is_refused(
    sqlite_deployment: Deployment, tmp_path: Path
) -> None:
    """Rollback of records AND checkpoint rows together: only the witness file can tell."""
    d = sqlite_deployment
    saved = tmp_path / "saved.jsonl"
    d.server.start()
    d.key = keys_pb2_grpc.KeysStub(d.server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="audited", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    d.sign_checked(2)
    assert d.cli("audit", "checkpoint", client="officer").returncode == 0
    backup = tmp_path / "backup.db"
    with sqlite3.connect(d.env.dir / "custos.db") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    d.sign_checked(3)
    # The auditor saw a checkpoint past the backup: only then can they tell a rollback.
    assert d.cli("audit", "checkpoint", client="officer").returncode == 0
    assert d.cli("audit", "export", "--out", str(saved)).returncode == 0
    d.server.stop()
    for suffix in ("-wal", "-shm"):
        Path(f"{d.env.dir / 'custos.db'}{suffix}").unlink(missing_ok=True)
    backup.replace(d.env.dir / "custos.db")
    d.server.start()
    _assert_refuses(d, "rolled back")
    _auditor_catches(d, tmp_path, saved, "checkpoint #")


def test_records_deleted_while_running_stop_signing_at_once(deployment: Deployment) -> None:
    """The service remembers what it verified: the log may never shrink or change below it."""
    d = deployment
    d.server.start()
    d.key = keys_pb2_grpc.KeysStub(d.server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="audited", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    d.sign_checked(4)
    # A checkpoint is made only over records the service verified: after it, the
    # service has seen every record below its size (later ones may still be unread,
    # and deleting a record nobody has read yet is the bound the README states).
    officer = audit_pb2_grpc.AuditStub(d.server.channel("officer"))
    size = officer.CreateCheckpoint(audit_pb2.CreateCheckpointRequest()).size
    d.db.delete_records_from(size - 3)  # the newest records, checkpoint record included
    # Signing stops once the periodic check (every second) has seen it; until then
    # a signature is still possible, so poll without asserting on time.
    refused = None
    for _ in range(600):
        try:
            d.sign_checked(1)
        except grpc.RpcError as exc:
            refused = exc
            break
    assert refused is not None
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "audit log" in (refused.details() or "")
    assert "deleted" in (refused.details() or "") or "changed" in (refused.details() or "")
    # The failure wakes the health monitor's thread: poll until it has published.
    for _ in range(5000):
        if d.health() == NOT_SERVING:
            break
    else:
        pytest.fail("health never became NOT_SERVING")
    assert all(d.health() == NOT_SERVING for _ in range(5))  # and it stays so
