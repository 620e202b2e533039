"""Key import, the token's side: an RSA import key, and unwrapping secp256k1 keys under it.

The import key is an RSA-3072 key pair made in the token. Its private half can
only unwrap (CKA_UNWRAP; never CKA_DECRYPT, which would make it an oracle that
hands any imported secret back in the clear) and is sensitive and never
extractable. Officers encrypt a key to its public half on their own machine
(hsm.import_material); C_UnwrapKey turns the blob into a private key object
with the same attributes as a key generated in the token (SIGNING_KEY_TEMPLATE):
the secret exists in the clear only on the officer's machine and inside the HSM.

python-pkcs11 cannot encode CKA_UNWRAP_TEMPLATE, so the token does not itself
force those attributes on what the import key unwraps: whoever holds the user
PIN could unwrap a blob into a readable object. The PIN holder is trusted
(DESIGN.md); without the PIN, the import key is useless.

Like a restore (hsm.backup), an import first unwraps into a session object that
must sign a test digest verifying against the public key the officer's CLI
computed; only then are the persistent private and public objects made, and
nothing is left behind when a step fails.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pkcs11
from coincurve import PublicKey
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.util.ec import encode_named_curve_parameters

from custos.common.secp256k1 import SignatureError, normalize
from custos.hsm.errors import HsmError, HsmUnavailable, KeyExists, KeyNotFound
from custos.hsm.pkcs11_token import SECP256K1_OID, SIGNING_KEY_TEMPLATE

IMPORT_KEY_BITS = 3072
# SoftHSM 2.6.1 accepts OAEP only with SHA-1 and MGF1-SHA-1 (hsm.import_material).
OAEP_PARAMS = (Mechanism.SHA_1, MGF.SHA1, None)


class UnwrapError(HsmError):
    """A wrapped key does not unwrap (wrong unwrapping key, or damaged); never names a secret."""


class UnwrapMismatch(UnwrapError):
    """A wrapped key unwraps, but is not the key whose public key came with it."""


# python-pkcs11 fills in every capability attribute of a template; SoftHSM refuses
# CKA_ENCRYPT, CKA_VERIFY and CKA_WRAP on a private key (CKR_ATTRIBUTE_TYPE_INVALID).
NOT_ON_PRIVATE_KEYS = {
    Attribute.ENCRYPT: DEFAULT,
    Attribute.VERIFY: DEFAULT,
    Attribute.WRAP: DEFAULT,
}


def find(session: Any, object_class: ObjectClass, key_id: str) -> Any:
    """The object of `object_class` with CKA_ID `key_id`, or None."""
    found = list(
        session.get_objects({Attribute.CLASS: object_class, Attribute.ID: key_id.encode()})
    )
    return found[0] if found else None


def _public_der(public: Any) -> bytes:
    numbers = rsa.RSAPublicNumbers(
        int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
        int.from_bytes(public[Attribute.MODULUS], "big"),
    )
    return numbers.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def create_import_key(session: Any, key_id: str) -> bytes:
    """Generate the import key pair; its public key as DER SubjectPublicKeyInfo."""
    try:
        if find(session, ObjectClass.PRIVATE_KEY, key_id) is not None:
            raise KeyExists(key_id)
        public, _private = session.generate_keypair(
            KeyType.RSA,
            IMPORT_KEY_BITS,
            store=True,
            id=key_id.encode(),
            label=key_id,
            public_template={
                Attribute.WRAP: True,
                Attribute.ENCRYPT: False,
                Attribute.VERIFY: False,
            },
            private_template={
                Attribute.UNWRAP: True,
                Attribute.DECRYPT: False,
                Attribute.SIGN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.PRIVATE: True,
            },
        )
        return _public_der(public)
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"import key generation failed: {type(exc).__name__}") from exc


def import_key_public(session: Any, key_id: str) -> bytes:
    """The import key's public key (DER SubjectPublicKeyInfo); KeyNotFound if there is none."""
    try:
        public = find(session, ObjectClass.PUBLIC_KEY, key_id)
        if public is None or find(session, ObjectClass.PRIVATE_KEY, key_id) is None:
            raise KeyNotFound(key_id)
        return _public_der(public)
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"reading the import key failed: {type(exc).__name__}") from exc


