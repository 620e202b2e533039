"""Key import: bring an existing secp256k1 key under custody without its secret crossing in clear.

The officer's CLI encrypts the key to the HSM's RSA import key
(hsm.import_material); this module checks what came with the blob, has the
HSM unwrap it into a sensitive, non-extractable key (hsm.key_import) and
registers the key with origin "imported". The blob is never stored, logged or
audited: the audit record names the key, its public key and addresses, and the
fingerprint of the import key it was encrypted to.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass

from coincurve import PublicKey

from custos.audit.record import AuditEvent
from custos.hsm.bip32 import DerivationError, format_path, parse_path
from custos.hsm.errors import HsmUnavailable, KeyExists, KeyNotFound
from custos.hsm.import_material import SOURCES, import_key_fingerprint
from custos.hsm.key_import import IMPORT_KEY_BITS, UnwrapError, UnwrapMismatch
from custos.hsm.keystore import KeyImporter
from custos.proto.custos.v1 import keys_pb2
from custos.signer.chains.networks import NetworkClass, network_class, parse_network_class
from custos.signer.chains.registry import all_addresses
from custos.signer.edge.errors import AlreadyExists, FailedPrecondition, InvalidRequest, Unavailable
from custos.signer.store.base import KeyRecord, KeyState, Store
from custos.signer.usecases.authenticity import StateAuthenticator
from custos.signer.usecases.keys import IMPORTED, check_key_id, key_fact

# The token id of the import key: ids of service keys start with [a-z0-9], so no clash.
IMPORT_KEY_ID = "_import"
WRAPPED_BYTES = IMPORT_KEY_BITS // 8  # an RSA-OAEP ciphertext is as long as the modulus
MAX_PATH_CHARS = 64
IMPORT_KEY_ALGORITHM = f"rsa-{IMPORT_KEY_BITS}-oaep-sha1"


@dataclass(frozen=True, slots=True)
class ImportKeyInfo:
    """The import key as officers see it: its public key and the fingerprint they pin."""

    public_key_der: bytes
    fingerprint: str


@dataclass(frozen=True, slots=True)
class WrappedImport:
    """What an officer's CLI sends: everything but the secret is in the clear."""

    key_id: str
    network_class: str
    wrapped_key: bytes  # RSA-OAEP(import key, PKCS#8 private key)
    public_key: bytes  # SEC1, computed by the CLI; the HSM proves the blob matches it
    import_key_fingerprint: str
    source: str  # hex | wif | keystore | mnemonic: audited, not trusted for anything
    path: str = ""  # the derivation path of a mnemonic


def wrapped_of_message(
    message: keys_pb2.ImportKeyRequest, key_id: str, network_class: str
) -> WrappedImport:
    """An ImportKeyRequest (alone, or in a ceremony naming key and class) as a domain value."""
    return WrappedImport(
        key_id=key_id,
        network_class=network_class,
        wrapped_key=message.wrapped_key,
        public_key=message.public_key,
        import_key_fingerprint=message.import_key_fingerprint,
        source=message.source,
        path=message.path,
    )


NO_PATH = "-"  # the path parameter of a ceremony importing anything but a mnemonic


def import_params(request: WrappedImport) -> dict[str, str]:
    """An import as ceremony parameters (strings, all non-empty): what approvers bind to."""
    return {
        "key_id": request.key_id,
        "network_class": request.network_class,
        "wrapped_key": base64.b64encode(request.wrapped_key).decode(),
        "public_key": request.public_key.hex(),
        "import_key_fingerprint": request.import_key_fingerprint,
        "source": request.source,
        "path": request.path or NO_PATH,
    }


def wrapped_from_params(params: Mapping[str, str]) -> WrappedImport:
    """The inverse of import_params; InvalidRequest naming a parameter that does not decode."""
    try:
        wrapped_key = base64.b64decode(params["wrapped_key"], validate=True)
    except (KeyError, ValueError):
        raise InvalidRequest("wrapped_key: not base64") from None
    try:
        public_key = bytes.fromhex(params["public_key"])
    except (KeyError, ValueError):
        raise InvalidRequest("public_key: not hex") from None
    path = params.get("path", "")
    return WrappedImport(
        key_id=params.get("key_id", ""),
        network_class=params.get("network_class", ""),
        wrapped_key=wrapped_key,
        public_key=public_key,
        import_key_fingerprint=params.get("import_key_fingerprint", ""),
        source=params.get("source", ""),
        path="" if path == NO_PATH else path,
    )


def key_addresses(record: KeyRecord) -> list[str]:
    """The addresses of a key on the networks of its class, as `chain/network/kind:address`."""
    return [
        f"{a.chain}/{a.network}/{a.kind}:{a.address}"
        for a in all_addresses(record.public_key)
        if network_class(a.chain, a.network) == record.network_class
    ]


