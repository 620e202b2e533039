"""One backup file: a manifest of keys and HD wallets, wrapped under the backup key, and a tag.

Made, verified and restored with python-pkcs11 sessions (hsm.backup does the
wrapping). The file is canonical JSON (sorted keys, no spaces):

    {"body": {"format": "custos-backup/1", "created_at_ms": ..., "backup_key_check": hex,
              "keys": [{"key_id", "public_key" (hex, SEC1), "wrapped" (base64),
                        "record": {...}}, ...],
              "wallets": {"seal_key_id", "wrapped_seal_key" (base64),     (only with wallets)
                          "items": [{"wallet_id", "sealed_seed" (base64), "record": {...}}]}},
     "tag": hex}

HD wallets: the file carries the token's wallet seal key (the AES key their seeds
are sealed under) wrapped under the backup key, and each wallet's sealed seed as
the store holds it. Why not unseal each seed and wrap it under the backup key:
that puts every seed in the clear in a worker's memory at every backup and every
restore, while wrapping the seal key happens inside the HSM (C_WrapKey) and a
restore unwraps it inside the HSM (C_UnwrapKey): no seed is ever in the clear
outside the token for a backup or a restore. The seal key is therefore made
sensitive but wrappable (hsm.pkcs11_token.ensure_seal_key); a seal key made
non-extractable (before backups held wallets) cannot be wrapped, and its wallets
are left out and named, like keys made before backups existed.

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
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

from custos.hsm import backup
from custos.hsm.backup import BackupError, BackupKeyMode
from custos.hsm.errors import HsmUnavailable, KeyNotFound
from custos.hsm.hd import wipe
from custos.hsm.key_import import find

FORMAT = "custos-backup/1"
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_KEYS = 100_000
WALLET_SKIP_PREFIX = "wallet/"  # how a left-out wallet is named among left-out key ids


@dataclass(frozen=True, slots=True)
class BackupEntry:
    """One key in a backup: its id, public key and the caller's record of it."""

    key_id: str
    public_key: bytes
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WalletBackupEntry:
    """One HD wallet in a backup: its id, its seed sealed under `seal_key_id` as the store
    holds it (never the seed in clear), and the caller's record of it."""

    wallet_id: str
    seal_key_id: str
    sealed_seed: bytes = field(repr=False)
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
    wallets: tuple[WalletBackupEntry, ...] = ()
    wrapped_seal_key: bytes = b""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What `verify` found: the tag is good, and how the keys compare with the token's."""

    keys: int
    same_backup_key: bool
    missing: tuple[str, ...]  # current keys the backup lacks
    different: tuple[str, ...]  # key ids whose public key differs from the current one
    wallets: int = 0
    missing_wallets: tuple[str, ...] = ()  # current wallets the backup lacks
    # Wallets whose sealed seed differs, or all of them when the seal key does.
    different_wallets: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return (
            self.same_backup_key
            and not self.missing
            and not self.different
            and not self.missing_wallets
            and not self.different_wallets
        )


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


def _wrap_seal_key(session: Any, backup_key_id: str, seal_key_id: str) -> bytes | None:
    """The wallet seal key wrapped under the backup key; None when it was made unwrappable.

    Deterministic (RFC 5649 has no IV): the same seal key always gives the same
    bytes, which is how `verify` tells that a backup holds the current seal key.
    """
    try:
        key = find(session, ObjectClass.SECRET_KEY, backup_key_id)
        if key is None:
            raise KeyNotFound(backup_key_id)
        seal = find(session, ObjectClass.SECRET_KEY, seal_key_id)
        if seal is None:
            raise KeyNotFound(seal_key_id)
        if not seal[Attribute.EXTRACTABLE]:
            return None
        return bytes(key.wrap_key(seal, mechanism=backup.WRAP_MECHANISM))
    except pkcs11.KeyNotWrappable as exc:
        raise BackupError(
            f"the wallet seal key {seal_key_id} may be wrapped only by a trusted key"
        ) from exc
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"wrapping the wallet seal key failed: {type(exc).__name__}") from exc


