"""A restore registers every key and wallet record in one store transaction: a failure
midway leaves no record, no audit record and (through the token's discard) no token
key or wallet seal key, and the same restore then succeeds. The token is a
stand-in; the store is real."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from custos.hsm.backup_file import FORMAT, BackupEntry, VerifyReport, WalletBackupEntry
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
    "wallets": {
        "seal_key_id": "_wallet_seal",
        "wrapped_seal_key": "AAAA",
        "items": [
            {
                "wallet_id": "hot-1",
                "sealed_seed": "c2VhbGVk",
                "record": {
                    "label": "Hot",
                    "origin": "generated",
                    "state": "enabled",
                    "created_by": "officer",
                    "created_at_ms": 1,
                    "version": 1,
                },
            }
        ],
    },
}
DATA = json.dumps({"body": BODY, "tag": "00" * 40}).encode()


class _Token:
    """Restores the file's entries as they are (the real token checks tags and unwraps)."""

    def __init__(self) -> None:
        self.discarded: list[tuple[str, list[str], str | None]] = []

    def restore_backup(
        self, backup_key_id: str, shares: Sequence[str], data: bytes
    ) -> tuple[tuple[BackupEntry, ...], tuple[WalletBackupEntry, ...]]:
        body = json.loads(data)["body"]
        keys = tuple(
            BackupEntry(e["key_id"], bytes.fromhex(e["public_key"]), e["record"])
            for e in body["keys"]
        )
        wallets = tuple(
            WalletBackupEntry(w["wallet_id"], "_wallet_seal", b"sealed", w["record"])
            for w in body["wallets"]["items"]
        )
        return keys, wallets

    def discard_restore(
        self, backup_key_id: str, key_ids: Sequence[str], seal_key_id: str | None = None
    ) -> None:
        self.discarded.append((backup_key_id, list(key_ids), seal_key_id))

    def create_backup_key(self, key_id: str, threshold: int, count: int) -> list[str]:
        raise NotImplementedError

    def make_backup(
        self,
        backup_key_id: str,
        entries: Sequence[BackupEntry],
        created_at_ms: int,
        wallets: Sequence[WalletBackupEntry] = (),
    ) -> tuple[bytes, tuple[str, ...]]:
        raise NotImplementedError

    def verify_backup(
        self,
        backup_key_id: str,
        data: bytes,
        current: Mapping[str, bytes],
        current_wallets: Sequence[WalletBackupEntry] = (),
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
        assert store.list_wallets() == []
        assert token.discarded == [(BACKUP_KEY_ID, list(KEY_IDS), "_wallet_seal")]

        monkeypatch.setattr(sql, "_insert_key", real_insert)
        restored = restorer.restore("operator", DATA, ["share"])
        assert [r.key_id for r in restored.keys] == list(KEY_IDS)
        assert [w.wallet_id for w in restored.wallets] == ["hot-1"]
        assert [r.key_id for r in store.list_keys()] == list(KEY_IDS)
        events = [r.event for r in store.audit_records(0, 100)]
        assert [e.kind for e in events] == ["key.restored"] * 3 + ["wallet.restored"]
        assert backups_module.file_digest(DATA) == events[0].fields["backup_sha256"]
        assert [w.wallet_id for w in store.list_wallets()] == ["hot-1"]
    finally:
        store.close()


def test_a_wallet_that_cannot_be_inserted_takes_the_keys_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    token = _Token()
    restorer = KeyBackups(store, token, _integrity())

    def failing_insert(tx: Any, wallet: Any) -> bool:
        raise RuntimeError("injected wallet failure")

    try:
        monkeypatch.setattr(sql, "insert_wallet", failing_insert)
        with pytest.raises(RuntimeError, match="injected wallet"):
            restorer.restore("operator", DATA, ["share"])
        assert store.list_keys() == []
        assert store.list_wallets() == []
        assert [r.event.kind for r in store.audit_records(0, 100)] == []
        assert token.discarded == [(BACKUP_KEY_ID, list(KEY_IDS), "_wallet_seal")]
    finally:
        store.close()
