"""The audit log through the real server: checkpoints signed in the HSM, proofs,
export and offline verification with the CLI, and a crash test with SIGKILL."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from custos.audit.checkpoint import load_public_key_pem, open_note
from custos.audit.merkle import verify_consistency, verify_inclusion
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
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration


def _cli(server: ServerProcess, identity: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = server.env.dir / "clients" / f"{identity}.toml"
    profile.write_text(
        "\n".join(
            f'endpoint = "127.0.0.1:{server.port}"' if line.startswith("endpoint") else line
            for line in profile.read_text().splitlines()
        )
        + "\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *args, "--client", str(profile)]
        if args[1] != "verify"
        else [sys.executable, "-m", "custos.signer.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


def _sign_some(server: ServerProcess, key: keys_pb2.Key, count: int) -> list[pb.SignBatchResponse]:
    stub = signer_pb2_grpc.SignerStub(server.channel("payments"))
    return [
        stub.SignBatch(
            pb.SignBatchRequest(
                request_id=f"a-{uuid.uuid4().hex}",
                items=[builders.evm_item(key, nonce=n), builders.tron_item(key)],
            ),
            timeout=30,
        )
        for n in range(count)
    ]


def _rechain(lines: list[bytes], start: int, forged_fields: dict[str, object]) -> list[bytes]:
    """Rewrite records from `start` on with other content, every hash link recomputed."""
    out = lines[:start]
    prev = AuditRecord.decode(lines[start - 1].rstrip(b"\n"))
    head = ChainHead(prev.seq, prev.leaf_hash())
    for line in lines[start:]:
        record = AuditRecord.decode(line.rstrip(b"\n"))
        event = AuditEvent(
            record.event.kind, record.event.actor, {**record.event.fields, **forged_fields}
        )
        forged = next_record(head, event, record.ts_ms)
        out.append(forged.encode() + b"\n")
        head = ChainHead(forged.seq, forged.leaf_hash())
    return out


def _other_key_checkpoint(note: str, tmp_path: Path) -> Path:
    """The same checkpoint body signed by a key that is not the log's."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from custos.audit.checkpoint import sign_text

    other = Ed25519PrivateKey.generate()
    raw = other.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body = note.split("\n\n", maxsplit=1)[0] + "\n"
    path = tmp_path / "other.checkpoint"
    path.write_text(sign_text(body, "custos-audit", raw, other.sign))
    return path


def test_export_verifies_offline_and_every_tampering_is_caught(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    own_server.start()
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="audited", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    _sign_some(own_server, key, 5)
    made = _cli(own_server, "officer", "audit", "checkpoint")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("custos.local/audit\n")
    out = tmp_path / "log.jsonl"
    exported = _cli(own_server, "auditor", "audit", "export", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    checkpoint = Path(f"{out}.checkpoint")

    def verify(lines: list[bytes], note: Path = checkpoint) -> subprocess.CompletedProcess[str]:
        out.write_bytes(b"".join(lines))
        return _cli(
            own_server,
            "auditor",
            "audit",
            "verify",
            str(out),
            "--public-key",
            f"{out}.pub.pem",
            "--checkpoint",
            str(note),
        )

    lines = out.read_bytes().splitlines(keepends=True)
    ok = verify(lines)
    assert ok.returncode == 0, ok.stderr + ok.stdout
    assert "OK:" in ok.stdout
    kinds = [AuditRecord.decode(line.rstrip(b"\n")).event.kind for line in lines]
    assert {"service.started", "key.created", "sign.authorized", "sign.signed"} <= set(kinds)
    signed_at = kinds.index("sign.signed")

    one_byte = lines.copy()
    one_byte[signed_at] = one_byte[signed_at].replace(b'"tx_id":"0x', b'"tx_id":"0y', 1)
    deleted = lines[:signed_at] + lines[signed_at + 1 :]
    swapped = lines.copy()
    swapped[signed_at], swapped[signed_at + 1] = swapped[signed_at + 1], swapped[signed_at]
    cases = {
        "one byte changed": (one_byte, checkpoint, f"record {signed_at}"),
        "record deleted": (deleted, checkpoint, f"record {signed_at}"),
        "records swapped": (swapped, checkpoint, f"record {signed_at}"),
        "tail truncated": (lines[:-3], checkpoint, "truncat"),
        "forged suffix re-chained": (
            _rechain(lines, signed_at, {"request_id": "forged"}),
            checkpoint,
            "checkpoint",
        ),
        "checkpoint by another key": (
            lines,
            _other_key_checkpoint(checkpoint.read_text(), tmp_path),
            "key",
        ),
    }
    for name, (tampered, note, expected) in cases.items():
        result = verify(tampered, note)
        assert result.returncode == 1, name
        assert expected in result.stderr, (name, result.stderr)

    # Records the checkpoint does not cover prove nothing: refused unless accepted explicitly.
    extra = _rechain([*lines, lines[-1]], len(lines), {})
    uncovered = verify(extra)
    assert uncovered.returncode == 1
    assert "not covered" in uncovered.stderr


def test_proofs_from_the_server_verify_against_its_signed_checkpoints(
    own_server: ServerProcess,
) -> None:
    own_server.start()
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="proved", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    officer = audit_pb2_grpc.AuditStub(own_server.channel("officer"))
    auditor = audit_pb2_grpc.AuditStub(own_server.channel("auditor"))
    first = officer.CreateCheckpoint(audit_pb2.CreateCheckpointRequest())
    _sign_some(own_server, key, 4)
    second = officer.CreateCheckpoint(audit_pb2.CreateCheckpointRequest())
    key_info = auditor.GetAuditKey(audit_pb2.GetAuditKeyRequest())
    public = load_public_key_pem(key_info.public_key_pem.encode())
    cp1 = open_note(first.note, key_info.key_name, public)
    cp2 = open_note(second.note, key_info.key_name, public)
    assert (cp1.size, cp2.size) == (first.size, second.size)
    assert cp2.size > cp1.size
    for seq in (0, cp1.size - 1, cp2.size - 1):
        proof = auditor.GetInclusionProof(
            audit_pb2.GetInclusionProofRequest(seq=seq, tree_size=cp2.size)
        )
        assert verify_inclusion(proof.leaf_hash, seq, cp2.size, list(proof.hashes), cp2.root)
        assert not verify_inclusion(proof.leaf_hash, seq, cp2.size, list(proof.hashes), cp1.root)
    consistency = auditor.GetConsistencyProof(
        audit_pb2.GetConsistencyProofRequest(from_size=cp1.size, to_size=cp2.size)
    )
    assert verify_consistency(cp1.size, cp2.size, cp1.root, cp2.root, list(consistency.hashes))
    streamed = list(auditor.StreamRecords(audit_pb2.StreamRecordsRequest(from_seq=0)))
    assert [r.seq for r in streamed] == list(range(len(streamed)))
    assert base64.b64decode(second.note.splitlines()[2]) == cp2.root
    with pytest.raises(grpc.RpcError) as info:
        auditor.GetInclusionProof(audit_pb2.GetInclusionProofRequest(seq=10**6))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
