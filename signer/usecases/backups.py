"""Backups of the keys in custody: the backup key, backup files, verification, restore.

The token's side is hsm.backup_file (the file format and why its tag is an RFC
5649 wrap); this module chooses what goes into a file (every key record, with
its addresses), checks the records' HSM tags first, and audits every step with
the file's SHA-256 and the key ids, never a share or a wrapped key.

These run as operator commands with the service's config (`custos keys backup
...`, like `custos integrity init-key`): the operator holds the token's PIN,
which the threat model trusts; a restore runs before the service starts on the
new token. Keys made before backups existed are not extractable: a backup
names them as left out, and a verification counts them as missing.

HD wallets travel with the keys: each wallet row (records checked first) with
its sealed seed as stored, and the wallet seal key wrapped under the backup key
(hsm.backup_file says why that and not the seeds); a restore inserts the wallet
rows in the same store transaction as the keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from custos.audit.record import AuditEvent
from custos.hsm.backup_file import BackupEntry, VerifyReport, WalletBackupEntry, parse
from custos.hsm.errors import KeyExists, KeyNotFound
from custos.signer.edge.errors import AlreadyExists, FailedPrecondition, InvalidRequest
from custos.signer.store.base import KeyRecord, KeyState, Store
from custos.signer.store.wallet_tables import WalletRecord
from custos.signer.usecases.authenticity import StateAuthenticator
from custos.signer.usecases.key_import import key_addresses
from custos.signer.usecases.keys import check_key_id, key_fact, verify_keys
from custos.signer.usecases.wallets import SEAL_KEY_ID, check_wallet_id, wallet_fact
from custos.signer.usecases.wallets import TABLE as WALLET_TABLE

# The token id of the backup key: ids of service keys start with [a-z0-9], so no clash.
BACKUP_KEY_ID = "_backup"
RECORD_FIELDS = ("state", "created_by", "created_at_ms", "network_class", "origin", "version")
WALLET_FIELDS = ("label", "origin", "state", "created_by", "created_at_ms", "version")


class BackupToken(Protocol):
    """What a backup needs from the token (hsm.pkcs11_token.Pkcs11Token)."""

    def create_backup_key(self, key_id: str, threshold: int, count: int) -> list[str]: ...

    def make_backup(
        self,
        backup_key_id: str,
        entries: Sequence[BackupEntry],
        created_at_ms: int,
        wallets: Sequence[WalletBackupEntry] = (),
    ) -> tuple[bytes, tuple[str, ...]]: ...

    def verify_backup(
        self,
        backup_key_id: str,
        data: bytes,
        current: Mapping[str, bytes],
        current_wallets: Sequence[WalletBackupEntry] = (),
    ) -> VerifyReport: ...

    def restore_backup(
        self, backup_key_id: str, shares: Sequence[str], data: bytes
    ) -> tuple[tuple[BackupEntry, ...], tuple[WalletBackupEntry, ...]]: ...

    def discard_restore(
        self, backup_key_id: str, key_ids: Sequence[str], seal_key_id: str | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class BackupWritten:
    """A backup file's bytes, its SHA-256 (hex), the keys in it and the keys left out."""

    data: bytes
    digest: str
    key_ids: tuple[str, ...]
    skipped: tuple[str, ...]  # key ids, and wallet/ID for wallets, left out
    wallet_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Restored:
    """The key and wallet records a restore registered."""

    keys: list[KeyRecord]
    wallets: list[WalletRecord]


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_of(record: KeyRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        name: getattr(record, name) for name in RECORD_FIELDS if name != "state"
    }
    return {**fields, "state": record.state.value, "addresses": key_addresses(record)}


def _key_from(entry: BackupEntry) -> KeyRecord:
    """A key record as the backup holds it (authenticated by the file's tag)."""
    check_key_id(entry.key_id)
    fields = entry.record
    try:
        return KeyRecord(
            entry.key_id,
            entry.public_key,
            KeyState(fields["state"]),
            str(fields["created_by"]),
            int(fields["created_at_ms"]),
            str(fields["network_class"]),
            version=int(fields["version"]),
            origin=str(fields["origin"]),
        )
    except (KeyError, ValueError, TypeError):
        raise FailedPrecondition(
            f"backup file: key {entry.key_id!r} has an incomplete record"
        ) from None


def _wallet_entry(record: WalletRecord) -> WalletBackupEntry:
    fields = {name: getattr(record, name) for name in WALLET_FIELDS}
    return WalletBackupEntry(record.wallet_id, record.seal_key_id, record.sealed_seed, fields)