def install_unwrapped_secp256k1(
    session: Any,
    unwrapping_key: Any,
    key_id: str,
    wrapped: bytes,
    public_key: bytes,
    *,
    mechanism: Mechanism,
    mechanism_param: Any,
    template: dict[Attribute, Any],
    dry_run: bool = False,
) -> None:
    """Unwrap `wrapped` into persistent key `key_id`, proven to match `public_key` first.

    With `dry_run`, only the proof: the trial object is destroyed and nothing is kept.

    UnwrapError when the blob does not unwrap, UnwrapMismatch when it does not match; KeyExists when
    the token has the id. Everything made is destroyed when a step fails.
    """
    if find(session, ObjectClass.PRIVATE_KEY, key_id) is not None:
        raise KeyExists(key_id)
    public_key = PublicKey(public_key).format(compressed=False)
    made: list[Any] = []

    def unwrap(store: bool) -> Any:
        key = unwrapping_key.unwrap_key(
            ObjectClass.PRIVATE_KEY,
            KeyType.EC,
            wrapped,
            id=key_id.encode() if store else None,
            label=key_id if store else None,
            mechanism=mechanism,
            mechanism_param=mechanism_param,
            store=store,
            capabilities=MechanismFlag.SIGN,
            template={**NOT_ON_PRIVATE_KEYS, **template},
        )
        made.append(key)
        return key

    try:
        try:
            trial = unwrap(store=False)
        except pkcs11.PKCS11Error as exc:
            raise UnwrapError(
                f"wrapped key {key_id} does not unwrap ({type(exc).__name__}):"
                " made for another key, or damaged"
            ) from exc
        digest = hashlib.sha256(b"custos unwrap check " + key_id.encode()).digest()
        try:
            normalize(bytes(trial.sign(digest, mechanism=Mechanism.ECDSA)), digest, public_key)
        except SignatureError:
            raise UnwrapMismatch(f"wrapped key {key_id} does not match its public key") from None
        if dry_run:
            made.pop(0).destroy()
            return
        unwrap(store=True)
        made.append(
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                    Attribute.KEY_TYPE: KeyType.EC,
                    Attribute.EC_PARAMS: encode_named_curve_parameters(SECP256K1_OID),
                    # DER OCTET STRING, as SoftHSM returns for generated keys.
                    Attribute.EC_POINT: b"\x04\x41" + public_key,
                    Attribute.ID: key_id.encode(),
                    Attribute.LABEL: key_id,
                    Attribute.TOKEN: True,
                    Attribute.VERIFY: True,
                }
            )
        )
        made.pop(0).destroy()  # the trial session object
    except BaseException:
        for obj in made:
            with contextlib.suppress(pkcs11.PKCS11Error):
                obj.destroy()
        raise


def unwrap_imported_secp256k1(
    session: Any,
    import_key_id: str,
    key_id: str,
    wrapped: bytes,
    public_key: bytes,
    *,
    dry_run: bool = False,
    template: dict[Attribute, Any] | None = None,
) -> None:
    """Unwrap an officer's RSA-OAEP blob into a signing key like a generated one.

    `dry_run`: only prove that it unwraps into the key of `public_key` (a proposal).
    """
    try:
        import_key = find(session, ObjectClass.PRIVATE_KEY, import_key_id)
        if import_key is None:
            raise KeyNotFound(import_key_id)
        install_unwrapped_secp256k1(
            session,
            import_key,
            key_id,
            wrapped,
            public_key,
            mechanism=Mechanism.RSA_PKCS_OAEP,
            mechanism_param=OAEP_PARAMS,
            template=dict(SIGNING_KEY_TEMPLATE if template is None else template),
            dry_run=dry_run,
        )
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"importing key {key_id} failed: {type(exc).__name__}") from exc


def unwrap_seed(session: Any, import_key_id: str, wrapped: bytes) -> bytes:
    """An officer's RSA-OAEP blob of a BIP39 seed, unwrapped and read once (hsm.hd.import_seed).

    The seed is unwrapped into a session object (never stored) that this worker
    reads and destroys at once: the HD seam keeps a seed sealed, not as a token
    object, and SoftHSM cannot seal an object it holds (hsm.hd says why the seed
    is in a worker's memory anyway). UnwrapError when the blob does not unwrap.
    """
    import_key = find(session, ObjectClass.PRIVATE_KEY, import_key_id)
    if import_key is None:
        raise KeyNotFound(import_key_id)
    try:
        secret = import_key.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.GENERIC_SECRET,
            wrapped,
            mechanism=Mechanism.RSA_PKCS_OAEP,
            mechanism_param=OAEP_PARAMS,
            store=False,
            capabilities=MechanismFlag(0),
            template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
    except pkcs11.PKCS11Error as exc:
        raise UnwrapError(
            f"the wrapped seed does not unwrap ({type(exc).__name__}): made for another key,"
            " or damaged"
        ) from exc
    try:
        return bytes(secret[Attribute.VALUE])
    finally:
        with contextlib.suppress(pkcs11.PKCS11Error):
            secret.destroy()
