"""Backup primitives (hsm.backup) on fresh SoftHSM tokens, and what SoftHSM 2.6.1 allows.

Each scenario runs in its own process with its own SOFTHSM2_CONF (a token
directory made here, with a source and an empty target token): SoftHSM reads
its configuration once per process, and the session-wide dev token stays
untouched. The restored keys sign through Pkcs11Token.sign_raw, the service's
own path, and python-bitcointx verifies the signatures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SOFTHSM_LIBRARY, _require_softhsm

pytestmark = pytest.mark.integration

USER_PIN, SO_PIN = "1234-user", "5678-so"
ROOT = Path(__file__).resolve().parent.parent.parent


def _tokens(tmp_path: Path) -> Path:
    _require_softhsm()
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    for label in ("source", "target"):
        subprocess.run(
            [
                *("softhsm2-util", "--init-token", "--free", "--label", label),
                *("--pin", USER_PIN, "--so-pin", SO_PIN),
            ],
            env={**os.environ, "SOFTHSM2_CONF": str(conf)},
            check=True,
            capture_output=True,
        )
    return conf


def _run(tmp_path: Path, scenario: str, *args: str) -> dict[str, Any]:
    conf = _tokens(tmp_path)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "PYTHONPATH": str(ROOT)}
    code = f"import sys; from {__name__} import {scenario} as s; s(*sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    facts: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return facts


def test_softhsm_trusted_key_facts(tmp_path: Path) -> None:
    facts = _run(tmp_path, "measure_trusted")
    assert facts == {
        "user_generate_trusted": "AttributeReadOnly",
        "user_set_trusted_later": "AttributeReadOnly",
        "so_create_private_object": "UserNotLoggedIn",
        "so_create_public_trusted": "ok",
        "so_set_trusted_later": "AttributeReadOnly",
        "trusted_key_value_in_clear_on_disk": True,
        "private_key_value_in_clear_on_disk": False,
        "untrusted_wraps_wrap_with_trusted_key": "BackupError",
        "untrusted_wraps_plain_extractable_key": "ok",
        "wrap_non_extractable": "BackupError",
        "set_extractable_on_non_extractable": "AttributeReadOnly",
        "set_wrap_with_trusted_false": "AttributeReadOnly",
        "no_login_unwrap_reads_value_with_trusted_key": True,
        "aes_key_wrap_pad_blob_bytes": 72,
    }


def test_softhsm_export_facts(tmp_path: Path) -> None:
    """Why hsm.key_export wraps in two steps: SoftHSM 2.6.1 has no
    CKM_RSA_AES_KEY_WRAP, its RSA-OAEP C_WrapKey refuses EC private keys, and its
    OAEP takes SHA-1 only; an RSA-OAEP wrap of an AES key works."""
    facts = _run(tmp_path, "measure_export")
    assert facts == {
        "rsa_pkcs_oaep_offered": True,
        "rsa_aes_key_wrap_offered": False,
        "oaep_sha1_wraps_ec_private_key": "KeyNotWrappable",
        "oaep_sha256_wraps_aes_key": "ArgumentsBad",
        "oaep_sha1_wraps_aes_key": "ok",
        "two_step_export_recovers_the_key": True,
    }


@pytest.mark.parametrize("mode", ["private", "trusted"])
def test_backup_and_restore_onto_fresh_token(tmp_path: Path, mode: str) -> None:
    facts = _run(tmp_path, "round_trip", mode)
    assert facts["restored"] == ["hot-1", "hot-2"]
    assert facts["check_values_equal"] is True
    assert facts["verified_signatures"] == 4
    assert facts["refusals"] == {
        "two_shares": "2 shares given, this backup key needs 3",
        "foreign_share": "share 3 belongs to another backup key than share 1",
        "tampered_blob": "does not unwrap",
        "wrong_manifest_key": "does not match its public key",
        "wrong_backup_key": "does not unwrap",
        "already_restored": "KeyExists",
    }
    # Nothing half-made by the refusals: only the two restored pairs and the backup key.
    assert facts["target_objects_after"] == {"private": 2, "public": 2, "secret": 1}


# ---- scenarios, run in a child process ----------------------------------------------


def _error(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the error's type is the measured fact
        return type(exc).__name__
    return "ok"


CKM_RSA_AES_KEY_WRAP = 0x1054  # PKCS#11 v2.40; python-pkcs11 may not name it


def measure_export(tmp: str) -> None:
    import pkcs11
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
    from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass

    from custos.hsm import backup, key_export
    from custos.hsm.backup import BackupKeyMode

    token = pkcs11.lib(SOFTHSM_LIBRARY).get_token(token_label="source")
    offered = {int(m) for m in token.slot.get_mechanisms()}
    facts: dict[str, Any] = {
        "rsa_pkcs_oaep_offered": int(Mechanism.RSA_PKCS_OAEP) in offered,
        "rsa_aes_key_wrap_offered": CKM_RSA_AES_KEY_WRAP in offered,
    }
    session = token.open(user_pin=USER_PIN, rw=True)
    public = backup.generate_backupable_secp256k1(session, "k", BackupKeyMode.PRIVATE)
    private = next(
        session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: b"k"})
    )
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    numbers = recipient.public_key().public_numbers()
    wrapping = session.create_object(
        {
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.MODULUS: numbers.n.to_bytes(384, "big"),
            Attribute.PUBLIC_EXPONENT: numbers.e.to_bytes(3, "big"),
            Attribute.TOKEN: False,
            Attribute.WRAP: True,
        }
    )
    aes = session.generate_key(
        KeyType.AES, 256, template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True}
    )
    sha1 = (Mechanism.SHA_1, MGF.SHA1, None)
    sha256 = (Mechanism.SHA256, MGF.SHA256, None)
    oaep = Mechanism.RSA_PKCS_OAEP
    facts["oaep_sha1_wraps_ec_private_key"] = _error(
        lambda: wrapping.wrap_key(private, mechanism=oaep, mechanism_param=sha1)
    )
    facts["oaep_sha256_wraps_aes_key"] = _error(
        lambda: wrapping.wrap_key(aes, mechanism=oaep, mechanism_param=sha256)
    )
    facts["oaep_sha1_wraps_aes_key"] = _error(
        lambda: wrapping.wrap_key(aes, mechanism=oaep, mechanism_param=sha1)
    )
    der = recipient.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    data = key_export.export_wrapped(session, "k", der)
    hashed = hashes.SHA1()  # noqa: S303 - what SoftHSM's OAEP takes
    ephemeral = recipient.decrypt(
        data[:384], padding.OAEP(mgf=padding.MGF1(hashed), algorithm=hashed, label=None)
    )
    clear = serialization.load_der_private_key(
        aes_key_unwrap_with_padding(ephemeral, data[384:]), None
    )
    facts["two_step_export_recovers_the_key"] = (
        clear.public_key().public_bytes(  # type: ignore[union-attr]
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        == public
    )
    session.close()
    print(json.dumps(facts))


def _in_files(directory: Path, value: bytes) -> bool:
    return any(value in p.read_bytes() for p in directory.rglob("*") if p.is_file())


def measure_trusted(tmp: str) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters

    from custos.hsm import backup
    from custos.hsm.backup import BackupKeyMode
    from custos.hsm.key_import import NOT_ON_PRIVATE_KEYS

    token = pkcs11.lib(SOFTHSM_LIBRARY).get_token(token_label="source")
    facts: dict[str, Any] = {}
    trusted_value, private_value = os.urandom(32), os.urandom(32)
    user = token.open(user_pin=USER_PIN, rw=True)
    facts["user_generate_trusted"] = _error(
        lambda: user.generate_key(KeyType.AES, 256, template={Attribute.TRUSTED: True})
    )
    untrusted = user.generate_key(KeyType.AES, 256, store=True, label="plain")
    facts["user_set_trusted_later"] = _error(lambda: untrusted.__setitem__(Attribute.TRUSTED, True))
    backup.install_backup_key(user, "private-bk", bytearray(private_value), BackupKeyMode.PRIVATE)
    user.close()
    so = token.open(so_pin=SO_PIN, rw=True)
    facts["so_create_private_object"] = _error(
        lambda: so.generate_key(KeyType.AES, 256, store=True, template={Attribute.PRIVATE: True})
    )
    facts["so_create_public_trusted"] = _error(
        lambda: backup.install_backup_key(
            so, "trusted-bk", bytearray(trusted_value), BackupKeyMode.TRUSTED
        )
    )
    public_plain = so.generate_key(
        KeyType.AES, 256, store=True, label="so-plain", template={Attribute.PRIVATE: False}
    )
    facts["so_set_trusted_later"] = _error(
        lambda: public_plain.__setitem__(Attribute.TRUSTED, True)
    )
    so.close()
    tokens = Path(tmp) / "tokens"
    facts["trusted_key_value_in_clear_on_disk"] = _in_files(tokens, trusted_value)
    facts["private_key_value_in_clear_on_disk"] = _in_files(tokens, private_value)

    user = token.open(user_pin=USER_PIN, rw=True)
    backup.generate_backupable_secp256k1(user, "wwt", BackupKeyMode.TRUSTED)
    backup.generate_backupable_secp256k1(user, "plain-extractable", BackupKeyMode.PRIVATE)
    facts["untrusted_wraps_wrap_with_trusted_key"] = _error(
        lambda: backup.wrap_private_key(user, "private-bk", "wwt")
    )
    facts["untrusted_wraps_plain_extractable_key"] = _error(
        lambda: backup.wrap_private_key(user, "private-bk", "plain-extractable")
    )
    params = user.create_domain_parameters(
        KeyType.EC,
        {Attribute.EC_PARAMS: encode_named_curve_parameters("1.3.132.0.10")},
        local=True,
    )
    _pub, fixed = params.generate_keypair(
        store=True,
        id=b"fixed",
        label="fixed",
        private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )
    facts["wrap_non_extractable"] = _error(
        lambda: backup.wrap_private_key(user, "private-bk", "fixed")
    )
    facts["set_extractable_on_non_extractable"] = _error(
        lambda: fixed.__setitem__(Attribute.EXTRACTABLE, True)
    )
    wwt = next(user.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: b"wwt"}))
    facts["set_wrap_with_trusted_false"] = _error(
        lambda: wwt.__setitem__(Attribute.WRAP_WITH_TRUSTED, False)
    )
    blob = backup.wrap_private_key(user, "trusted-bk", "wwt")
    facts["aes_key_wrap_pad_blob_bytes"] = len(blob)
    user.close()
    # A session that never logged in: finds the (public) trusted key, unwraps the
    # backup blob into a non-sensitive public session object, reads the key.
    anonymous = token.open(rw=True)
    trusted = next(anonymous.get_objects({Attribute.LABEL: "trusted-bk"}))
    loose = trusted.unwrap_key(
        ObjectClass.PRIVATE_KEY,
        KeyType.EC,
        blob,
        mechanism=Mechanism.AES_KEY_WRAP_PAD,
        capabilities=MechanismFlag.SIGN,
        template={
            **NOT_ON_PRIVATE_KEYS,
            Attribute.PRIVATE: False,
            Attribute.SENSITIVE: False,
            Attribute.EXTRACTABLE: True,
        },
    )
    facts["no_login_unwrap_reads_value_with_trusted_key"] = len(loose[Attribute.VALUE]) == 32
    anonymous.close()
    print(json.dumps(facts))


def round_trip(tmp: str, mode_name: str) -> None:
    import pkcs11
    from bitcointx.core.key import CPubKey
    from pkcs11 import Attribute, ObjectClass

    from custos.common.secp256k1 import normalize
    from custos.hsm import backup
    from custos.hsm.backup import BackupError, BackupKeyMode
    from custos.hsm.pkcs11_token import Pkcs11Token

    mode = BackupKeyMode(mode_name)
    lib = pkcs11.lib(SOFTHSM_LIBRARY)

    def install(label: str, value: bytes) -> None:
        token = lib.get_token(token_label=label)
        if mode is BackupKeyMode.TRUSTED:
            with token.open(so_pin=SO_PIN, rw=True) as so:
                backup.install_backup_key(so, "bk", bytearray(value), mode)
        else:
            with token.open(user_pin=USER_PIN, rw=True) as user:
                backup.install_backup_key(user, "bk", bytearray(value), mode)

    # The backup ceremony on the source token.
    source = lib.get_token(token_label="source")
    with source.open(user_pin=USER_PIN, rw=True) as user:
        value = backup.new_backup_key_value(user)
    shares = backup.split_backup_key(value, 3, 5)
    install("source", value)
    digests = [hashlib.sha256(f"before {i}".encode()).digest() for i in range(2)]
    manifest: dict[str, tuple[bytes, bytes]] = {}
    verified = 0
    with source.open(user_pin=USER_PIN, rw=True) as user:
        source_check = backup.backup_key_check_value(user, "bk")
        for key_id in ("hot-1", "hot-2"):
            public = backup.generate_backupable_secp256k1(user, key_id, mode)
            manifest[key_id] = (public, backup.wrap_private_key(user, "bk", key_id))
    signer = Pkcs11Token(SOFTHSM_LIBRARY, "source", USER_PIN)
    for key_id, digest in zip(manifest, digests, strict=True):
        sig = normalize(signer.sign_raw(key_id, digest), digest, manifest[key_id][0])
        assert CPubKey(manifest[key_id][0]).verify(digest, sig.der())
        verified += 1
    signer.close()

    # Disaster: the target token is fresh and empty. Restore from 3 of the 5 shares.
    refusals: dict[str, str] = {}

    def refused(name: str, fn: Any) -> None:
        try:
            fn()
        except (BackupError, backup.KeyExists) as exc:
            refusals[name] = str(exc) if isinstance(exc, BackupError) else type(exc).__name__
            return
        raise AssertionError(f"{name} was not refused")

    refused("two_shares", lambda: backup.recover_backup_key(shares[:2]))
    other = backup.split_backup_key(os.urandom(32), 3, 5)
    refused("foreign_share", lambda: backup.recover_backup_key([shares[0], shares[2], other[4]]))
    recovered = backup.recover_backup_key([shares[4], shares[1], shares[3]])
    assert recovered == value
    install("target", recovered)
    target = lib.get_token(token_label="target")
    with target.open(user_pin=USER_PIN, rw=True) as user:
        check_equal = backup.backup_key_check_value(user, "bk") == source_check
        public, blob = manifest["hot-1"]
        tampered = bytearray(blob)
        tampered[-3] ^= 0x40
        refused(
            "tampered_blob",
            lambda: backup.unwrap_private_key(
                user, "bk", "hot-1", bytes(tampered), public, mode=mode
            ),
        )
        refused(
            "wrong_manifest_key",
            lambda: backup.unwrap_private_key(
                user, "bk", "hot-1", blob, manifest["hot-2"][0], mode=mode
            ),
        )
        # A backup key that is not the one (made in the user session in both modes).
        backup.install_backup_key(
            user, "bk-other", bytearray(os.urandom(32)), BackupKeyMode.PRIVATE
        )
        refused(
            "wrong_backup_key",
            lambda: backup.unwrap_private_key(user, "bk-other", "hot-1", blob, public, mode=mode),
        )
        next(user.get_objects({Attribute.LABEL: "bk-other"})).destroy()
        for key_id, (public, blob) in manifest.items():
            backup.unwrap_private_key(user, "bk", key_id, blob, public, mode=mode)
        refused(
            "already_restored",
            lambda: backup.unwrap_private_key(user, "bk", "hot-1", *manifest["hot-1"], mode=mode),
        )
        counts = {
            name: len(list(user.get_objects({Attribute.CLASS: cls})))
            for name, cls in (
                ("private", ObjectClass.PRIVATE_KEY),
                ("public", ObjectClass.PUBLIC_KEY),
                ("secret", ObjectClass.SECRET_KEY),
            )
        }
        restored = sorted(
            k
            for k in manifest
            if next(
                user.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: k.encode()}
                )
            )[Attribute.SENSITIVE]
        )
    # The service's own signing path on the restored token, public keys read back from it.
    signer = Pkcs11Token(SOFTHSM_LIBRARY, "target", USER_PIN)
    for key_id in manifest:
        assert signer.public_key(key_id) == manifest[key_id][0]
        digest = hashlib.sha256(f"after {key_id}".encode()).digest()
        sig = normalize(signer.sign_raw(key_id, digest), digest, manifest[key_id][0])
        assert CPubKey(manifest[key_id][0]).verify(digest, sig.der())
        verified += 1
    signer.close()
    short = {
        "tampered_blob": "does not unwrap",
        "wrong_manifest_key": "does not match its public key",
        "wrong_backup_key": "does not unwrap",
    }
    for name, fragment in short.items():
        assert fragment in refusals[name], refusals[name]
        refusals[name] = fragment
    print(
        json.dumps(
            {
                "restored": restored,
                "check_values_equal": check_equal,
                "verified_signatures": verified,
                "refusals": refusals,
                "target_objects_after": counts,
            }
        )
    )


def test_backup_file_disaster_drill(tmp_path: Path) -> None:
    facts = _run(tmp_path, "file_drill")
    assert facts["restored"] == ["hot-1", "hot-2"]
    assert facts["records_kept"] is True
    assert facts["verify_before"] == {"keys": 2, "missing": [], "different": []}
    assert facts["verify_after_new_key"] == {"keys": 2, "missing": ["hot-3"], "different": []}
    assert facts["refusals"] == {
        "one_share": "1 shares given, this backup key needs 2",
        "foreign_share": "share 2 belongs to another backup key than share 1",
        "shares_of_another_backup": "made under another backup key",
        "tampered_manifest": "its tag does not verify",
        "tampered_wrapped_key": "its tag does not verify",
        "malformed": "not a Custos backup",
    }
    # Every refused restore left the fresh token empty; the good one made 2 pairs + 1 key.
    assert facts["objects_after_refusals"] == {"private": 0, "public": 0, "secret": 0}
    assert facts["objects_after_restore"] == {"private": 2, "public": 2, "secret": 1}
    assert facts["secrets_in_file"] is False
    assert facts["eth_account_recovered"] == 4


def file_drill(tmp: str) -> None:
    import shutil

    import pkcs11
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_utils import keccak
    from pkcs11 import Attribute, KeyType, ObjectClass

    from custos.common.secp256k1 import normalize
    from custos.hsm import backup, backup_file
    from custos.hsm.backup import BackupError, BackupKeyMode
    from custos.hsm.backup_file import BackupEntry
    from custos.hsm.pkcs11_token import SECP256K1_OID, Pkcs11Token, _unwrap_ec_point

    mode = BackupKeyMode.PRIVATE
    lib = pkcs11.lib(SOFTHSM_LIBRARY)
    recovered = 0

    def address(public: bytes) -> str:
        return "0x" + keccak(public[1:])[-20:].hex()

    def sign_and_check(label: str, key_id: str, public: bytes, text: str) -> None:
        nonlocal recovered
        message = encode_defunct(text=text)
        digest = keccak(b"\x19" + message.version + message.header + message.body)
        token = Pkcs11Token(SOFTHSM_LIBRARY, label, USER_PIN)
        try:
            sig = normalize(token.sign_raw(key_id, digest), digest, public)
        finally:
            token.close()
        signer = Account.recover_message(message, vrs=(27 + sig.recovery_id, sig.r, sig.s))
        assert signer.lower() == address(public), (signer, address(public))
        recovered += 1

    def counts(session: Any) -> dict[str, int]:
        return {
            name: len(list(session.get_objects({Attribute.CLASS: cls})))
            for name, cls in (
                ("private", ObjectClass.PRIVATE_KEY),
                ("public", ObjectClass.PUBLIC_KEY),
                ("secret", ObjectClass.SECRET_KEY),
            )
        }

    # The backup key ceremony and two keys on the source token; each key signs.
    source = lib.get_token(token_label="source")
    with source.open(user_pin=USER_PIN, rw=True) as user:
        value = backup.new_backup_key_value(user)
        shares = backup.split_backup_key(value, 2, 3)
        backup.install_backup_key(user, "bk", bytearray(value), mode)
        publics = {
            k: backup.generate_backupable_secp256k1(user, k, mode) for k in ("hot-1", "hot-2")
        }
    # A key made as before backups existed (never extractable) is left out, and named.
    old = Pkcs11Token(SOFTHSM_LIBRARY, "source", USER_PIN)
    try:
        old_public = _unwrap_ec_point(
            old._generate_pair(KeyType.EC, SECP256K1_OID, "old-1")[0][Attribute.EC_POINT]
        )
    finally:
        old.close()
    for key_id, public in publics.items():
        sign_and_check("source", key_id, public, f"before {key_id}")
    records = {
        k: {"origin": "generated", "state": "enabled", "address": address(p)}
        for k, p in publics.items()
    }
    with source.open(user_pin=USER_PIN, rw=True) as user:
        data, skipped = backup_file.make(
            user,
            "bk",
            [
                BackupEntry("old-1", old_public),
                *(BackupEntry(k, p, records[k]) for k, p in publics.items()),
            ],
            1_700_000_000_000,
        )
        assert skipped == ("old-1",)
        report = backup_file.verify(user, "bk", data, publics)
        verify_before = {
            "keys": report.keys,
            "missing": list(report.missing),
            "different": list(report.different),
        }
        more = {**publics, "hot-3": backup.generate_backupable_secp256k1(user, "hot-3", mode)}
        report = backup_file.verify(user, "bk", data, more)
        verify_after = {
            "keys": report.keys,
            "missing": list(report.missing),
            "different": list(report.different),
        }
    (Path(tmp) / "custos.backup").write_bytes(data)

    # Disaster: the token directory is gone. A fresh token in a fresh directory.
    shutil.rmtree(Path(tmp) / "tokens")
    (Path(tmp) / "tokens").mkdir()
    subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free", "--label", "fresh"),
            *("--pin", USER_PIN, "--so-pin", SO_PIN),
        ],
        check=True,
        capture_output=True,
    )
    lib.reinitialize()
    fresh = lib.get_token(token_label="fresh")
    refusals: dict[str, str] = {}
    other = backup.split_backup_key(os.urandom(32), 2, 3)
    outer = json.loads(data)
    outer["body"]["keys"][0]["record"]["state"] = "disabled"
    tampered_manifest = json.dumps(outer).encode()
    outer = json.loads(data)
    blob = bytearray(base64.b64decode(outer["body"]["keys"][1]["wrapped"]))
    blob[5] ^= 1
    outer["body"]["keys"][1]["wrapped"] = base64.b64encode(bytes(blob)).decode()
    tampered_key = json.dumps(outer).encode()
    attempts = {
        "one_share": (shares[:1], data),
        "foreign_share": ([shares[0], other[1]], data),
        "shares_of_another_backup": (other[:2], data),
        "tampered_manifest": (shares[1:], tampered_manifest),
        "tampered_wrapped_key": (shares[1:], tampered_key),
        "malformed": (shares[1:], data[:-20]),
    }
    with fresh.open(user_pin=USER_PIN, rw=True) as user:
        for name, (given, content) in attempts.items():
            try:
                backup_file.restore(user, "bk", given, content)
            except BackupError as exc:
                refusals[name] = str(exc)
            else:
                raise AssertionError(f"{name} was restored")
        empty = counts(user)
        restored, no_wallets = backup_file.restore(user, "bk", [shares[2], shares[0]], data)
        assert no_wallets == ()
        after = counts(user)
    for name, fragment in (
        ("shares_of_another_backup", "made under another backup key"),
        ("tampered_manifest", "its tag does not verify"),
        ("tampered_wrapped_key", "its tag does not verify"),
        ("malformed", "not a Custos backup"),
    ):
        assert fragment in refusals[name], refusals[name]
        refusals[name] = fragment
    for entry in restored:
        sign_and_check("fresh", entry.key_id, entry.public_key, f"after {entry.key_id}")
    on_disk = b"".join(p.read_bytes() for p in (Path(tmp) / "tokens").rglob("*") if p.is_file())
    print(
        json.dumps(
            {
                "restored": [e.key_id for e in restored],
                "records_kept": {e.key_id: dict(e.record) for e in restored} == records,
                "verify_before": verify_before,
                "verify_after_new_key": verify_after,
                "refusals": refusals,
                "objects_after_refusals": empty,
                "objects_after_restore": after,
                "secrets_in_file": bytes(value) in data
                or bytes(value) in on_disk
                or any(s.encode() in data for s in shares),
                "eth_account_recovered": recovered,
            }
        )
    )
