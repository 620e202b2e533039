"""Signed checkpoints: the tree size and root of the audit log, as a C2SP signed note.

Formats (https://c2sp.org/tlog-checkpoint and https://c2sp.org/signed-note,
as implemented by golang.org/x/mod/sumdb/note and transparency-dev/formats):

    <origin>\\n<tree size, decimal>\\n<base64 root>\\n      <- the body (note text)
    \\n
    — <key name> <base64(4-byte key ID || Ed25519 signature over the body)>\\n

with key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4]
(0x01: the Ed25519 signature type). Signatures by other keys are ignored, as the
spec requires (that is how witnesses cosign); a signature by the expected key
that fails to verify rejects the note.

Custos checkpoints carry no extension lines, so a body with more than the three
lines is rejected rather than silently accepted as signed-but-unread text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custos.audit.merkle import HASH_SIZE

EM_DASH = "\u2014"
ALG_ED25519 = 0x01
_SIG_PREFIX = EM_DASH + " "
# Go's x/mod/sumdb/note refuses more than 100 signatures; C2SP asks for at least 16.
MAX_SIGNATURES = 100
_SIZE = re.compile(r"0|[1-9][0-9]*")  # no sign, no leading zeros, ASCII digits only
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class CheckpointError(Exception):
    """A checkpoint note that is malformed, unsigned by the expected key, or forged."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's size and Merkle root, as signed by the log's audit key."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise ValueError(
                "checkpoint origin must be one non-empty line without control characters"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError("checkpoint size must be a non-negative integer")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"checkpoint root must be {HASH_SIZE} bytes")

    def body(self) -> str:
        """The note text: origin, size and base64 root, each line newline-terminated."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def _check_key_name(key_name: str) -> None:
    if not key_name or any(c.isspace() or c == "+" for c in key_name):
        raise ValueError(f"invalid note key name {key_name!r}: empty, or has a space or '+'")


def key_id(key_name: str, public_key_raw32: bytes) -> bytes:
    """The C2SP signed-note key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    if len(public_key_raw32) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    data = key_name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key_raw32
    return hashlib.sha256(data).digest()[:4]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verifier_key(key_name: str, public_key_raw32: bytes) -> str:
    """The key as Go's note package writes verifier keys: name+hex key ID+base64(0x01||key)."""
    _check_key_name(key_name)
    blob = bytes([ALG_ED25519]) + public_key_raw32
    return (
        f"{key_name}+{key_id(key_name, public_key_raw32).hex()}+{base64.b64encode(blob).decode()}"
    )


def parse_verifier_key(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """Name and Ed25519 public key from a note verifier key string (checking its key ID)."""
    parts = vkey.split("+")
    if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise CheckpointError("malformed verifier key: want name+keyid+base64key")
    name, hash_hex, b64 = parts
    try:
        _check_key_name(name)
        blob = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise CheckpointError(f"malformed verifier key: {exc}") from None
    if len(blob) != 33 or blob[0] != ALG_ED25519:
        raise CheckpointError("malformed verifier key: not an Ed25519 (type 0x01) key")
    if key_id(name, blob[1:]).hex() != hash_hex:
        raise CheckpointError("malformed verifier key: key ID does not match the key")
    return name, Ed25519PublicKey.from_public_bytes(blob[1:])


def load_public_key_pem(pem: bytes) -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM SubjectPublicKeyInfo block."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise CheckpointError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError("the audit public key is not an Ed25519 key")
    return key


def public_key_pem(public_key_raw32: bytes) -> bytes:
    """PEM SubjectPublicKeyInfo for a raw 32-byte Ed25519 public key (as an HSM returns it)."""
    key = Ed25519PublicKey.from_public_bytes(public_key_raw32)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_text(
    text: str, key_name: str, public_key_raw32: bytes, sign: Callable[[bytes], bytes]
) -> str:
    """A signed note: `text` (newline-terminated), a blank line and one Ed25519 signature line.

    The signature is verified against `public_key_raw32` before it is returned,
    so a signer holding the wrong key fails here, not later at an auditor's desk.
    """
    _check_key_name(key_name)
    if not text.endswith("\n") or _CONTROL.search(text):
        raise ValueError("note text must end with a newline and hold no control characters")
    body = text.encode()
    signature = sign(body)
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw32).verify(signature, body)
    except InvalidSignature:
        raise CheckpointError(
            f"the signer's signature does not verify under the public key of {key_name}"
        ) from None
    blob = key_id(key_name, public_key_raw32) + signature
    return f"{text}\n{_SIG_PREFIX}{key_name} {base64.b64encode(blob).decode()}\n"


