"""`custos audit verify` offline: saved checkpoints, a pinned key fingerprint, defaults."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from custos.audit.checkpoint import Checkpoint, public_key_pem, sign_note
from custos.audit.merkle import root
from custos.audit.record import AuditEvent, ChainHead, next_record
from custos.signer.tools.cli import main

KEY_NAME = "custos-audit"
ORIGIN = "custos.local/audit"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _log(count: int) -> list[bytes]:
    head: ChainHead | None = None
    out = []
    for i in range(count):
        record = next_record(head, AuditEvent("sign.signed", "CN=x", {"i": i}), 1000 + i)
        out.append(record.encode())
        head = ChainHead(record.seq, record.leaf_hash())
    return out


def _note(key: Ed25519PrivateKey, records: list[bytes], size: int) -> str:
    leaves = [hashlib.sha256(b"\x00" + r).digest() for r in records[:size]]
    return sign_note(Checkpoint(ORIGIN, size, root(leaves)), KEY_NAME, _raw(key), key.sign)


def _export(tmp_path: Path, key: Ed25519PrivateKey, records: list[bytes], sizes: list[int]) -> Path:
    """An export as `custos audit export` writes it: records, every checkpoint, the key."""
    out = tmp_path / "log.jsonl"
    out.write_bytes(b"".join(r + b"\n" for r in records))
    kept = tmp_path / "log.jsonl.checkpoints"
    kept.mkdir(exist_ok=True)
    for size in sizes:
        (kept / f"{size:012d}.note").write_text(_note(key, records, size))
    Path(f"{out}.pub.pem").write_bytes(public_key_pem(_raw(key)))
    return out


def _verify(export: Path, *extra: str) -> int:
    return main(["audit", "verify", str(export), "--public-key", f"{export}.pub.pem", *extra])


def test_without_checkpoint_option_the_exports_own_checkpoints_are_used(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path, key, _log(10), [4, 10])
    assert _verify(export) == 0
    assert "2 signed checkpoint(s) verified" in capsys.readouterr().out


def test_no_checkpoint_anywhere_is_a_clear_usage_error(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path, key, _log(3), [])
    (tmp_path / "log.jsonl.checkpoints").rmdir()
    assert _verify(export) == 2
    assert "no checkpoint to verify against" in capsys.readouterr().err


def test_the_pinned_fingerprint_must_match_the_key_file(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path, key, _log(5), [5])
    right = hashlib.sha256(_raw(key)).hexdigest()
    assert _verify(export, "--key-fingerprint", right) == 0
    # The server (or whoever wrote the export) swapped the key and re-signed everything.
    other = Ed25519PrivateKey.generate()
    (tmp_path / "forged").mkdir()
    forged = _export(tmp_path / "forged", other, _log(5), [5])
    assert _verify(forged) == 0  # self-consistent: only the pin tells
    capsys.readouterr()
    assert _verify(forged, "--key-fingerprint", right) == 1
    err = capsys.readouterr().err
    assert "not the log's audit key" in err
    assert right in err


def test_a_saved_checkpoint_beyond_the_export_names_the_truncation(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _log(12)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "000000000012.note").write_text(_note(key, records, 12))
    # Later the server exports only 8 records, with a checkpoint of its own at 8.
    export = _export(tmp_path, key, records[:8], [8])
    assert (
        _verify(
            export,
            "--checkpoint",
            str(saved),
            "--checkpoint",
            str(tmp_path / "log.jsonl.checkpoints"),
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "covers 12 records, export holds 8: the tail was truncated" in err
    assert "000000000012.note" in err  # the auditor's own file is named


def test_a_saved_checkpoint_the_rewritten_export_no_longer_matches(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _log(6)
    saved = tmp_path / "saved.note"
    saved.write_text(_note(key, records, 6))
    rewritten = _log(6)
    rewritten[2] = rewritten[2].replace(b'"i":2', b'"i":9')
    export = _export(tmp_path, key, rewritten, [])
    assert _verify(export, "--checkpoint", str(saved)) == 1
    err = capsys.readouterr().err
    assert "saved.note" in err
    assert "record 2" in err


def test_a_bad_public_key_file_is_an_error_not_a_traceback(
    tmp_path: Path, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    export = _export(tmp_path, key, _log(2), [2])
    Path(f"{export}.pub.pem").write_text("not a key")
    assert _verify(export) == 2
    assert "cannot verify" in capsys.readouterr().err
