"""A restore registers every key record in one store transaction: a failure midway
leaves no record, no audit record and (through the token's discard) no token key,
and the same restore then succeeds. The token is a stand-in; the store is real."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from custos.hsm.backup_file import FORMAT, BackupEntry, VerifyReport
from custos.signer.store import sql
from custos.signer.store.factory import open_store
from custos.signer.usecases import backups as backups_module
from custos.signer.usecases.authenticity import StateAuthenticator
from custos.signer.usecases.backups import BACKUP_KEY_ID, KeyBackups

KEY_IDS = ("restored-1", "restored-2", "restored-3")


def _entry(key_id: str) -> dict[str, Any]:
    public = PrivateKey(hashlib.sha256(key_id.encode()).digest()).public_key.format(False)
    record = {
        "state": "enabled",
        "created_by": "officer",
        "created_at_ms": 1,
        "network_class": "testnet",
        "origin": "generated",
        "version": 1,
    }
    return {"key_id": key_id, "public_key": public.hex(), "wrapped": "AAAA", "record": record}


BODY = {
    "format": FORMAT,
    "created_at_ms": 1,
    "backup_key_check": "00" * 32,
    "keys": [_entry(k) for k in KEY_IDS],
}
DATA = json.dumps({"body": BODY, "tag": "00" * 40}).encode()


class _Token:
    """Restores the file's entries as they are (the real token checks tags and unwraps)."""

    def __init__(self) -> None:
        self.discarded: list[tuple[str, list[str]]] = []

    def restore_backup(
        self, backup_key_id: str, shares: Sequence[str], data: bytes
    ) -> tuple[BackupEntry, ...]:
        body = json.loads(data)["body"]
        return tuple(
            BackupEntry(e["key_id"], bytes.fromhex(e["public_key"]), e["record"])
            for e in body["keys"]
        )

    def discard_restore(self, backup_key_id: str, key_ids: Sequence[str]) -> None:
        self.discarded.append((backup_key_id, list(key_ids)))

    def create_backup_key(self, key_id: str, threshold: int, count: int) -> list[str]:
        raise NotImplementedError

    def make_backup(
        self, backup_key_id: str, entries: Sequence[BackupEntry], created_at_ms: int
    ) -> tuple[bytes, tuple[str, ...]]:
        raise NotImplementedError

    def verify_backup(
        self, backup_key_id: str, data: bytes, current: Mapping[str, bytes]
    ) -> VerifyReport:
        raise NotImplementedError


def _integrity() -> StateAuthenticator:
    key = b"k" * 32
    return StateAuthenticator(
        lambda messages: [hmac.new(key, m, hashlib.sha256).digest() for m in messages]
    )


def test_a_failure_midway_leaves_nothing_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    token = _Token()
    restorer = KeyBackups(store, token, _integrity())
    real_insert = sql._insert_key
    inserted: list[str] = []

    def failing_insert(tx: Any, key: Any) -> bool:
        if len(inserted) == 2:  # the third key: after two rows are written in the transaction
            raise RuntimeError("injected store failure")
        inserted.append(key.key_id)
        return real_insert(tx, key)

    try:
        monkeypatch.setattr(sql, "_insert_key", failing_insert)
        with pytest.raises(RuntimeError, match="injected"):
            restorer.restore("operator", DATA, ["share"])
        assert inserted == ["restored-1", "restored-2"]  # it did fail midway
        assert store.list_keys() == []
        assert [r.event.kind for r in store.audit_records(0, 100)] == []
        assert token.discarded == [(BACKUP_KEY_ID, list(KEY_IDS))]

        monkeypatch.setattr(sql, "_insert_key", real_insert)
        restored = restorer.restore("operator", DATA, ["share"])
        assert [r.key_id for r in restored] == list(KEY_IDS)
        assert [r.key_id for r in store.list_keys()] == list(KEY_IDS)
        events = [r.event for r in store.audit_records(0, 100)]
        assert [e.kind for e in events] == ["key.restored"] * 3
        assert backups_module.file_digest(DATA) == events[0].fields["backup_sha256"]
    finally:
        store.close()