def sign_note(
    checkpoint: Checkpoint,
    key_name: str,
    public_key_raw32: bytes,
    sign: Callable[[bytes], bytes],
) -> str:
    """Sign the checkpoint body with `sign` (an HSM's CKM_EDDSA); the signed note."""
    return sign_text(checkpoint.body(), key_name, public_key_raw32, sign)


@dataclass(frozen=True, slots=True)
class _Signature:
    name: str
    key_id: bytes
    signature: bytes


def _split_note(text: str) -> tuple[str, list[_Signature]]:
    """Note text and signature lines; CheckpointError("malformed note: ...") otherwise."""
    if not isinstance(text, str):
        raise CheckpointError("malformed note: not text")
    if _CONTROL.search(text):
        raise CheckpointError("malformed note: control characters other than newline")
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: no UTF-8 bytes a signature could cover
        raise CheckpointError("malformed note: not valid UTF-8") from None
    if not text.endswith("\n"):
        raise CheckpointError("malformed note: does not end with a newline")
    # The text is separated from the signatures by the last blank line.
    cut = text.rfind("\n\n")
    if cut < 0:
        raise CheckpointError("malformed note: no blank line before the signatures")
    body, sig_block = text[: cut + 1], text[cut + 2 :]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise CheckpointError("malformed note: no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(f"malformed note: signature line {line[:40]!r} lacks '— '")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not name or "+" in name or any(c.isspace() for c in name + b64):
            raise CheckpointError(f"malformed note: bad signature line {line[:40]!r}")
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise CheckpointError(f"malformed note: signature of {name} is not base64") from None
        if len(blob) < 5:
            raise CheckpointError(f"malformed note: signature of {name} is too short")
        signatures.append(_Signature(name, blob[:4], blob[4:]))
    return body, signatures


def open_signed_note(text: str, key_name: str, public_key: Ed25519PublicKey) -> str:
    """The note text, once a signature by (key_name, public_key) verifies over it."""
    body, signatures = _split_note(text)
    want_id = key_id(key_name, _raw(public_key))
    # C2SP: a signature is by our key only when both name and key ID match;
    # others are ignored (witness cosignatures, rotated keys).
    ours = [s for s in signatures if s.name == key_name and s.key_id == want_id]
    if not ours:
        if any(s.name == key_name for s in signatures):
            raise CheckpointError(
                f"no signature by key {key_name}: a signature under that name was made "
                f"by a different key (key ID mismatch; expected {want_id.hex()})"
            )
        raise CheckpointError(f"no signature by key {key_name}")
    for sig in ours:
        try:
            public_key.verify(sig.signature, body.encode())
        except InvalidSignature:
            raise CheckpointError(
                f"signature does not verify: the note was altered after key {key_name} "
                "signed it, or the signature is forged"
            ) from None
    return body


def parse_body(body: str) -> Checkpoint:
    """Parse a checkpoint note text (origin, size, root); it is NOT a signature check."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise CheckpointError("malformed note: a checkpoint body has origin, size and root lines")
    if len(lines) > 4:
        raise CheckpointError("malformed note: unexpected extension lines in the checkpoint")
    origin, size_text, root_text = lines[:3]
    if not origin:
        raise CheckpointError("malformed note: empty origin line")
    if not _SIZE.fullmatch(size_text) or len(size_text) > 20 or int(size_text) >= 1 << 64:
        raise CheckpointError(f"malformed note: tree size {size_text[:30]!r} is not a uint64")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise CheckpointError("malformed note: root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"malformed note: root hash is {len(root)} bytes, not {HASH_SIZE}")
    return Checkpoint(origin, int(size_text), root)


def open_note(text: str, key_name: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint in a signed note, after checking its signature by key_name/public_key."""
    return parse_body(open_signed_note(text, key_name, public_key))


def peek_note(text: str) -> Checkpoint | None:
    """The checkpoint a note claims, WITHOUT checking any signature (for naming it in reports)."""
    try:
        return parse_body(_split_note(text)[0])
    except CheckpointError:
        return None
