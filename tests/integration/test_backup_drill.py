"""The disaster-recovery drill through the shipped commands (`custos keys backup ...`).

Deployment A signs, sets up its backup key (2-of-3 SLIP-39 shares, one file
each), writes a backup and verifies it; its token directory is then destroyed.
Deployment B (a new token and store from `custos init`) refuses one share,
a share of another backup and a tampered file, keeping nothing, then restores
from two shares: the key has the same address, signs again, and eth-account
recovers that address from both transactions. Both audit logs verify offline,
and B's names the backup file A's log recorded. No share appears in any log,
store, audit record or output.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hsm.backup import recover_backup_key
from proto.custos.v1 import keys_pb2, keys_pb2_grpc, signer_pb2_grpc
from signer.devsetup import init_dev
from tests import builders
from tests.conftest import DevEnv, ServerProcess, _require_softhsm
from tests.second_impl import evm_sender

pytestmark = pytest.mark.integration


def _custos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
        check=False,
    )


def _sign(proc: ServerProcess, key: keys_pb2.Key, nonce: int) -> str:
    """A Sepolia transaction signed by `key`; the sender eth-account recovers from it."""
    reply = signer_pb2_grpc.SignerStub(proc.channel("payments")).SignBatch(
        builders.pb.SignBatchRequest(
            request_id=f"drill-{nonce}", items=[builders.evm_item(key, nonce=nonce)]
        )
    )
    assert len(reply.items) == 1, reply
    return evm_sender(reply.items[0].raw_tx)


def _records(lines: list[bytes], kind: str) -> list[dict[str, object]]:
    decoded = [json.loads(line) for line in lines]
    return [r["fields"] for r in decoded if r["kind"] == kind]


def test_disaster_recovery_drill(tmp_path: Path) -> None:
    _require_softhsm()
    env_a = DevEnv(tmp_path / "a", init_dev(tmp_path / "a", listen="127.0.0.1:0"))
    a = ServerProcess(env_a, "a")
    a.start()
    try:
        key = keys_pb2_grpc.KeysStub(a.channel("officer")).CreateKey(
            keys_pb2.CreateKeyRequest(
                key_id="drill-1", network_class=keys_pb2.NETWORK_CLASS_TESTNET
            )
        )
        address = builders.address(key, "ethereum", "sepolia")
        assert _sign(a, key, 0) == address
    finally:
        a.stop()

    config_a = str(env_a.config_path)
    backup = tmp_path / "custos.backup"
    early = _custos("keys", "backup", str(backup), "--config", config_a)
    assert early.returncode == 1
    assert "the token has no backup key yet: custos keys backup-key init" in early.stderr
    assert not backup.exists()
    shares = [tmp_path / f"share-{i}.txt" for i in (1, 2, 3)]
    made = _custos(
        *("keys", "backup-key", "init", "--threshold", "2", "--shares", "3"),
        *(arg for share in shares for arg in ("--share-file", str(share))),
        *("--config", config_a),
    )
    assert made.returncode == 0, made.stderr
    assert all(oct(s.stat().st_mode & 0o777) == "0o600" for s in shares)
    second = tmp_path / "second-share.txt"
    twice = _custos(
        *("keys", "backup-key", "init", "--threshold", "1", "--shares", "1"),
        *("--share-file", str(second), "--config", config_a),
    )
    assert twice.returncode == 1
    assert "the token has a backup key already" in twice.stderr
    assert not second.exists()
    written = _custos("keys", "backup", str(backup), "--config", config_a)
    assert written.returncode == 0, written.stderr
    assert "keys: drill-1" in written.stdout
    verified = _custos("keys", "backup", "verify", str(backup), "--config", config_a)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "complete" in verified.stdout
    forged = tmp_path / "forged.backup"
    forged.write_text(backup.read_text().replace('"state":"enabled"', '"state":"disabled"', 1))
    refused = _custos("keys", "backup", "verify", str(forged), "--config", config_a)
    assert refused.returncode == 1
    assert "its tag does not verify: the file was tampered with" in refused.stderr
    again = _custos("keys", "backup", str(backup), "--config", config_a)
    assert again.returncode == 2
    assert "exists; a backup file is never overwritten" in again.stderr
    a.start()  # the log with the backup's records, checkpointed and verified offline
    try:
        log_a = a.verified_log()
    finally:
        a.stop()
    (backed_up,) = _records(log_a, "keys.backed_up")
    assert backed_up["key_ids"] == "drill-1"

    shutil.rmtree(env_a.dir / "tokens")  # the disaster

    env_b = DevEnv(tmp_path / "b", init_dev(tmp_path / "b", listen="127.0.0.1:0"))
    config_b = str(env_b.config_path)
    other = tmp_path / "other"
    other_env = DevEnv(other, init_dev(other, listen="127.0.0.1:0"))
    foreign = [other / f"share-{i}.txt" for i in (1, 2)]
    assert (
        _custos(
            *("keys", "backup-key", "init", "--threshold", "2", "--shares", "2"),
            *(arg for share in foreign for arg in ("--share-file", str(share))),
            *("--config", str(other_env.config_path)),
        ).returncode
        == 0
    )
    tampered = forged
    assert tampered.read_text() != backup.read_text()

    def restore(file: Path, *given: Path) -> subprocess.CompletedProcess[str]:
        return _custos(
            *("keys", "restore", str(file)),
            *(arg for share in given for arg in ("--share-file", str(share))),
            *("--config", config_b),
        )

    refusals = {
        "one share": (restore(backup, shares[0]), "1 shares given, this backup key needs 2"),
        "a share of another backup": (
            restore(backup, shares[0], foreign[1]),
            "share 2 belongs to another backup key than share 1",
        ),
        "shares of another backup": (
            restore(backup, *foreign),
            "made under another backup key",
        ),
        "tampered file": (restore(tampered, shares[0], shares[2]), "its tag does not verify"),
    }
    for name, (result, message) in refusals.items():
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert message in result.stderr, (name, result.stderr)
    # Nothing half-restored: the token and store take the whole backup now.
    restored = restore(backup, shares[2], shares[1])
    assert restored.returncode == 0, restored.stderr
    assert "restored 1 key(s): drill-1" in restored.stdout
    repeated = restore(backup, shares[0], shares[1])
    assert repeated.returncode == 1
    assert "the store already has keys" in repeated.stderr

    b = ServerProcess(env_b, "b")
    b.start()
    try:
        again = keys_pb2_grpc.KeysStub(b.channel("officer")).GetKey(
            keys_pb2.GetKeyRequest(key_id="drill-1")
        )
        assert again.public_key == key.public_key
        assert builders.address(again, "ethereum", "sepolia") == address
        assert _sign(b, again, 1) == address
        log_b = b.verified_log()
    finally:
        b.stop()
    (restored_record,) = _records(log_b, "key.restored")
    assert restored_record["key_id"] == "drill-1"
    # The backup A's log names is the one B was restored from.
    assert restored_record["backup_sha256"] == backed_up["sha256"]

    # No share, and no word sequence of one, anywhere it could leak.
    words = [s.read_text().strip() for s in (*shares, *foreign)]
    outputs = (
        "".join(r.stdout + r.stderr for r, _m in refusals.values())
        + restored.stdout
        + restored.stderr
        + made.stdout
        + made.stderr
        + written.stdout
    )
    places = [
        *(p for d in (env_a.dir, env_b.dir, other) for p in d.rglob("*.log")),
        *(p for d in (env_a.dir, env_b.dir, other) for p in d.rglob("*.db")),
        backup,
    ]
    haystacks = [
        outputs,
        b"\n".join(log_a + log_b).decode(),
        *(p.read_text(errors="replace") for p in places),
    ]
    for share in words:
        assert all(share not in h for h in haystacks)
        assert all(" ".join(share.split()[:4]) not in h for h in haystacks)
    # Nor the backup key itself, nor a wrapped key outside the backup file.
    key_value = recover_backup_key(words[:2])
    wrapped = json.loads(backup.read_text())["body"]["keys"][0]["wrapped"]
    for h in (*haystacks, backup.read_text()):
        assert key_value.hex() not in h
        assert base64.b64encode(key_value).decode() not in h
    assert all(wrapped not in h for h in haystacks if h != backup.read_text())