def _seal_key_of(wallets: Sequence[WalletBackupEntry]) -> str:
    ids = {w.seal_key_id for w in wallets}
    if len(ids) != 1:
        raise BackupError(f"wallets: sealed under {len(ids)} seal keys, a backup holds one")
    return ids.pop()


def _wallets_body(
    session: Any, backup_key_id: str, wallets: Sequence[WalletBackupEntry]
) -> tuple[dict[str, Any] | None, list[str]]:
    """The body's `wallets` section (None when there is none), and wallets left out."""
    if not wallets:
        return None, []
    seal_key_id = _seal_key_of(wallets)
    wrapped = _wrap_seal_key(session, backup_key_id, seal_key_id)
    if wrapped is None:
        return None, sorted(WALLET_SKIP_PREFIX + w.wallet_id for w in wallets)
    items = [
        {
            "wallet_id": w.wallet_id,
            "sealed_seed": base64.b64encode(w.sealed_seed).decode(),
            "record": dict(w.record),
        }
        for w in sorted(wallets, key=lambda w: w.wallet_id)
    ]
    section = {
        "seal_key_id": seal_key_id,
        "wrapped_seal_key": base64.b64encode(wrapped).decode(),
        "items": items,
    }
    return section, []


def make(
    session: Any,
    backup_key_id: str,
    entries: Sequence[BackupEntry],
    created_at_ms: int,
    wallets: Sequence[WalletBackupEntry] = (),
) -> tuple[bytes, tuple[str, ...]]:
    """The backup file of `entries` and `wallets`, wrapped under the backup key; nothing
    in clear.

    Also the ids of the keys left out because they were created non-extractable,
    and `wallet/ID` for wallets left out because their seal key was.
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
    body: dict[str, Any] = {
        "format": FORMAT,
        "created_at_ms": created_at_ms,
        "backup_key_check": backup.backup_key_check_value(session, backup_key_id).hex(),
        "keys": keys,
    }
    section, left_out = _wallets_body(session, backup_key_id, wallets)
    skipped.extend(left_out)
    if section is not None:
        # Only when there are wallets: a file without them reads as before.
        body["wallets"] = section
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
        wallets, wrapped_seal_key = _parse_wallets(body.get("wallets"))
    except BackupError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BackupError("backup file: not a Custos backup (malformed JSON or field)") from None
    return BackupContents(
        created_at_ms,
        check,
        tuple(entries),
        wrapped,
        _canonical(body),
        tag,
        wallets,
        wrapped_seal_key,
    )


def _parse_wallets(section: Any) -> tuple[tuple[WalletBackupEntry, ...], bytes]:
    """The wallets of a body's `wallets` section (absent: none); BackupError naming the field."""
    if section is None:
        return (), b""
    if not isinstance(section, dict):
        raise BackupError("backup file: wallets is not an object")
    seal_key_id = section["seal_key_id"]
    if not isinstance(seal_key_id, str) or not seal_key_id:
        raise BackupError("backup file: wallets.seal_key_id is not a key id")
    wrapped = base64.b64decode(section["wrapped_seal_key"], validate=True)
    items = section["items"]
    if not isinstance(items, list) or not items or len(items) > MAX_KEYS:
        raise BackupError(f"backup file: wallets.items is not a list of 1 to {MAX_KEYS}")
    out: list[WalletBackupEntry] = []
    seen: set[str] = set()
    for number, item in enumerate(items, start=1):
        wallet_id = item["wallet_id"]
        if not isinstance(wallet_id, str) or wallet_id in seen:
            raise BackupError(f"backup file: wallets.items[{number}].wallet_id repeated or bad")
        seen.add(wallet_id)
        record = item["record"]
        if not isinstance(record, dict):
            raise BackupError(f"backup file: wallets.items[{number}].record is not an object")
        sealed = base64.b64decode(item["sealed_seed"], validate=True)
        out.append(WalletBackupEntry(wallet_id, seal_key_id, sealed, record))
    return tuple(out), wrapped


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
    session: Any,
    backup_key_id: str,
    data: bytes,
    current: Mapping[str, bytes],
    current_wallets: Sequence[WalletBackupEntry] = (),
) -> VerifyReport:
    """Check a backup against the token's backup key, the current keys (id -> public key)
    and the current wallets (their sealed seeds and the token's seal key).

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
        wallets=len(contents.wallets),
        **_compare_wallets(session, backup_key_id, contents, current_wallets),
    )


def _compare_wallets(
    session: Any,
    backup_key_id: str,
    contents: BackupContents,
    current: Sequence[WalletBackupEntry],
) -> dict[str, tuple[str, ...]]:
    """Which current wallets the backup lacks, and which it holds differently.

    A wallet is the same when its sealed seed is byte for byte the stored one and
    the backup's seal key is the token's: re-wrapping the token's seal key under
    the backup key gives the backup's bytes (RFC 5649 is deterministic), so no
    seed is unsealed to check it.
    """
    in_backup = {w.wallet_id: w.sealed_seed for w in contents.wallets}
    missing = tuple(sorted(w.wallet_id for w in current if w.wallet_id not in in_backup))
    held = [w for w in current if w.wallet_id in in_backup]
    if not held:
        return {"missing_wallets": missing, "different_wallets": ()}
    seal_key_id = _seal_key_of(held)
    same_seal = contents.wallets[0].seal_key_id == seal_key_id and hmac.compare_digest(
        _wrap_seal_key(session, backup_key_id, seal_key_id) or b"", contents.wrapped_seal_key
    )
    different = tuple(
        sorted(
            w.wallet_id
            for w in held
            if not same_seal or not hmac.compare_digest(in_backup[w.wallet_id], w.sealed_seed)
        )
    )
    return {"missing_wallets": missing, "different_wallets": different}


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
) -> tuple[tuple[BackupEntry, ...], tuple[WalletBackupEntry, ...]]:
    """Restore a backup onto an empty token: the backup key from shares, every key, and the
    wallet seal key (the wallets' sealed seeds are the caller's to store).

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
    seal_key_id = contents.wallets[0].seal_key_id if contents.wallets else None
    if seal_key_id is not None and find(session, ObjectClass.SECRET_KEY, seal_key_id):
        wipe(value)
        raise BackupError(f"restore: the token already has a wallet seal key {seal_key_id!r}")
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
        if seal_key_id is not None:
            _unwrap_seal_key(session, backup_key_id, seal_key_id, contents.wrapped_seal_key, mode)
    except BaseException:
        discard(session, backup_key_id, made, seal_key_id)
        raise
    return contents.entries, contents.wallets


