"""Checkpoints as C2SP signed notes, checked against the specs and Go's published vectors.

Specs: https://c2sp.org/signed-note (C2SP/C2SP signed-note.md @ 05528762) and
https://c2sp.org/tlog-checkpoint (C2SP/C2SP tlog-checkpoint.md @ 27938939),
as implemented by golang.org/x/mod/sumdb/note and transparency-dev/formats
log/checkpoint.go. The PeterNeumann / EnochRoot keys, text and signatures are
from golang/mod sumdb/note/note_test.go @ 02c991387e35f9e4c0a9b7ce137717055f8d716d
(TestSign, TestOpen, TestVerifierList).
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custos.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    key_id,
    load_public_key_pem,
    open_note,
    open_signed_note,
    parse_body,
    parse_verifier_key,
    public_key_pem,
    sign_note,
    sign_text,
    verifier_key,
)

# golang/mod sumdb/note/note_test.go
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
# C2SP tlog-checkpoint.md, the example note's text
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

NAME = "custos.example/audit"
ROOT = hashlib.sha256(b"some root").digest()


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _note(key: Ed25519PrivateKey, size: int = 42, name: str = NAME) -> str:
    return sign_note(Checkpoint(NAME, size, ROOT), name, _raw(key), key.sign)


# -- the published Go vectors ----------------------------------------------------


def test_go_verifier_keys_parse_and_their_key_ids_follow_the_c2sp_formula() -> None:
    name, public = parse_verifier_key(PETER_VKEY)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert name == "PeterNeumann"
    assert key_id(name, raw).hex() == "c74f20a3"
    assert hashlib.sha256(b"PeterNeumann\n\x01" + raw).digest()[:4].hex() == "c74f20a3"
    assert verifier_key(name, raw) == PETER_VKEY
    assert parse_verifier_key(ENOCH_VKEY)[0] == "EnochRoot"
    for bad in (
        PETER_VKEY.replace("c74f20a3", "c74f20a4"),
        PETER_VKEY[:-1],
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown alg
        "PeterNeumann+c74f20a3",
    ):
        with pytest.raises(CheckpointError, match="malformed verifier key"):
            parse_verifier_key(bad)


def test_go_signed_note_is_reproduced_byte_for_byte() -> None:
    # Go's private key string: PRIVATE+KEY+<name>+<id>+base64(0x01 || seed).
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    private = Ed25519PrivateKey.from_private_bytes(seed)
    assert sign_text(TEXT, "PeterNeumann", _raw(private), private.sign) == TEXT + "\n" + PETER_SIG


def test_go_signed_note_opens_and_unknown_signers_are_ignored() -> None:
    _, peter = parse_verifier_key(PETER_VKEY)
    _, enoch = parse_verifier_key(ENOCH_VKEY)
    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_signed_note(both, "PeterNeumann", peter) == TEXT
    assert open_signed_note(both, "EnochRoot", enoch) == TEXT
    with pytest.raises(CheckpointError, match=r"^no signature by key EnochRoot$"):
        open_signed_note(TEXT + "\n" + PETER_SIG, "EnochRoot", enoch)
    with pytest.raises(CheckpointError, match=r"^signature does not verify"):
        open_signed_note(
            TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], "PeterNeumann", peter
        )
    misnamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    with pytest.raises(CheckpointError, match=r"^no signature by key PeterNeumann$"):
        open_signed_note(TEXT + "\n" + misnamed, "PeterNeumann", peter)
    wrong_id = PETER_SIG.replace("x08g", "xxxx")
    with pytest.raises(CheckpointError, match=r"no signature by key PeterNeumann: .*different key"):
        open_signed_note(TEXT + "\n" + wrong_id, "PeterNeumann", peter)


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT
        + "\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG * 101,
    ],
)
def test_go_malformed_notes_are_rejected(message: str) -> None:
    _, peter = parse_verifier_key(PETER_VKEY)
    with pytest.raises(CheckpointError, match=r"^malformed note"):
        open_signed_note(message, "PeterNeumann", peter)


def test_spec_example_checkpoint_body_parses() -> None:
    checkpoint = parse_body(SPEC_BODY)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.body() == SPEC_BODY


# -- Custos checkpoints ------------------------------------------------------------


def test_sign_and_open_round_trip(key: Ed25519PrivateKey) -> None:
    note = _note(key)
    body = f"{NAME}\n42\n{base64.b64encode(ROOT).decode()}\n"
    assert note.startswith(body + "\n— " + NAME + " ")
    blob = base64.b64decode(note.split()[-1])
    assert blob[:4] == key_id(NAME, _raw(key))
    key.public_key().verify(blob[4:], body.encode())  # a plain Ed25519 signature over the body
    assert open_note(note, NAME, key.public_key()) == Checkpoint(NAME, 42, ROOT)


def test_witness_cosignatures_are_ignored_but_our_bad_signature_is_not(
    key: Ed25519PrivateKey,
) -> None:
    witness = Ed25519PrivateKey.generate()
    note = _note(key)
    cosig = sign_text(
        Checkpoint(NAME, 42, ROOT).body(), "witness.example", _raw(witness), witness.sign
    )
    cosigned = note + cosig.split("\n\n")[1]
    assert open_note(cosigned, NAME, key.public_key()).size == 42
    ours = note.split("\n\n")[1]
    forged = ours[:-10] + ("AAAA" if ours[-10:-6] != "AAAA" else "BBBB") + ours[-6:]
    with pytest.raises(CheckpointError, match=r"^signature does not verify"):
        open_note(note + forged, NAME, key.public_key())


def test_tampered_body_does_not_verify(key: Ed25519PrivateKey) -> None:
    note = _note(key, size=42)
    for tampered in (
        note.replace("\n42\n", "\n43\n"),
        note.replace(NAME + "\n", "custos.example/other\n", 1),
        note.replace(base64.b64encode(ROOT).decode(), base64.b64encode(bytes(32)).decode()),
    ):
        with pytest.raises(CheckpointError, match=r"^signature does not verify"):
            open_note(tampered, NAME, key.public_key())


def test_another_key_under_our_name_is_named_as_such(key: Ed25519PrivateKey) -> None:
    impostor = Ed25519PrivateKey.generate()
    note = _note(impostor)
    with pytest.raises(CheckpointError, match=f"^no signature by key {NAME}: .*different key"):
        open_note(note, NAME, key.public_key())


def test_another_key_name_is_not_our_signature(key: Ed25519PrivateKey) -> None:
    note = _note(key, name="custos.example/staging")
    with pytest.raises(CheckpointError, match=f"^no signature by key {NAME}$"):
        open_note(note, NAME, key.public_key())


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n.replace("— ", "- "), "lacks '— '"),
        (lambda n: n.replace("— ", "—  "), "bad signature line"),
        (lambda n: n[:-1], "does not end with a newline"),
        (lambda n: n.replace("\n", "\r\n"), "control characters"),
        (lambda n: n.rsplit(" ", 1)[0] + " !!notbase64!!\n", "not base64"),
        (lambda n: n.rsplit(" ", 1)[0] + " AAAA\n", "too short"),
        (lambda n: n.split("\n\n")[0] + "\n\n", "no signature lines"),
        (lambda n: n.replace(NAME, NAME + "\ud800", 1), "not valid UTF-8"),
    ],
)
def test_malformed_notes_are_rejected_with_the_reason(
    key: Ed25519PrivateKey, mutate: object, reason: str
) -> None:
    assert callable(mutate)
    with pytest.raises(CheckpointError, match=f"^malformed note: .*{reason}"):
        open_note(mutate(_note(key)), NAME, key.public_key())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (f"{NAME}\n042\nROOT\n", "not a uint64"),
        (f"{NAME}\n+42\nROOT\n", "not a uint64"),
        (f"{NAME}\n\u0664\u0662\nROOT\n", "not a uint64"),  # Arabic-Indic digits
        (f"{NAME}\n-1\nROOT\n", "not a uint64"),
        (f"{NAME}\n{1 << 64}\nROOT\n", "not a uint64"),
        (f"{NAME}\n42\n{base64.b64encode(bytes(31)).decode()}\n", "31 bytes"),
        (f"{NAME}\n42\nnot*base64\n", "not base64"),
        (f"{NAME}\n42\nROOT\nextension line\n", "extension lines"),
        ("\n42\nROOT\n", "empty origin"),
        (f"{NAME}\n42\n", "origin, size and root"),
    ],
)
def test_signed_but_malformed_checkpoint_bodies_are_rejected(
    key: Ed25519PrivateKey, body: str, reason: str
) -> None:
    body = body.replace("ROOT", base64.b64encode(ROOT).decode())
    note = sign_text(body, NAME, _raw(key), key.sign)
    with pytest.raises(CheckpointError, match=f"^malformed note: .*{reason}"):
        open_note(note, NAME, key.public_key())


def test_signer_with_the_wrong_key_is_caught_when_signing(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(CheckpointError, match="does not verify under the public key"):
        sign_note(Checkpoint(NAME, 1, ROOT), NAME, _raw(key), other.sign)
    with pytest.raises(ValueError, match="invalid note key name"):
        sign_note(Checkpoint(NAME, 1, ROOT), "has space", _raw(key), key.sign)
    with pytest.raises(ValueError, match="invalid note key name"):
        sign_note(Checkpoint(NAME, 1, ROOT), "a+b", _raw(key), key.sign)


def test_checkpoint_fields_are_validated() -> None:
    for origin, size, root in (
        ("", 1, ROOT),
        ("a\nb", 1, ROOT),
        ("o", -1, ROOT),
        ("o", 1, ROOT[:31]),
    ):
        with pytest.raises(ValueError, match="checkpoint"):
            Checkpoint(origin, size, root)
    assert Checkpoint("o", 0, ROOT).body() == f"o\n0\n{base64.b64encode(ROOT).decode()}\n"


def test_public_key_pem_round_trip_and_wrong_key_types(key: Ed25519PrivateKey) -> None:
    pem = public_key_pem(_raw(key))
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert _raw_of(load_public_key_pem(pem)) == _raw(key)
    ec_pem = (
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(CheckpointError, match="not an Ed25519 key"):
        load_public_key_pem(ec_pem)
    with pytest.raises(CheckpointError, match="not a PEM public key"):
        load_public_key_pem(b"garbage")


def _raw_of(public: object) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    assert isinstance(public, Ed25519PublicKey)
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