def _wallet_from(entry: WalletBackupEntry) -> WalletRecord:
    """A wallet row as the backup holds it (authenticated by the file's tag)."""
    try:
        check_wallet_id(entry.wallet_id)
    except InvalidRequest:
        raise FailedPrecondition(
            f"backup file: wallet {entry.wallet_id!r}: wallet_id is not a wallet id"
        ) from None
    if entry.seal_key_id != SEAL_KEY_ID:
        raise FailedPrecondition(
            f"backup file: wallets.seal_key_id is {entry.seal_key_id!r}, not {SEAL_KEY_ID!r}"
        )
    fields = entry.record
    try:
        return WalletRecord(
            entry.wallet_id,
            str(fields["label"]),
            entry.seal_key_id,
            entry.sealed_seed,
            str(fields["origin"]),
            str(fields["state"]),
            str(fields["created_by"]),
            int(fields["created_at_ms"]),
            version=int(fields["version"]),
        )
    except (KeyError, ValueError, TypeError):
        raise FailedPrecondition(
            f"backup file: wallet {entry.wallet_id!r} has an incomplete record"
        ) from None


def _missing(exc: KeyNotFound) -> FailedPrecondition:
    """What a key missing from the token means here, in words."""
    if exc.args == (BACKUP_KEY_ID,):
        return FailedPrecondition(
            "the token has no backup key yet: custos keys propose-backup-key-init"
        )
    if exc.args == (SEAL_KEY_ID,):
        return FailedPrecondition("the store has wallets but the token has no wallet seal key")
    return FailedPrecondition(f"key {exc.args[0]!r} is in the store but not in the token")


class MakesBackups(Protocol):
    def make_backup(
        self,
        backup_key_id: str,
        entries: Sequence[BackupEntry],
        created_at_ms: int,
        wallets: Sequence[WalletBackupEntry] = (),
    ) -> tuple[bytes, tuple[str, ...]]: ...


def verified_wallets(store: Store, integrity: StateAuthenticator) -> list[WalletRecord]:
    """Every wallet row, its HSM tag checked: no backup of a forged or swapped wallet."""
    since = integrity.epoch()
    records = store.list_wallets()
    integrity.verify([(wallet_fact(r), r.mac) for r in records], since)
    return records


class BackupMaker:
    """A backup file of every key in custody (records checked first) and its audit record."""

    def __init__(self, store: Store, token: MakesBackups, integrity: StateAuthenticator) -> None:
        self._store = store
        self._token = token
        self._integrity = integrity

    def make(
        self, actor: str, context: Mapping[str, str] | None = None
    ) -> tuple[BackupWritten, AuditEvent]:
        since = self._integrity.epoch()
        records = self._store.list_keys()
        verify_keys(self._integrity, records, since)  # TamperedState: no backup of forged rows
        entries = [BackupEntry(r.key_id, r.public_key, _record_of(r)) for r in records]
        wallets = [_wallet_entry(w) for w in verified_wallets(self._store, self._integrity)]
        try:
            data, skipped = self._token.make_backup(
                BACKUP_KEY_ID, entries, time.time_ns() // 10**6, wallets
            )
        except KeyNotFound as exc:
            raise _missing(exc) from None
        key_ids = tuple(sorted(e.key_id for e in entries if e.key_id not in skipped))
        wallet_ids = tuple(
            sorted(w.wallet_id for w in wallets if f"wallet/{w.wallet_id}" not in skipped)
        )
        written = BackupWritten(data, file_digest(data), key_ids, skipped, wallet_ids)
        event = AuditEvent(
            "keys.backed_up",
            actor,
            {
                "sha256": written.digest,
                "key_ids": ",".join(key_ids),
                "wallet_ids": ",".join(wallet_ids),
                "skipped": ",".join(skipped),
                **(context or {}),
            },
        )
        return written, event


