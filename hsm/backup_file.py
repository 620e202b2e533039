"""One backup file: a manifest of keys, each key wrapped under the backup key, and a tag.

Made, verified and restored with python-pkcs11 sessions (hsm.backup does the
wrapping). The file is canonical JSON (sorted keys, no spaces):

    {"body": {"format": "custos-backup/1", "created_at_ms": ..., "backup_key_check": hex,
              "keys": [{"key_id", "public_key" (hex, SEC1), "wrapped" (base64),
                        "record": {...}}, ...]},
     "tag": hex}

`record` is whatever the caller keeps about a key (origin, network class, state,
addresses): this module does not read it, only authenticates it.

The tag is AES-KW-PAD (RFC 5649) under the backup key of SHA-256(canonical body).
Why this and not an HMAC or a signature: the backup key is the one secret that
survives a lost token (as shares), so the tag must be checkable with it alone;
a signing or MAC key in the token would be gone with the token. RFC 5649 is
deterministic and authenticated: without the key nobody can produce the wrap of a
given 32-byte value, so recomputing it and comparing is a MAC check; and the
backup key keeps CKA_WRAP/CKA_UNWRAP only (never CKA_SIGN, never CKA_ENCRYPT).
Each wrapped key also carries RFC 5649's own integrity check.

A restore installs the backup key from shares, checks the tag, unwraps every
key (each proven by a test signature against its manifest public key), and on
any failure destroys everything it made: the token is as empty as before.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass

from custos.hsm import backup
from custos.hsm.backup import BackupError, BackupKeyMode
from custos.hsm.errors import HsmUnavailable, KeyNotFound
from custos.hsm.hd import wipe
from custos.hsm.key_import import find

FORMAT = "custos-backup/1"
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class BackupEntry:
    """One key in a backup: its id, public key and the caller's record of it."""

    key_id: str
    public_key: bytes
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackupContents:
    """A parsed backup file (its tag not yet checked) with the wrapped keys."""

    created_at_ms: int
    backup_key_check: bytes
    entries: tuple[BackupEntry, ...]
    wrapped: Mapping[str, bytes]
    body: bytes  # canonical JSON of the body, what the tag covers
    tag: bytes


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` found: the tag is good, and how the keys compare with the token's."""

    keys: int
    same_backup_key: bool
    missing: tuple[str, ...]  # current keys the backup lacks
    different: tuple[str, ...]  # key ids whose public key differs from the current one

    @property
    def complete(self) -> bool:
        return self.same_backup_key and not self.missing and not self.different


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _tag(session: Any, backup_key_id: str, body: bytes) -> bytes:
    """RFC 5649 wrap, under the backup key, of SHA-256(body) held in a session object."""
    try:
        key = find(session, ObjectClass.SECRET_KEY, backup_key_id)
        if key is None:
            raise KeyNotFound(backup_key_id)
        digest = session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: hashlib.sha256(body).digest(),
                Attribute.TOKEN: False,
                Attribute.EXTRACTABLE: True,
                Attribute.SENSITIVE: False,
            }
        )
        try:
            return bytes(key.wrap_key(digest, mechanism=backup.WRAP_MECHANISM))
        finally:
            digest.destroy()
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"tagging the backup failed: {type(exc).__name__}") from exc


def backupable(session: Any, key_id: str) -> bool:
    """Whether private key `key_id` can be wrapped: keys made before backups existed cannot."""
    try:
        private = find(session, ObjectClass.PRIVATE_KEY, key_id)
        if private is None:
            raise KeyNotFound(key_id)
        return bool(private[Attribute.EXTRACTABLE])
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"reading key {key_id} failed: {type(exc).__name__}") from exc


def make(
    session: Any, backup_key_id: str, entries: Sequence[BackupEntry], created_at_ms: int
) -> tuple[bytes, tuple[str, ...]]:
    """The backup file of `entries`, each key wrapped under the backup key; nothing in clear.

    Also the ids of the keys left out because they were created non-extractable.
    """
    keys = []
    skipped = []
    for entry in sorted(entries, key=lambda e: e.key_id):
        if not backupable(session, entry.key_id):
            skipped.append(entry.key_id)
            continue
        wrapped = backup.wrap_private_key(session, backup_key_id, entry.key_id)
        keys.append(
            {
                "key_id": entry.key_id,
                "public_key": entry.public_key.hex(),
                "wrapped": base64.b64encode(wrapped).decode(),
                "record": dict(entry.record),
            }
        )
    body = {
        "format": FORMAT,
        "created_at_ms": created_at_ms,
        "backup_key_check": backup.backup_key_check_value(session, backup_key_id).hex(),
        "keys": keys,
    }
    encoded = _canonical(body)
    tag = _tag(session, backup_key_id, encoded)
    return _canonical({"body": body, "tag": tag.hex()}) + b"\n", tuple(skipped)


def parse(data: bytes) -> BackupContents:
    """The file's contents, shape checked; BackupError naming what is malformed (no tag check)."""
    if len(data) > MAX_FILE_BYTES:
        raise BackupError(f"backup file: larger than {MAX_FILE_BYTES} bytes")
    try:
        outer = json.loads(data)
        body = outer["body"]
        tag = bytes.fromhex(outer["tag"])
        if body["format"] != FORMAT:
            raise BackupError(f"backup file: format {body['format']!r}, expected {FORMAT!r}")
        created_at_ms = int(body["created_at_ms"])
        check = bytes.fromhex(body["backup_key_check"])
        raw_keys = body["keys"]
        if not isinstance(raw_keys, list) or len(raw_keys) > MAX_KEYS:
            raise BackupError(f"backup file: keys is not a list of at most {MAX_KEYS}")
        entries = []
        wrapped: dict[str, bytes] = {}
        for number, item in enumerate(raw_keys, start=1):
            key_id = str(item["key_id"])
            if key_id in wrapped:
                raise BackupError(f"backup file: key {key_id!r} appears twice")
            record = item["record"]
            if not isinstance(record, dict):
                raise BackupError(f"backup file: key {number}: record is not an object")
            entries.append(BackupEntry(key_id, bytes.fromhex(item["public_key"]), record))
            wrapped[key_id] = base64.b64decode(item["wrapped"], validate=True)
    except BackupError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BackupError("backup file: not a Custos backup (malformed JSON or field)") from None
    return BackupContents(created_at_ms, check, tuple(entries), wrapped, _canonical(body), tag)


def _authentic(session: Any, backup_key_id: str, contents: BackupContents) -> None:
    """BackupError unless the tag verifies under the token's backup key."""
    if hmac.compare_digest(_tag(session, backup_key_id, contents.body), contents.tag):
        return
    if backup.backup_key_check_value(session, backup_key_id) != contents.backup_key_check:
        raise BackupError(
            "backup file: made under another backup key (the shares or the token's backup"
            " key belong to another backup), or tampered with"
        )
    raise BackupError("backup file: its tag does not verify: the file was tampered with")


def verify(
    session: Any, backup_key_id: str, data: bytes, current: Mapping[str, bytes]
) -> VerifyReport:
    """Check a backup against the token's backup key and the current keys (id -> public key).

    BackupError when the file is malformed or its tag does not verify; otherwise a
    report of what is missing or different. Restores nothing.
    """
    contents = parse(data)
    _authentic(session, backup_key_id, contents)
    in_backup = {e.key_id: e.public_key for e in contents.entries}
    return VerifyReport(
        keys=len(contents.entries),
        same_backup_key=True,  # the tag verified under the current backup key
        missing=tuple(sorted(k for k in current if k not in in_backup)),
        different=tuple(
            sorted(k for k, pub in current.items() if k in in_backup and in_backup[k] != pub)
        ),
    )


def _destroy_key(session: Any, key_id: str, classes: Sequence[ObjectClass]) -> None:
    for object_class in classes:
        for obj in list(
            session.get_objects({Attribute.CLASS: object_class, Attribute.ID: key_id.encode()})
        ):
            with contextlib.suppress(pkcs11.PKCS11Error):
                obj.destroy()


def restore(
    session: Any,
    backup_key_id: str,
    shares: Sequence[str],
    data: bytes,
    *,
    mode: BackupKeyMode = BackupKeyMode.PRIVATE,
) -> tuple[BackupEntry, ...]:
    """Restore a backup onto an empty token: the backup key from shares, then every key.

    BackupError (fewer than M shares, a wrong share, a tampered or foreign file, a key
    that does not unwrap or match) leaves the token as it was. A user session
    (PRIVATE mode; a TRUSTED backup key needs the SO and is not made here).
    """
    if mode is not BackupKeyMode.PRIVATE:
        raise BackupError("restore: only PRIVATE mode is supported here (see hsm.backup)")
    contents = parse(data)
    recovered = backup.recover_backup_key(shares)
    value = bytearray(recovered)
    wipe(recovered)
    if find(session, ObjectClass.SECRET_KEY, backup_key_id) is not None:
        wipe(value)
        raise BackupError(f"restore: the token already has a backup key {backup_key_id!r}")
    for entry in contents.entries:
        if find(session, ObjectClass.PRIVATE_KEY, entry.key_id) is not None:
            wipe(value)
            raise BackupError(f"restore: the token already has key {entry.key_id!r}")
    backup.install_backup_key(session, backup_key_id, value, mode)  # wipes value
    made: list[str] = []
    try:
        _authentic(session, backup_key_id, contents)
        for entry in contents.entries:
            made.append(entry.key_id)
            backup.unwrap_private_key(
                session,
                backup_key_id,
                entry.key_id,
                contents.wrapped[entry.key_id],
                entry.public_key,
                mode=mode,
            )
    except BaseException:
        discard(session, backup_key_id, made)
        raise
    return contents.entries


def discard(session: Any, backup_key_id: str, key_ids: Sequence[str]) -> None:
    """Destroy the keys a restore made and its backup key: the token as before it."""
    for key_id in key_ids:
        _destroy_key(session, key_id, (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY))
    _destroy_key(session, backup_key_id, (ObjectClass.SECRET_KEY,))
