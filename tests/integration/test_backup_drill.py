"""The disaster-recovery drill through the shipped service and commands.

Deployment A signs; its officers make the backup key (2-of-2 SLIP-39 shares,
each holder fetching only their own) and a backup in ceremonies (quorum 0
under the development policy), the proposer fetching the file with `custos
keys fetch`; the operator verifies it; A's token directory is then destroyed.
Deployment B (a new token and store from `custos init`) refuses one share,
a share of another backup and a tampered file, keeping nothing, then restores
from both shares: the key has the same address, signs again, and eth-account
recovers that address from both transactions. An HD wallet travels too: before
the disaster it derives an address and a derived key signs; after the restore the
same address derives and the derived key signs again (eth-account recovers it
both times), and a backup whose wallet entry was edited is refused. Both audit
logs verify offline, and B's names the backup file A's log recorded. No share
appears in any log, store, audit record or output.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from custos.hsm.backup import recover_backup_key, split_backup_key
from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc, signer_pb2_grpc
from custos.signer.tools.devsetup import init_dev, subject_string
from tests import builders
from tests.conftest import DevEnv, ServerProcess, _require_softhsm
from tests.integration.test_approvals_e2e import _cli_profile
from tests.second_impl import evm_sender
from tests.support import enroll_totp
from tests.totp import TotpCodes

pytestmark = pytest.mark.integration


def _custos(*args: str, profile: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if profile is not None:
        env["CUSTOS_CLIENT"] = str(profile)
    return subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
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


def _sign_hd(proc: ServerProcess, wallet_id: str, nonce: int) -> tuple[str, str]:
    """A Sepolia transaction signed by the wallet's key m/44'/60'/0'/0/0: (sender, address)."""
    item = builders.evm_item(keys_pb2.Key(key_id="unused"), nonce=nonce)
    item.ClearField("key_id")
    item.hd.CopyFrom(builders.pb.HdKeyRef(wallet_id=wallet_id, index=0))
    reply = signer_pb2_grpc.SignerStub(proc.channel("payments")).SignBatch(
        builders.pb.SignBatchRequest(request_id=f"drill-hd-{nonce}", items=[item])
    )
    assert len(reply.items) == 1, reply
    return evm_sender(reply.items[0].raw_tx), reply.items[0].address


def _derive(proc: ServerProcess, wallet_id: str) -> str:
    account = keys_pb2.WalletAccount(wallet_id=wallet_id, chain="ethereum", network="sepolia")
    reply = keys_pb2_grpc.KeysStub(proc.channel("officer")).DeriveAddresses(
        keys_pb2.DeriveAddressesRequest(account=account, index=0)
    )
    (derived,) = reply.addresses
    assert derived.path == "m/44'/60'/0'/0/0"
    return str(derived.address)


def _records(lines: list[bytes], kind: str) -> list[dict[str, object]]:
    decoded = [json.loads(line) for line in lines]
    return [r["fields"] for r in decoded if r["kind"] == kind]


def test_disaster_recovery_drill(tmp_path: Path) -> None:
    _require_softhsm()
    env_a = DevEnv(tmp_path / "a", init_dev(tmp_path / "a", listen="127.0.0.1:0"))
    a = ServerProcess(env_a, "a")
    a.start()
    backup = tmp_path / "custos.backup"
    try:
        officer = keys_pb2_grpc.KeysStub(a.channel("officer"))
        key = officer.CreateKey(
            keys_pb2.CreateKeyRequest(
                key_id="drill-1", network_class=keys_pb2.NETWORK_CLASS_TESTNET
            )
        )
        address = builders.address(key, "ethereum", "sepolia")
        assert _sign(a, key, 0) == address
        wallet = officer.ProposeKeyCeremony(
            keys_pb2.ProposeKeyCeremonyRequest(
                kind=keys_pb2.CEREMONY_KIND_CREATE_WALLET, wallet_id="drill-w", label="Drill"
            )
        )
        assert wallet.state == "executed", wallet
        hd_address = _derive(a, "drill-w")
        assert _sign_hd(a, "drill-w", 0) == (hd_address, hd_address)
        code = TotpCodes({n: enroll_totp(a.channel, n) for n in ("officer", "officer2")}).code

        def fetch(name: str, ceremony_id: str) -> bytes:
            stub = keys_pb2_grpc.KeysStub(a.channel(name))
            request = keys_pb2.FetchKeyCeremonyResultRequest(
                ceremony_id=ceremony_id, totp_code=code(name)
            )
            return bytes(stub.FetchKeyCeremonyResult(request).data)

        def propose(**fields: object) -> keys_pb2.KeyCeremony:
            request = keys_pb2.ProposeKeyCeremonyRequest(**fields)  # type: ignore[arg-type]
            return officer.ProposeKeyCeremony(request)

        early = propose(kind=keys_pb2.CEREMONY_KIND_BACKUP)
        assert early.state == "executed", early
        with pytest.raises(grpc.RpcError) as no_key:
            fetch("officer", early.ceremony_id)
        assert no_key.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "the token has no backup key yet" in str(no_key.value.details())
        holders = [subject_string(n) for n in ("officer", "officer2")]
        init = propose(kind=keys_pb2.CEREMONY_KIND_BACKUP_KEY_INIT, threshold=2, holders=holders)
        assert init.state == "executed", init
        shares = [tmp_path / f"share-{i}.txt" for i in (1, 2)]
        for path, name in zip(shares, ("officer", "officer2"), strict=True):
            path.write_bytes(fetch(name, init.ceremony_id))
        twice = propose(kind=keys_pb2.CEREMONY_KIND_BACKUP_KEY_INIT, threshold=2, holders=holders)
        assert twice.state == "failed"
        assert "the token has a backup key already" in twice.outcome
        made = propose(kind=keys_pb2.CEREMONY_KIND_BACKUP)
        profile = _cli_profile(env_a, a.port, "officer", tmp_path)
        backup.write_text("taken")
        taken = _custos(
            *("keys", "fetch", made.ceremony_id, "--out", str(backup), "--code", "000000"),
            profile=profile,
        )
        assert taken.returncode == 2
        assert "exists; a result is never written over a file" in taken.stderr
        backup.unlink()
        written = _custos(
            *("keys", "fetch", made.ceremony_id, "--out", str(backup)),
            *("--code", code("officer")),
            profile=profile,
        )
        assert written.returncode == 0, written.stderr
        assert oct(backup.stat().st_mode & 0o777) == "0o600"
        assert "sha256" in written.stdout
    finally:
        a.stop()

    config_a = str(env_a.config_path)
    verified = _custos("keys", "backup", "verify", str(backup), "--config", config_a)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 key(s), 1 wallet(s)" in verified.stdout
    assert "complete" in verified.stdout
    relabelled = tmp_path / "relabelled.backup"
    relabelled.write_text(backup.read_text().replace('"label":"Drill"', '"label":"Drill2"', 1))
    assert relabelled.read_text() != backup.read_text()
    forged = tmp_path / "forged.backup"
    forged.write_text(backup.read_text().replace('"state":"enabled"', '"state":"disabled"', 1))
    refused = _custos("keys", "backup", "verify", str(forged), "--config", config_a)
    assert refused.returncode == 1
    assert "its tag does not verify: the file was tampered with" in refused.stderr
    a.start()  # the log with the backup's records, checkpointed and verified offline
    try:
        log_a = a.verified_log()
    finally:
        a.stop()
    (backed_up,) = _records(log_a, "keys.backed_up")
    assert backed_up["key_ids"] == "drill-1"
    assert backed_up["wallet_ids"] == "drill-w"

    shutil.rmtree(env_a.dir / "tokens")  # the disaster

    env_b = DevEnv(tmp_path / "b", init_dev(tmp_path / "b", listen="127.0.0.1:0"))
    config_b = str(env_b.config_path)
    other = tmp_path / "other"
    other.mkdir()
    foreign = [other / f"share-{i}.txt" for i in (1, 2)]
    for path, share in zip(foreign, split_backup_key(os.urandom(32), 2, 2), strict=True):
        path.write_text(share)
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
        "tampered file": (restore(tampered, shares[0], shares[1]), "its tag does not verify"),
        "tampered wallet entry": (
            restore(relabelled, shares[0], shares[1]),
            "its tag does not verify",
        ),
    }
    for name, (result, message) in refusals.items():
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert message in result.stderr, (name, result.stderr)
    # Nothing half-restored: the token and store take the whole backup now.
    restored = restore(backup, shares[1], shares[0])
    assert restored.returncode == 0, restored.stderr
    assert "restored 1 key(s): drill-1" in restored.stdout
    assert "restored 1 wallet(s): drill-w" in restored.stdout
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
        assert _derive(b, "drill-w") == hd_address
        assert _sign_hd(b, "drill-w", 1) == (hd_address, hd_address)
        log_b = b.verified_log()
    finally:
        b.stop()
    (restored_record,) = _records(log_b, "key.restored")
    assert restored_record["key_id"] == "drill-1"
    # The backup A's log names is the one B was restored from.
    assert restored_record["backup_sha256"] == backed_up["sha256"]
    (restored_wallet,) = _records(log_b, "wallet.restored")
    assert (restored_wallet["wallet_id"], restored_wallet["label"]) == ("drill-w", "Drill")

    # No share, and no word sequence of one, anywhere it could leak.
    words = [s.read_text().strip() for s in (*shares, *foreign)]
    outputs = (
        "".join(r.stdout + r.stderr for r, _m in refusals.values())
        + restored.stdout
        + restored.stderr
        + written.stdout
        + written.stderr
    )
    places = [
        *(p for d in (env_a.dir, env_b.dir) for p in d.rglob("*.log")),
        *(p for d in (env_a.dir, env_b.dir) for p in d.rglob("*.db")),
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