class KeyBackups:
    """The backup key's set-up, backups of every key, their verification, and restores."""

    def __init__(self, store: Store, token: BackupToken, integrity: StateAuthenticator) -> None:
        self._store = store
        self._token = token
        self._integrity = integrity

    def _records(self) -> list[KeyRecord]:
        since = self._integrity.epoch()
        records = self._store.list_keys()
        verify_keys(self._integrity, records, since)  # TamperedState: no backup of forged rows
        return records

    def create_backup_key(self, actor: str, threshold: int, count: int) -> list[str]:
        """Generate the backup key in the HSM; its shares, to be handed out once each."""
        try:
            shares = self._token.create_backup_key(BACKUP_KEY_ID, threshold, count)
        except KeyExists:
            raise AlreadyExists(
                "the token has a backup key already; its shares were handed out when it was made"
            ) from None
        self._store.append_audit(
            [
                AuditEvent(
                    "backup_key.created",
                    actor,
                    {"key_id": BACKUP_KEY_ID, "threshold": threshold, "shares": count},
                )
            ]
        )
        return shares

    def backup(self, actor: str) -> BackupWritten:
        """Every key wrapped under the backup key, with its record and addresses, in one file."""
        written, event = BackupMaker(self._store, self._token, self._integrity).make(actor)
        self._store.append_audit([event])
        return written

    def verify(self, actor: str, data: bytes) -> VerifyReport:
        """A backup's tag under the current backup key, and its keys against the current ones.

        BackupError when it is not authentic; the report says what is missing.
        """
        current = {r.key_id: r.public_key for r in self._records()}
        wallets = [_wallet_entry(w) for w in verified_wallets(self._store, self._integrity)]
        try:
            report = self._token.verify_backup(BACKUP_KEY_ID, data, current, wallets)
        except KeyNotFound as exc:
            raise _missing(exc) from None
        self._store.append_audit(
            [
                AuditEvent(
                    "backup.verified",
                    actor,
                    {
                        "sha256": file_digest(data),
                        "keys": report.keys,
                        "complete": report.complete,
                        "missing": ",".join(report.missing),
                        "different": ",".join(report.different),
                        "wallets": report.wallets,
                        "missing_wallets": ",".join(report.missing_wallets),
                        "different_wallets": ",".join(report.different_wallets),
                    },
                )
            ]
        )
        return report

    def restore(self, actor: str, data: bytes, shares: Sequence[str]) -> Restored:
        """Restore every key and wallet of a backup onto this (empty) token and register
        their records.

        Refused (FailedPrecondition) when the store already holds any key or wallet;
        the token restores all or nothing (hsm.backup_file.restore), and the records
        go into the store in one transaction.
        """
        if self._store.list_keys() or self._store.list_wallets():
            raise FailedPrecondition(
                "restore: the store already has keys or wallets; restore onto a new deployment"
            )
        # Every record must be usable before the token changes (the tag is checked there).
        contents = parse(data)
        for entry in contents.entries:
            _key_from(entry)
        for item in contents.wallets:
            _wallet_from(item)
        entries, wallet_entries = self._token.restore_backup(BACKUP_KEY_ID, shares, data)
        records = [_key_from(entry) for entry in entries]
        digest = file_digest(data)
        restored = [
            dataclasses.replace(record, mac=self._integrity.tag(key_fact(record)))
            for record in records
        ]
        wallets = [
            dataclasses.replace(wallet, mac=self._integrity.tag(wallet_fact(wallet)))
            for wallet in (_wallet_from(w) for w in wallet_entries)
        ]
        events = [
            AuditEvent(
                "key.restored",
                actor,
                {
                    "key_id": record.key_id,
                    "public_key": record.public_key.hex(),
                    "origin": record.origin,
                    "state": record.state.value,
                    "row_version": record.version,
                    "backup_sha256": digest,
                },
            )
            for record in restored
        ] + [
            AuditEvent(
                "wallet.restored",
                actor,
                {
                    "wallet_id": wallet.wallet_id,
                    "label": wallet.label,
                    "origin": wallet.origin,
                    "state": wallet.state,
                    "row_version": wallet.version,
                    "backup_sha256": digest,
                },
            )
            for wallet in wallets
        ]
        try:
            # One transaction: every record and its audit record, or none of them.
            self._store.insert_keys(restored, events, wallets)
        except BaseException:
            # The token's keys go too, so the restore can simply be run again.
            self._token.discard_restore(
                BACKUP_KEY_ID,
                [r.key_id for r in restored],
                SEAL_KEY_ID if wallet_entries else None,
            )
            raise
        for record in restored:
            self._integrity.raise_floor("keys", (record.key_id,), record.version)
        for wallet in wallets:
            self._integrity.raise_floor(WALLET_TABLE, (wallet.wallet_id,), wallet.version)
        return Restored(restored, wallets)


class VerifiedBackupAge:
    """Seconds since the newest complete `backup.verified` record in the audit log; NaN if none.

    A metric (custos_backup_verified_age_seconds): each read scans only the records
    appended since the last one, so a scrape costs what was logged in between.
    """

    def __init__(self, store: Store, page: int = 1000) -> None:
        self._store = store
        self._page = page
        self._lock = threading.Lock()
        self._next_seq = 0
        self._newest_ms: int | None = None

    def __call__(self) -> float:
        with self._lock:
            while records := self._store.audit_records(self._next_seq, self._page):
                for record in records:
                    event = record.event
                    if event.kind == "backup.verified" and event.fields.get("complete") is True:
                        self._newest_ms = record.ts_ms
                self._next_seq = records[-1].seq + 1
            newest = self._newest_ms
        return math.nan if newest is None else max(0.0, time.time() - newest / 1000)
