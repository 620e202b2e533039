"""Backup primitives: a wrapping backup key, its SLIP-39 shares, and key wrap/unwrap.

Used by hsm.backup_file (one file for every key) and the operator commands of
signer.usecases.backups; not an officer ceremony yet (issue 11). The pieces:

- SLIP-39 (`shamir-mnemonic`): the AES-256 backup key exists outside the HSM
  only as M-of-N shares. Errors say which share is wrong and why, never a word.
- The backup key in the token, in one of two modes (BackupKeyMode):
  TRUSTED  created by the security officer with CKA_TRUSTED, and secp256k1 keys
           made with CKA_WRAP_WITH_TRUSTED, so that only a trusted key can wrap
           them: what PKCS#11 intends, and what a production HSM should use.
  PRIVATE  a private (CKA_PRIVATE) user key; keys are merely extractable-when-
           wrapped. The mode for SoftHSM, because of what SoftHSM 2.6.1 does
           with trusted keys (measured, tests/integration/test_backup_hsm.py):
           only the SO can set CKA_TRUSTED (a user gets CKR_ATTRIBUTE_READ_ONLY,
           also from C_SetAttributeValue later), and the SO cannot create private
           objects (CKR_USER_NOT_LOGGED_IN), so a trusted key is a public object:
           SoftHSM stores it unencrypted in the token directory (its value is
           there in the clear), and a session that never logged in can find it
           and C_UnwrapKey a backup blob into a non-sensitive object whose
           CKA_VALUE it reads. A private key is encrypted under the user PIN.
- Wrap and unwrap with CKM_AES_KEY_WRAP_PAD (RFC 5649) of the PKCS#8 private key.
  A restore recreates the public key object from the backup's manifest only after
  a test signature of the unwrapped key verifies against it; anything it made is
  destroyed when a step fails.

These functions take python-pkcs11 sessions: the caller (a worker, at a
ceremony) decides which login a step needs (the SO's for a TRUSTED key).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters
from shamir_mnemonic import MnemonicError, combine_mnemonics, generate_mnemonics
from shamir_mnemonic.share import Share

from custos.hsm.errors import HsmError, HsmUnavailable, KeyExists, KeyNotFound
from custos.hsm.hd import wipe
from custos.hsm.key_import import UnwrapError, UnwrapMismatch, find, install_unwrapped_secp256k1
from custos.hsm.pkcs11_token import SECP256K1_OID, _unwrap_ec_point

BACKUP_KEY_BYTES = 32
WRAP_MECHANISM = Mechanism.AES_KEY_WRAP_PAD
MAX_SHARES = 16  # SLIP-39's limit per group


class BackupError(HsmError):
    """A share, backup key or wrapped key is unusable; the message names which, never a secret."""


class BackupKeyMode(enum.Enum):
    TRUSTED = "trusted"
    PRIVATE = "private"


# ---- SLIP-39 shares of the backup key -------------------------------------------


def split_backup_key(secret: bytes, threshold: int, count: int) -> list[str]:
    """`count` SLIP-39 shares (one group), any `threshold` of which recover `secret`."""
    if len(secret) != BACKUP_KEY_BYTES:
        raise BackupError(f"a backup key has {BACKUP_KEY_BYTES} bytes, not {len(secret)}")
    if not 1 <= threshold <= count <= MAX_SHARES or (threshold == 1 and count > 1):
        # SLIP-39 forbids 1-of-N with N > 1: it would be N copies of the secret.
        raise BackupError(
            f"shares: threshold {threshold} of {count} is not allowed "
            f"(1 <= M <= N <= {MAX_SHARES}, and no 1-of-N)"
        )
    (group,) = generate_mnemonics(1, [(threshold, count)], secret)
    return list(group)


def recover_backup_key(shares: Sequence[str]) -> bytes:
    """The backup key from at least M shares of one set; BackupError names what is wrong."""
    parsed = []
    for number, text in enumerate(shares, start=1):
        try:
            parsed.append(Share.from_mnemonic(" ".join(text.lower().split())))
        except (MnemonicError, KeyError, ValueError):
            # shamir-mnemonic's own messages quote the share's first words.
            raise BackupError(
                f"share {number}: not a valid SLIP-39 share (unknown word or bad checksum)"
            ) from None
    if not parsed:
        raise BackupError("no shares given")
    first = parsed[0]
    for number, share in enumerate(parsed[1:], start=2):
        if share.common_parameters() != first.common_parameters():
            raise BackupError(f"share {number} belongs to another backup key than share 1")
        if share.group_parameters() != first.group_parameters():
            raise BackupError(f"share {number} has other group parameters than share 1")
    if len({s.index for s in parsed}) != len(parsed):
        raise BackupError("the same share was given twice")
    needed = first.member_threshold
    if len(parsed) < needed:
        raise BackupError(f"{len(parsed)} shares given, this backup key needs {needed}")
    texts = [" ".join(s.words()) for s in parsed]
    try:
        secret = combine_mnemonics(texts[:needed])
        # With more than M shares, the last M must agree too: an extra share is checked.
        if len(texts) > needed and combine_mnemonics(texts[-needed:]) != secret:
            raise BackupError("the shares do not agree: one of them is wrong")
    except MnemonicError:
        raise BackupError("the shares do not combine: one of them is wrong") from None
    return bytes(secret)


# ---- the backup key in the token ----------------------------------------------------


def install_backup_key(
    session: Any, key_id: str, value: bytes | bytearray, mode: BackupKeyMode
) -> None:
    """Create the backup key from its value (new, or recovered from shares), then wipe it.

    TRUSTED needs a security-officer session; PRIVATE a user session.
    """
    if len(value) != BACKUP_KEY_BYTES:
        raise BackupError(f"a backup key has {BACKUP_KEY_BYTES} bytes, not {len(value)}")
    try:
        if find(session, ObjectClass.SECRET_KEY, key_id) is not None:
            raise KeyExists(key_id)
        template = {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.VALUE: value,
            Attribute.ID: key_id.encode(),
            Attribute.LABEL: key_id,
            Attribute.TOKEN: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.WRAP: True,
            Attribute.UNWRAP: True,
            # Only for keys: never a general-purpose cipher or MAC.
            Attribute.ENCRYPT: False,
            Attribute.DECRYPT: False,
            Attribute.SIGN: False,
            Attribute.VERIFY: False,
            Attribute.DERIVE: False,
        }
        if mode is BackupKeyMode.TRUSTED:
            template |= {Attribute.TRUSTED: True, Attribute.PRIVATE: False}
        else:
            template |= {Attribute.PRIVATE: True}
        session.create_object(template)
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"backup key set-up failed: {type(exc).__name__}") from exc
    finally:
        wipe(value)


def new_backup_key_value(session: Any) -> bytes:
    """32 bytes from the token's random generator: the backup key, shown only as shares."""
    return bytes(session.generate_random(BACKUP_KEY_BYTES * 8))


