"""One process's connection to a PKCS#11 token (python-pkcs11).

SoftHSM is initialized by python-pkcs11 with C_Initialize(NULL), i.e. without
library locking, and python-pkcs11 drops the GIL around each call: two threads
signing at once crash the process. Every call here therefore holds one lock.
Use several processes (hsm.pool) for several cores.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import encode_named_curve_parameters

from custos.hsm.errors import HsmConfigError, HsmUnavailable, KeyExists, KeyNotFound, TokenNotFound

if TYPE_CHECKING:
    from custos.hsm.backup_file import BackupEntry, VerifyReport, WalletBackupEntry

SECP256K1_OID = "1.3.132.0.10"
ED25519_OID = "1.3.101.112"  # SoftHSM 2.6.1 generates and signs with Ed25519 (CKM_EDDSA)
# A key used only to prove, in health checks, that the token still signs. Its id
# cannot collide with service keys, whose ids start with [a-z0-9].
HEALTH_KEY_ID = "_health"
# The private half of the token's own keys (audit, events, health): sensitive and
# never extractable, with no backup: they are made again on a new token.
OWN_KEY_TEMPLATE = {
    Attribute.SIGN: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.PRIVATE: True,
}
# The private half of every signing key, generated or imported (hsm.key_import),
# alike in the token: sensitive (CKA_VALUE never readable) but extractable, because
# a key that cannot be wrapped cannot be backed up (hsm.backup_file), and
# CKA_EXTRACTABLE cannot be set later. PKCS#11 then lets it leave only wrapped.
# On SoftHSM the backup key cannot be trusted (hsm.backup, PRIVATE mode), so
# CKA_WRAP_WITH_TRUSTED is not set: whoever holds the user PIN could wrap it under
# a key of their own; the service wraps only under the backup key, and the PIN
# holder is trusted (README, Backup and restore). Keys made before this are not
# extractable and have no backup.
SIGNING_KEY_TEMPLATE = {**OWN_KEY_TEMPLATE, Attribute.EXTRACTABLE: True}


def _unwrap_ec_point(value: bytes) -> bytes:
    # CKA_EC_POINT comes back as a DER OCTET STRING: 04 41 04 <x> <y>.
    if len(value) == 67 and value[:2] == b"\x04\x41":
        return value[2:]
    if len(value) == 65 and value[0] == 4:
        return value
    raise HsmUnavailable("token returned an EC point in an unexpected encoding")


# Seconds between log-in attempts while the token is in a transient state (~6 s in all).
LOGIN_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.5, 2.0)

# What a token being rewritten by another process looks like at log-in.
_TRANSIENT_LOGIN_ERRORS: tuple[type[Exception], ...] = (
    pkcs11.UserPinNotInitialized,
    pkcs11.TokenNotRecognised,
    pkcs11.TokenNotPresent,
    pkcs11.DeviceError,
    pkcs11.DeviceRemoved,
    pkcs11.GeneralError,
)


class TransientTokenState(TokenNotFound):
    """The token is absent or half-read right now; log-in may succeed a moment later."""


# Sessions open per library in this process: the library may be re-initialized
# (which ends every session of the process) only while there are none.
_open_sessions: dict[str, int] = {}


def _reset_library(library: str) -> None:
    """A fresh C_Initialize, so SoftHSM scans its token files again (if nothing is open)."""
    if _open_sessions.get(library, 0) == 0:
        # A failure here shows again, clearly, in the next attempt.
        with contextlib.suppress(pkcs11.PKCS11Error):
            pkcs11.lib(library).reinitialize()


def _open_session(library: str, label: str, pin: str) -> pkcs11.Session:
    """One log-in attempt: TransientTokenState for states that pass, else a clear error."""
    try:
        lib = pkcs11.lib(library)
    except (OSError, RuntimeError, pkcs11.PKCS11Error) as exc:
        raise HsmConfigError(f"cannot load PKCS#11 library {library!r}") from exc
    try:
        token = lib.get_token(token_label=label)
    except pkcs11.NoSuchToken as exc:
        raise TransientTokenState(f"no token labelled {label!r} (is SOFTHSM2_CONF set?)") from exc
    except pkcs11.MultipleTokensReturned as exc:
        raise HsmConfigError(f"several tokens labelled {label!r}") from exc
    except pkcs11.PKCS11Error as exc:
        raise TransientTokenState(f"cannot list tokens: {type(exc).__name__}") from exc
    try:
        return token.open(user_pin=pin, rw=True)
    except pkcs11.UserAlreadyLoggedIn:
        # PKCS#11 logins are per process: another session here already logged in.
        return token.open(rw=True)
    except pkcs11.PinIncorrect as exc:
        raise HsmConfigError(f"wrong PIN for token {label!r}") from exc
    except pkcs11.PinLocked as exc:
        raise HsmConfigError(f"PIN of token {label!r} is locked") from exc
    except _TRANSIENT_LOGIN_ERRORS as exc:
        raise TransientTokenState(
            f"cannot log in to token {label!r}: {type(exc).__name__}"
        ) from exc
    except pkcs11.PKCS11Error as exc:
        raise HsmConfigError(f"cannot log in to token {label!r}: {type(exc).__name__}") from exc


class Pkcs11Token:
    """Logged-in session on the token with `label`; all calls serialized."""

    def __init__(self, library: str, label: str, pin: str, wrap_with_trusted: bool = False) -> None:
        self._lock = threading.Lock()
        # backup.mode = "trusted" (hsm.backup.BackupKeyMode.TRUSTED): every signing key
        # made here can then be wrapped only by a key the security officer trusted.
        self._wrap_with_trusted = wrap_with_trusted
        self._signing_template = {
            **SIGNING_KEY_TEMPLATE,
            Attribute.WRAP_WITH_TRUSTED: wrap_with_trusted,
        }
        self._handles: dict[str, Any] = {}
        # SoftHSM rewrites token.object in place (login bookkeeping, object changes):
        # a process reading it meanwhile sees no token or a token without a user
        # PIN. Those states pass; retry them with backoff, with a fresh library
        # initialization each time (SoftHSM scans its tokens at C_Initialize).
        # Never retry a wrong or locked PIN: a real HSM locks it after a few tries.
        delays = iter(LOGIN_BACKOFF)
        while True:
            try:
                self._session = _open_session(library, label, pin)
                break
            except TransientTokenState as exc:
                delay = next(delays, None)
                if delay is None:
                    waited = sum(LOGIN_BACKOFF)
                    raise TokenNotFound(
                        f"{exc} (still after {len(LOGIN_BACKOFF) + 1} attempts over "
                        f"{waited:.0f} s; is another process rewriting the token?)"
                    ) from exc
                time.sleep(delay)
                _reset_library(library)
        _open_sessions[library] = _open_sessions.get(library, 0) + 1
        self._library = library
        self._closed = False
        self.label = label

    def _generate_pair(
        self,
        key_type: KeyType,
        oid: str,
        key_id: str,
        mechanism: Mechanism | None = None,
        template: dict[Attribute, Any] = OWN_KEY_TEMPLATE,
    ) -> tuple[Any, Any]:
        """A persistent key pair whose private half is sensitive (and as `template` says)."""
        params = self._session.create_domain_parameters(
            key_type, {Attribute.EC_PARAMS: encode_named_curve_parameters(oid)}, local=True
        )
        return params.generate_keypair(
            mechanism=mechanism,
            store=True,
            id=key_id.encode(),
            label=key_id,
            public_template={Attribute.VERIFY: True},
            private_template=dict(template),
        )

    def generate_secp256k1(self, key_id: str) -> bytes:
        with self._lock:
            try:
                if self._find(ObjectClass.PRIVATE_KEY, key_id.encode()) is not None:
                    raise KeyExists(key_id)
                public, private = self._generate_pair(
                    KeyType.EC, SECP256K1_OID, key_id, template=self._signing_template
                )
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"key generation failed: {type(exc).__name__}") from exc
            self._handles[key_id] = private
            return _unwrap_ec_point(public[Attribute.EC_POINT])

    # -- key import (hsm.key_import): the RSA import key and unwrapping under it ----------

    def create_import_key(self, key_id: str) -> bytes:
        """Generate the RSA import key; its public key (DER). KeyExists if there is one."""
        from custos.hsm import key_import  # noqa: PLC0415 - key_import imports this module

        with self._lock:
            return key_import.create_import_key(self._session, key_id)

    def import_key_public(self, key_id: str) -> bytes:
        """The import key's public key (DER SubjectPublicKeyInfo); KeyNotFound if none."""
        from custos.hsm import key_import  # noqa: PLC0415

        with self._lock:
            return key_import.import_key_public(self._session, key_id)

    def unwrap_seed(self, import_key_id: str, wrapped: bytes) -> bytes:
        """A BIP39 seed from an RSA-OAEP blob, read once (hsm.key_import.unwrap_seed)."""
        from custos.hsm import key_import  # noqa: PLC0415

        with self._lock:
            return key_import.unwrap_seed(self._session, import_key_id, wrapped)

    def unwrap_secp256k1(
        self,
        import_key_id: str,
        key_id: str,
        wrapped: bytes,
        public_key: bytes,
        dry_run: bool = False,
    ) -> None:
        """Unwrap an RSA-OAEP blob into signing key `key_id`, proven to match `public_key`."""
        from custos.hsm import key_import  # noqa: PLC0415

        with self._lock:
            key_import.unwrap_imported_secp256k1(
                self._session,
                import_key_id,
                key_id,
                wrapped,
                public_key,
                dry_run=dry_run,
                template=self._signing_template,
            )

    # -- backups (hsm.backup, hsm.backup_file): the backup key, files, restore ------------

    def create_backup_key(self, key_id: str, threshold: int, count: int) -> list[str]:
        """Generate the AES-256 backup key; its `count` SLIP-39 shares, `threshold` needed.

        The value leaves the token only as shares. KeyExists if there is one.
        """
        from custos.hsm import backup  # noqa: PLC0415 - backup imports this module
        from custos.hsm.hd import wipe  # noqa: PLC0415
        from custos.hsm.key_import import find  # noqa: PLC0415

        with self._lock:
            if self._wrap_with_trusted:
                raise backup.BackupError(
                    "backup mode trusted: the security officer makes the backup key"
                    " (CKA_TRUSTED), never the service"
                )
            if find(self._session, ObjectClass.SECRET_KEY, key_id) is not None:
                raise KeyExists(key_id)
            raw = backup.new_backup_key_value(self._session)
            value = bytearray(raw)
            try:
                shares = backup.split_backup_key(raw, threshold, count)
            except BaseException:
                wipe(value)
                raise
            finally:
                wipe(raw)  # the copy install_backup_key does not wipe
            backup.install_backup_key(self._session, key_id, value, backup.BackupKeyMode.PRIVATE)
            return shares

    def make_backup(
        self,
        backup_key_id: str,
        entries: Sequence[BackupEntry],
        created_at_ms: int,
        wallets: Sequence[WalletBackupEntry] = (),
    ) -> tuple[bytes, tuple[str, ...]]:
        """The backup file of `entries` and `wallets`, and what was left out
        (hsm.backup_file.make)."""
        from custos.hsm import backup_file  # noqa: PLC0415

        with self._lock:
            return backup_file.make(self._session, backup_key_id, entries, created_at_ms, wallets)

    def verify_backup(
        self,
        backup_key_id: str,
        data: bytes,
        current: Mapping[str, bytes],
        current_wallets: Sequence[WalletBackupEntry] = (),
    ) -> VerifyReport:
        """Check a backup file against the backup key, the current keys and wallets."""
        from custos.hsm import backup_file  # noqa: PLC0415

        with self._lock:
            return backup_file.verify(self._session, backup_key_id, data, current, current_wallets)

    def restore_backup(
        self, backup_key_id: str, shares: Sequence[str], data: bytes
    ) -> tuple[tuple[BackupEntry, ...], tuple[WalletBackupEntry, ...]]:
        """Restore a backup file onto this (empty) token; all or nothing."""
        from custos.hsm import backup_file  # noqa: PLC0415

        with self._lock:
            return backup_file.restore(self._session, backup_key_id, shares, data)

    def discard_restore(
        self, backup_key_id: str, key_ids: Sequence[str], seal_key_id: str | None = None
    ) -> None:
        """Destroy what a restore made (its keys, wallet seal key and backup key): its
        records could not be registered, and a token must not hold keys its store does
        not know."""
        from custos.hsm import backup_file  # noqa: PLC0415

        with self._lock:
            backup_file.discard(self._session, backup_key_id, key_ids, seal_key_id)

    def trusted_backup_problem(self, backup_key_id: str) -> str | None:
        """Why this token cannot serve backup mode "trusted"; None when it can."""
        from custos.hsm import backup  # noqa: PLC0415

        with self._lock:
            return backup.trusted_mode_problem(self._session, backup_key_id)

    def export_wrapped(self, key_id: str, recipient_der: bytes) -> bytes:
        """Key `key_id` wrapped to a recipient's RSA public key (hsm.key_export)."""
        from custos.hsm import key_export  # noqa: PLC0415 - key_export imports key_import

        with self._lock:
            return key_export.export_wrapped(self._session, key_id, recipient_der)

    def export_seed(
        self, seal_key_id: str, sealed: bytes, aad: bytes, recipient_der: bytes
    ) -> bytes:
        """A wallet's sealed seed, unsealed in this worker and wrapped to a recipient's RSA
        key inside the token (hsm.key_export.export_seed_wrapped); the clear seed is
        overwritten before this returns."""
        from custos.hsm import key_export  # noqa: PLC0415 - key_export imports key_import
        from custos.hsm.hd import wipe  # noqa: PLC0415

        key_export.recipient_numbers(recipient_der)  # a bad recipient unseals nothing
        try:
            plain = self.unseal(seal_key_id, sealed, aad)
        except HsmUnavailable as exc:
            raise HsmUnavailable("the wallet's sealed seed does not unseal under its key") from exc
        try:
            with self._lock:
                return key_export.export_seed_wrapped(self._session, plain, recipient_der)
        finally:
            wipe(plain)

    def public_key(self, key_id: str) -> bytes:
        with self._lock:
            try:
                public = self._find(ObjectClass.PUBLIC_KEY, key_id.encode())
                if public is None:
                    raise KeyNotFound(key_id)
                return _unwrap_ec_point(public[Attribute.EC_POINT])
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"reading public key failed: {type(exc).__name__}") from exc

    def sign_raw(self, key_id: str, digest: bytes) -> bytes:
        """Raw CKM_ECDSA over a 32-byte digest: r||s, not normalized."""
        return self._sign(key_id, digest, Mechanism.ECDSA)

    def ed25519_public_key(self, key_id: str) -> bytes:
        """The 32-byte public key of Ed25519 key `key_id`; KeyNotFound if the token lacks it."""
        with self._lock:
            try:
                public = self._find(ObjectClass.PUBLIC_KEY, key_id.encode())
                if public is None:
                    raise KeyNotFound(key_id)
                point = bytes(public[Attribute.EC_POINT])
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"reading public key failed: {type(exc).__name__}") from exc
        return point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point

    def ensure_ed25519(self, key_id: str) -> bytes:
        """The 32-byte public key of Ed25519 key `key_id`, generated in the token if missing."""
        ident = key_id.encode()
        with self._lock:
            try:
                public = self._find(ObjectClass.PUBLIC_KEY, ident)
                if public is None:
                    public, _private = self._generate_pair(
                        KeyType.EC_EDWARDS, ED25519_OID, key_id, Mechanism.EC_EDWARDS_KEY_PAIR_GEN
                    )
                point = bytes(public[Attribute.EC_POINT])
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"Ed25519 key set-up failed: {type(exc).__name__}") from exc
        # DER OCTET STRING around the 32-byte point, as for secp256k1.
        return point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point

    def sign_eddsa(self, key_id: str, message: bytes) -> bytes:
        """Pure Ed25519 (CKM_EDDSA) signature over `message`."""
        return self._sign(key_id, message, Mechanism.EDDSA)

    def _sign(self, key_id: str, data: bytes, mechanism: Mechanism) -> bytes:
        with self._lock:
            try:
                private = self._handles.get(key_id)
                if private is None:
                    # Finding objects scans every key file of SoftHSM's store: cache the handle.
                    private = self._find(ObjectClass.PRIVATE_KEY, key_id.encode())
                    if private is None:
                        raise KeyNotFound(key_id)
                    self._handles[key_id] = private
                return bytes(private.sign(data, mechanism=mechanism))
            except pkcs11.PKCS11Error as exc:
                # A stale handle (token removed and back) must be found afresh next time.
                self._handles.pop(key_id, None)
                raise HsmUnavailable(f"signing failed: {type(exc).__name__}") from exc

    def ensure_aes_key(self, key_id: str) -> None:
        """Create a sensitive, non-extractable AES-256 key for wrapping secrets, if missing."""
        ident = key_id.encode()
        with self._lock:
            try:
                if self._find(ObjectClass.SECRET_KEY, ident) is None:
                    self._session.generate_key(
                        KeyType.AES,
                        256,
                        store=True,
                        id=ident,
                        label=key_id,
                        template={
                            Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: False,
                            Attribute.ENCRYPT: True,
                            Attribute.DECRYPT: True,
                        },
                    )
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"AES key set-up failed: {type(exc).__name__}") from exc

    def ensure_seal_key(self, key_id: str) -> None:
        """Create the wallet seal key if missing: an AES-256 key like ensure_aes_key's, but
        wrappable (sensitive, CKA_EXTRACTABLE) so that a backup can carry it wrapped under
        the backup key, and no seed need ever be unsealed for a backup (hsm.backup_file)."""
        from custos.hsm import backup, backup_file  # noqa: PLC0415

        mode = (
            backup.BackupKeyMode.TRUSTED
            if self._wrap_with_trusted
            else backup.BackupKeyMode.PRIVATE
        )
        ident = key_id.encode()
        with self._lock:
            try:
                if self._find(ObjectClass.SECRET_KEY, ident) is None:
                    self._session.generate_key(
                        KeyType.AES,
                        256,
                        store=True,
                        id=ident,
                        label=key_id,
                        template=backup_file.seal_key_template(mode),
                    )
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"seal key set-up failed: {type(exc).__name__}") from exc

    def seal(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM inside the token: returns nonce || ciphertext || tag."""
        nonce = self._random(12)
        return nonce + self._gcm(key_id, "encrypt", plaintext, nonce, aad)

    def unseal(self, key_id: str, sealed: bytes, aad: bytes) -> bytes:
        """Inverse of seal(); HsmUnavailable when the tag does not verify."""
        return self._gcm(key_id, "decrypt", sealed[12:], sealed[:12], aad)

    def random_bytes(self, size: int) -> bytes:
        """`size` bytes from the token's random generator (C_GenerateRandom)."""
        try:
            return self._random(size)
        except pkcs11.PKCS11Error as exc:
            raise HsmUnavailable(f"random generation failed: {type(exc).__name__}") from exc

    def sign_with_session_key(self, private_key: bytes, digest: bytes) -> bytes:
        """Raw CKM_ECDSA with a secp256k1 key imported only for this one signature.

        For keys derived outside the token (hsm.hd): the key becomes a session
        object (CKA_TOKEN false: never written to the token's store), sensitive
        and non-extractable, and is destroyed before this returns, also on error.
        """
        template = {
            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
            Attribute.KEY_TYPE: KeyType.EC,
            Attribute.EC_PARAMS: encode_named_curve_parameters(SECP256K1_OID),
            Attribute.VALUE: private_key,
            Attribute.TOKEN: False,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DERIVE: False,
        }
        with self._lock:
            key: Any = None
            try:
                key = self._session.create_object(template)
                return bytes(key.sign(digest, mechanism=Mechanism.ECDSA))
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(
                    f"signing with a derived key failed: {type(exc).__name__}"
                ) from exc
            finally:
                if key is not None:
                    # Session objects also vanish with the session; destroy it now.
                    with contextlib.suppress(pkcs11.PKCS11Error):
                        key.destroy()

    def _random(self, size: int) -> bytes:
        with self._lock:
            return bytes(self._session.generate_random(size * 8))

    def _gcm(self, key_id: str, operation: str, data: bytes, nonce: bytes, aad: bytes) -> bytes:
        with self._lock:
            try:
                key = self._find(ObjectClass.SECRET_KEY, key_id.encode())
                if key is None:
                    raise KeyNotFound(key_id)
                params = GCMParams(nonce, aad, 128)
                return bytes(
                    getattr(key, operation)(
                        data, mechanism=Mechanism.AES_GCM, mechanism_param=params
                    )
                )
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"AES-GCM {operation} failed: {type(exc).__name__}") from exc

    def ensure_health_key(self) -> None:
        """Create the health-check key if the token does not have it yet."""
        try:
            self.public_key(HEALTH_KEY_ID)
        except KeyNotFound:
            self.generate_secp256k1(HEALTH_KEY_ID)

    def ping(self) -> None:
        """Sign with the health key: raises HsmUnavailable unless the token really signs.

        Cheaper probes (C_GenerateRandom, C_GetTokenInfo) keep answering when
        SoftHSM's token files are gone, so they prove nothing about signing.
        """
        try:
            self.sign_raw(HEALTH_KEY_ID, bytes(32))
        except KeyNotFound as exc:
            raise HsmUnavailable("the token has lost its health-check key") from exc

    def _find(self, object_class: ObjectClass, ident: bytes) -> Any:
        found = list(
            self._session.get_objects({Attribute.CLASS: object_class, Attribute.ID: ident})
        )
        return found[0] if found else None

    def close(self) -> None:
        with self._lock:
            self._handles.clear()
            if not self._closed:
                self._closed = True
                self._session.close()
                _open_sessions[self._library] -= 1

    # -- state authentication (HMAC-SHA256 under a secret key in the token) ----------

    def create_hmac_key(self, key_id: str) -> None:
        """Create a sensitive, never-extractable HMAC-SHA256 key; KeyExists if there is one.

        Only an explicit set-up step calls this: a key created silently at start-up
        would let a missing key pass for a fresh deployment.
        """
        ident = key_id.encode()
        with self._lock:
            try:
                if self._find(ObjectClass.SECRET_KEY, ident) is not None:
                    raise KeyExists(key_id)
                self._session.generate_key(
                    KeyType.GENERIC_SECRET,
                    256,
                    store=True,
                    id=ident,
                    label=key_id,
                    template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.SIGN: True,
                        Attribute.VERIFY: True,
                        Attribute.ENCRYPT: False,
                        Attribute.DECRYPT: False,
                        Attribute.WRAP: False,
                        Attribute.UNWRAP: False,
                        Attribute.DERIVE: False,
                        Attribute.PRIVATE: True,
                    },
                )
            except pkcs11.PKCS11Error as exc:
                raise HsmUnavailable(f"HMAC key set-up failed: {type(exc).__name__}") from exc

    def hmac_many(self, key_id: str, messages: list[bytes]) -> list[bytes]:
        """HMAC-SHA256 of each message under secret key `key_id`, in order."""
        with self._lock:
            try:
                key = self._handles.get(key_id)
                if key is None:
                    # Cached like signing keys: a find scans every object file.
                    key = self._find(ObjectClass.SECRET_KEY, key_id.encode())
                    if key is None:
                        raise KeyNotFound(key_id)
                    self._handles[key_id] = key
                return [bytes(key.sign(m, mechanism=Mechanism.SHA256_HMAC)) for m in messages]
            except pkcs11.PKCS11Error as exc:
                self._handles.pop(key_id, None)
                raise HsmUnavailable(f"HMAC failed: {type(exc).__name__}") from exc
