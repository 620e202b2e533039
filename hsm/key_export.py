"""Migration out, the token's side: one key wrapped, inside the HSM, to a recipient's RSA key.

The output has the layout of PKCS#11's CKM_RSA_AES_KEY_WRAP: RSA-OAEP(recipient,
ephemeral AES-256 key) || AES-KWP(ephemeral key, PKCS#8 private key), so an HSM
with that mechanism unwraps it in one call and anyone else with two standard
steps. SoftHSM 2.6.1 has no CKM_RSA_AES_KEY_WRAP and its RSA C_WrapKey wraps
only secret keys (an EC private key gives CKR_KEY_NOT_WRAPPABLE; measured,
tests/integration/test_backup_hsm.py::test_softhsm_export_facts), so this does the two steps
itself with C_WrapKey: the ephemeral key is made in the token as a session
object, is never read, and is destroyed at the end. OAEP uses SHA-1 and
MGF1-SHA-1, the only parameters SoftHSM accepts (SHA-256 gives
CKR_ARGUMENTS_BAD); with OAEP, SHA-1 is still sound (no collision resistance
is needed).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from custos.hsm.errors import HsmError, HsmUnavailable, KeyNotFound
from custos.hsm.key_import import OAEP_PARAMS, find

MIN_RECIPIENT_BITS = 2048
EXPORT_ALGORITHM = "rsa-oaep-sha1+aes-256-kwp (CKM_RSA_AES_KEY_WRAP layout)"


class ExportError(HsmError):
    """The recipient key is unusable, or the key cannot leave wrapped; never names a secret."""


def recipient_numbers(der: bytes) -> rsa.RSAPublicNumbers:
    """The recipient's RSA public key from DER SubjectPublicKeyInfo; ExportError if not one."""
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        raise ExportError("recipient_public_key: not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ExportError("recipient_public_key: not an RSA public key")
    if key.key_size < MIN_RECIPIENT_BITS:
        raise ExportError(
            f"recipient_public_key: {key.key_size} bits, at least {MIN_RECIPIENT_BITS} needed"
        )
    return key.public_numbers()


def recipient_fingerprint(der: bytes) -> str:
    """Hex SHA-256 of the recipient key's DER: what officers compare out of band."""
    return hashlib.sha256(der).hexdigest()


def export_wrapped(session: Any, key_id: str, recipient_der: bytes) -> bytes:
    """Private key `key_id` wrapped to the recipient (see the module docstring)."""
    numbers = recipient_numbers(recipient_der)
    try:
        private = find(session, ObjectClass.PRIVATE_KEY, key_id)
        if private is None:
            raise KeyNotFound(key_id)
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"exporting key {key_id} failed: {type(exc).__name__}") from exc
    return _wrapped_to(session, numbers, private, f"key {key_id}")


def export_seed_wrapped(session: Any, seed: bytes, recipient_der: bytes) -> bytes:
    """An HD wallet's BIP39 seed wrapped to the recipient, in the same layout as a key:
    RSA-OAEP(recipient, ephemeral AES-256 key) || AES-KWP(ephemeral key, the seed bytes).

    The caller has unsealed the seed (hsm.pkcs11_token.export_seed: SoftHSM cannot wrap
    what it sealed with AES-GCM without decrypting it); here it becomes a session
    object only long enough to be wrapped inside the token, and is destroyed.
    """
    numbers = recipient_numbers(recipient_der)
    try:
        secret = session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                Attribute.VALUE: seed,
                Attribute.TOKEN: False,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: True,  # only so that the ephemeral key can wrap it
            }
        )
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"exporting the seed failed: {type(exc).__name__}") from exc
    try:
        return _wrapped_to(session, numbers, secret, "the wallet seed")
    finally:
        with contextlib.suppress(pkcs11.PKCS11Error):
            secret.destroy()


def _wrapped_to(session: Any, numbers: rsa.RSAPublicNumbers, target: Any, what: str) -> bytes:
    """`target` wrapped under an ephemeral AES key, which is wrapped to the recipient."""
    made: list[Any] = []
    try:
        size = (numbers.n.bit_length() + 7) // 8
        recipient = session.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.MODULUS: numbers.n.to_bytes(size, "big"),
                Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes(
                    (numbers.e.bit_length() + 7) // 8, "big"
                ),
                Attribute.TOKEN: False,
                Attribute.WRAP: True,
                Attribute.ENCRYPT: False,
                Attribute.VERIFY: False,
            }
        )
        made.append(recipient)
        ephemeral = session.generate_key(
            KeyType.AES,
            256,
            store=False,
            template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: True,  # only so that the recipient key can wrap it
                Attribute.WRAP: True,
                Attribute.UNWRAP: False,
                Attribute.ENCRYPT: False,
                Attribute.DECRYPT: False,
            },
        )
        made.append(ephemeral)
        try:
            inner = bytes(ephemeral.wrap_key(target, mechanism=Mechanism.AES_KEY_WRAP_PAD))
        except pkcs11.KeyNotWrappable:
            raise ExportError(
                f"{what} may be wrapped only by a trusted key: it cannot be exported"
            ) from None
        except pkcs11.KeyUnextractable:
            raise ExportError(
                f"{what} was created non-extractable: it cannot be exported"
            ) from None
        outer = bytes(
            recipient.wrap_key(
                ephemeral, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=OAEP_PARAMS
            )
        )
        return outer + inner
    except pkcs11.PKCS11Error as exc:
        raise HsmUnavailable(f"exporting {what} failed: {type(exc).__name__}") from exc
    finally:
        for obj in made:
            with contextlib.suppress(pkcs11.PKCS11Error):
                obj.destroy()