def backup_key_check_value(session: Any, key_id: str) -> bytes:
    """A value that identifies the backup key without revealing it: SHA-256 of the
    wrap of a fixed 32-byte AES key. It tells whether a backup was made under this key."""
    try:
        backup = find(session, ObjectClass.SECRET_KEY, key_id)
        if backup is None:
            raise KeyNotFound(key_id)
        probe = session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: bytes(32),
                Attribute.TOKEN: False,
                Attribute.EXTRACTABLE: True,
                Attribute.SENSITIVE: False,
            }
        )
        try:
            # Deterministic: RFC 5649 has no random IV, so one key gives one value.
            return hashlib.sha256(backup.wrap_key(probe, mechanism=WRAP_MECHANISM)).digest()
        finally:
            probe.destroy()
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"backup key check failed: {type(exc).__name__}") from exc


def trusted_mode_problem(session: Any, key_id: str) -> str | None:
    """Why this token cannot serve TRUSTED mode (None when it can).

    TRUSTED needs a backup key the security officer made, marked CKA_TRUSTED
    and private (encrypted under the user PIN, unusable without a login), and a
    token that refuses to wrap a CKA_WRAP_WITH_TRUSTED key under an untrusted one.
    """
    try:
        backup = find(session, ObjectClass.SECRET_KEY, key_id)
        if backup is None:
            return (
                f"the token has no backup key {key_id!r}: in trusted mode the security"
                " officer creates it, marked CKA_TRUSTED, as a private object (README)"
            )
        if not backup[Attribute.TRUSTED]:
            return f"backup key {key_id!r} is not marked CKA_TRUSTED by the security officer"
        if not backup[Attribute.PRIVATE]:
            return (
                f"backup key {key_id!r} is a public object (CKA_PRIVATE false): the token"
                " keeps it without the user PIN's protection and a session that never"
                " logged in can use it. SoftHSM cannot do better (its security officer"
                " cannot create private objects: CKR_USER_NOT_LOGGED_IN); use"
                ' mode = "private" there'
            )
        return _wrap_with_trusted_problem(session)
    except pkcs11.PKCS11Error as exc:
        return f"the token could not be probed ({type(exc).__name__})"