def _unwrap_seal_key(
    session: Any, backup_key_id: str, seal_key_id: str, wrapped: bytes, mode: BackupKeyMode
) -> None:
    """The wallet seal key back in the token, inside the HSM: sensitive, wrappable again."""
    key = find(session, ObjectClass.SECRET_KEY, backup_key_id)
    if key is None:
        raise KeyNotFound(backup_key_id)
    try:
        key.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            wrapped,
            id=seal_key_id.encode(),
            label=seal_key_id,
            mechanism=backup.WRAP_MECHANISM,
            store=True,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template=seal_key_template(mode),
        )
    except pkcs11.PKCS11Error as exc:
        raise BackupError(
            f"the wallet seal key does not unwrap under {backup_key_id}"
            f" ({type(exc).__name__}): wrong backup key or damaged backup"
        ) from None


def seal_key_template(mode: BackupKeyMode) -> dict[Attribute, Any]:
    """A wallet seal key: never readable, but wrappable for backups (by a trusted key only
    in TRUSTED mode)."""
    return {
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True,
        Attribute.WRAP_WITH_TRUSTED: mode is BackupKeyMode.TRUSTED,
        Attribute.ENCRYPT: True,
        Attribute.DECRYPT: True,
    }


def discard(
    session: Any, backup_key_id: str, key_ids: Sequence[str], seal_key_id: str | None = None
) -> None:
    """Destroy the keys a restore made, its wallet seal key and its backup key: the token
    as before it."""
    for key_id in key_ids:
        _destroy_key(session, key_id, (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY))
    if seal_key_id is not None:
        _destroy_key(session, seal_key_id, (ObjectClass.SECRET_KEY,))
    _destroy_key(session, backup_key_id, (ObjectClass.SECRET_KEY,))