class KeyImports:
    """Holds the import key and turns officers' wrapped keys into registered, imported keys."""

    def __init__(
        self, store: Store, importer: KeyImporter, *, integrity: StateAuthenticator
    ) -> None:
        self._store = store
        self._importer = importer
        self._integrity = integrity

    def create_import_key(
        self, actor: str, context: Mapping[str, str] | None = None
    ) -> tuple[ImportKeyInfo, AuditEvent]:
        """Generate the import key in the HSM (once): it and its audit record, to be
        stored with the ceremony that made it. AlreadyExists if there is one."""
        try:
            der = self._importer.create_import_key(IMPORT_KEY_ID)
        except KeyExists:
            raise AlreadyExists(
                "the import key exists already (custos keys import-key show)"
            ) from None
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not generate the import key; retry") from exc
        info = ImportKeyInfo(der, import_key_fingerprint(der))
        event = AuditEvent(
            "import_key.created",
            actor,
            {
                "algorithm": IMPORT_KEY_ALGORITHM,
                "fingerprint": info.fingerprint,
                **(context or {}),
            },
        )
        return info, event

    def import_key(self) -> ImportKeyInfo:
        """The current import key; FailedPrecondition when none was made."""
        try:
            der = self._importer.import_key_public(IMPORT_KEY_ID)
        except KeyNotFound:
            raise FailedPrecondition(
                "there is no import key yet (custos keys import-key init)"
            ) from None
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not read the import key; retry") from exc
        return ImportKeyInfo(der, import_key_fingerprint(der))

    def check(
        self, request: WrappedImport, *, unwrap_trial: bool = False
    ) -> tuple[NetworkClass, bytes, str]:
        """Everything that can be checked before the key is made: fields, the import key, ids.

        InvalidRequest naming the field, FailedPrecondition for a blob made for
        another import key, AlreadyExists for a key id or a public key in custody.
        `unwrap_trial`: the HSM also proves that the blob unwraps into the key of
        `public_key` and keeps nothing (a proposal: approvers never approve a
        blob that cannot be imported). Returns the network class, the uncompressed
        public key and the canonical path.
        """
        network_class, public_key, path = _checked(request)
        current = self.import_key()
        if request.import_key_fingerprint != current.fingerprint:
            raise FailedPrecondition(
                "import_key_fingerprint: the key was encrypted to another import key than"
                f" the HSM's ({current.fingerprint}); encrypt it again"
            )
        if self._store.get_key(request.key_id) is not None:
            raise AlreadyExists(f"key {request.key_id!r} already exists")
        for other in self._store.list_keys():
            if other.public_key == public_key:
                raise AlreadyExists(
                    f"public_key: this key is already in custody as key {other.key_id!r}"
                )
        if unwrap_trial:
            self._unwrap(request, public_key, dry_run=True)
        return network_class, public_key, path

    def new_imported_key(
        self,
        request: WrappedImport,
        actor: str,
        context: Mapping[str, str | int] | None = None,
    ) -> tuple[KeyRecord, AuditEvent]:
        """Unwrap the key into the HSM: its tagged record and audit event, unstored.

        Call under `store.exclusive(f"key:{key_id}")`, after check(); checks again
        what may have changed since. `context`: more audit fields.
        """
        network_class, public_key, path = self.check(request)
        adopted = self._unwrap(request, public_key)
        record = KeyRecord(
            request.key_id,
            public_key,
            KeyState.ENABLED,
            actor,
            time.time_ns() // 10**6,
            network_class,
            origin=IMPORTED,
        )
        record = dataclasses.replace(record, mac=self._integrity.tag(key_fact(record)))
        event = AuditEvent(
            "key.imported",
            actor,
            {
                "key_id": record.key_id,
                "origin": IMPORTED,
                "public_key": public_key.hex(),
                "addresses": key_addresses(record),
                "network_class": network_class,
                "import_key_fingerprint": request.import_key_fingerprint,
                "source": request.source,
                "path": path,
                "adopted": adopted,
                "row_version": record.version,
                **(context or {}),
            },
        )
        return record, event

    def _unwrap(self, request: WrappedImport, public_key: bytes, *, dry_run: bool = False) -> bool:
        """Unwrap into the token; True when a previous attempt had (adopted, never replaced)."""
        try:
            self._importer.unwrap_secp256k1(
                IMPORT_KEY_ID, request.key_id, request.wrapped_key, public_key, dry_run=dry_run
            )
        except KeyExists:
            # A previous import unwrapped the key but failed to register it: only
            # the same key (same public key) is adopted; another one is refused.
            if self._importer.public_key(request.key_id) != public_key:
                raise AlreadyExists(
                    f"key {request.key_id!r}: the HSM holds another key under this id"
                ) from None
            return True
        except UnwrapMismatch:
            raise InvalidRequest(
                "wrapped_key: the key it holds does not match public_key"
            ) from None
        except UnwrapError:
            raise InvalidRequest(
                "wrapped_key: does not unwrap under the import key (damaged, or made for"
                " another import key)"
            ) from None
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not import the key; retry later") from exc
        return False


def _checked(request: WrappedImport) -> tuple[NetworkClass, bytes, str]:
    """Validate everything but the blob's contents; InvalidRequest naming the field."""
    check_key_id(request.key_id)
    try:
        chosen = parse_network_class(request.network_class)
    except ValueError as exc:
        raise InvalidRequest(f"network_class: {exc}") from None
    try:
        public_key = PublicKey(request.public_key).format(compressed=False)
    except ValueError:
        raise InvalidRequest("public_key: not a secp256k1 public key (SEC1)") from None
    if len(request.wrapped_key) != WRAPPED_BYTES:
        raise InvalidRequest(
            f"wrapped_key: {len(request.wrapped_key)} bytes, an RSA-{IMPORT_KEY_BITS}"
            f" ciphertext has {WRAPPED_BYTES}"
        )
    if request.source not in SOURCES:
        raise InvalidRequest(f"source: one of {', '.join(SOURCES)}")
    path = ""
    if request.source == "mnemonic":
        if len(request.path) > MAX_PATH_CHARS:
            raise InvalidRequest(f"path: longer than {MAX_PATH_CHARS} characters")
        try:
            path = format_path(parse_path(request.path))
        except DerivationError as exc:
            raise InvalidRequest(f"path: {exc}") from None
    elif request.path:
        raise InvalidRequest("path: only a mnemonic has a derivation path")
    return chosen, public_key, path