def _wrap_with_trusted_problem(session: Any) -> str | None:
    """Whether an untrusted key can wrap a CKA_WRAP_WITH_TRUSTED key (session objects)."""
    params = session.create_domain_parameters(
        KeyType.EC,
        {Attribute.EC_PARAMS: encode_named_curve_parameters(SECP256K1_OID)},
        local=True,
    )
    public, private = params.generate_keypair(
        store=False,
        private_template={
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True,
            Attribute.WRAP_WITH_TRUSTED: True,
        },
    )
    untrusted = session.generate_key(KeyType.AES, 256, store=False)
    try:
        untrusted.wrap_key(private, mechanism=WRAP_MECHANISM)
    except pkcs11.KeyNotWrappable:
        return None
    finally:
        for obj in (untrusted, private, public):
            obj.destroy()
    return "the token lets an untrusted key wrap a CKA_WRAP_WITH_TRUSTED key"


# ---- keys that can be backed up ------------------------------------------------------


def generate_backupable_secp256k1(session: Any, key_id: str, mode: BackupKeyMode) -> bytes:
    """A persistent secp256k1 key, sensitive (never readable) but wrappable for backup.

    In TRUSTED mode it can be wrapped only by a trusted key. Returns the public key.
    """
    try:
        if find(session, ObjectClass.PRIVATE_KEY, key_id) is not None:
            raise KeyExists(key_id)
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters(SECP256K1_OID)},
            local=True,
        )
        public, _private = params.generate_keypair(
            store=True,
            id=key_id.encode(),
            label=key_id,
            public_template={Attribute.VERIFY: True},
            private_template={
                Attribute.SIGN: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: True,
                Attribute.PRIVATE: True,
                Attribute.WRAP_WITH_TRUSTED: mode is BackupKeyMode.TRUSTED,
            },
        )
        return _unwrap_ec_point(public[Attribute.EC_POINT])
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"key generation failed: {type(exc).__name__}") from exc


def wrap_private_key(session: Any, backup_key_id: str, key_id: str) -> bytes:
    """The private key `key_id` wrapped (AES key wrap with padding) under the backup key."""
    try:
        backup = find(session, ObjectClass.SECRET_KEY, backup_key_id)
        if backup is None:
            raise KeyNotFound(backup_key_id)
        private = find(session, ObjectClass.PRIVATE_KEY, key_id)
        if private is None:
            raise KeyNotFound(key_id)
        return bytes(backup.wrap_key(private, mechanism=WRAP_MECHANISM))
    except pkcs11.KeyNotWrappable as exc:
        raise BackupError(
            f"key {key_id} may be wrapped only by a trusted key, and {backup_key_id} is not one"
        ) from exc
    except pkcs11.KeyUnextractable as exc:
        raise BackupError(f"key {key_id} was created non-extractable: it has no backup") from exc
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"wrapping key {key_id} failed: {type(exc).__name__}") from exc


def unwrap_private_key(
    session: Any,
    backup_key_id: str,
    key_id: str,
    wrapped: bytes,
    public_key: bytes,
    *,
    mode: BackupKeyMode,
) -> None:
    """Restore key `key_id` from its wrapped form and its public key (from the manifest).

    The key is unwrapped as a session object first and must sign a test digest
    that verifies against `public_key`; only then are the persistent private and
    public objects made (hsm.key_import.install_unwrapped_secp256k1). Nothing is
    left behind when a step fails.
    """
    backup = find(session, ObjectClass.SECRET_KEY, backup_key_id)
    if backup is None:
        raise KeyNotFound(backup_key_id)
    try:
        install_unwrapped_secp256k1(
            session,
            backup,
            key_id,
            wrapped,
            public_key,
            mechanism=WRAP_MECHANISM,
            mechanism_param=None,
            template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: True,
                Attribute.PRIVATE: True,
                Attribute.WRAP_WITH_TRUSTED: mode is BackupKeyMode.TRUSTED,
            },
        )
    except UnwrapMismatch:
        raise BackupError(
            f"wrapped key {key_id} does not match its public key in the manifest"
        ) from None
    except UnwrapError as exc:
        # A wrong backup key or a tampered blob: RFC 5649's integrity check fails.
        raise BackupError(
            f"wrapped key {key_id} does not unwrap under {backup_key_id} "
            f"({type(exc.__cause__).__name__}): wrong backup key or damaged backup"
        ) from exc
    except pkcs11.PKCS11Error as exc:
        raise BackupError(
            f"wrapped key {key_id} could not be restored ({type(exc).__name__})"
        ) from exc
