"""Custody ceremonies through the real server: the backup key and its shares, backups,
export to a recipient and the import key, each only after M other officers approve.

Attacker's view: a lone officer gets no share, no backup, no export and no import
key; an approval code given with one proposal's digest does not approve another;
a result is fetched only by whom it is for, once; a forged ceremony row does not
execute. Second implementations: the backup's wrapped key is unwrapped with
`cryptography` under the key recovered from two shares (`shamir-mnemonic`), the
exported key with `cryptography` and the recipient's private key, and eth-account
derives the key's address from both; an exported wallet seed is unwrapped the same
way and bip-utils derives from it the addresses the service derived. No share or
seed is in the audit log or the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bip_utils import Bip44, Bip44Changes, Bip44Coins
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from eth_account import Account

from custos.hsm.backup import recover_backup_key
from custos.proto.custos.v1 import keys_pb2
from custos.signer.edge.config import IdentityConfig
from custos.signer.tools.devsetup import DevCa, subject_string, write_client_profile
from tests import builders
from tests.conftest import DevEnv, server_with_policy
from tests.integration.test_approvals_e2e import _cli_profile
from tests.integration.test_key_ceremonies_e2e import (
    OFFICERS,
    Officers,
)

pytestmark = pytest.mark.integration

POLICY = f"""
version: 1
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}",
             "{subject_string("officer3")}"]
  approvals_required: 2
  activation_delay: 0s
ceremonies:
  create_key: 0
  backup_key_init: 2
  backup: 2
  export_key: 2
  import_key_init: 2
  create_wallet: 0
  export_wallet: 2
rules:
  - id: allow-all
    match: {{}}
    action: allow
"""
INIT = keys_pb2.CEREMONY_KIND_BACKUP_KEY_INIT
BACKUP = keys_pb2.CEREMONY_KIND_BACKUP
EXPORT = keys_pb2.CEREMONY_KIND_EXPORT_KEY
IMPORT_INIT = keys_pb2.CEREMONY_KIND_IMPORT_KEY_INIT
EXPORT_WALLET = keys_pb2.CEREMONY_KIND_EXPORT_WALLET
HOLDERS = [subject_string(name) for name in OFFICERS]
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture(scope="module")
def officer3(dev_env: DevEnv) -> IdentityConfig:
    """A third officer's certificate and client profile, from the dev CA."""
    ca = DevCa(dev_env.dir / "pki")
    cert, key = ca.issue("officer3", server=False)
    # The endpoint the dev profiles carry (the CLI test points it at the server's port).
    profile = dev_env.dir / "clients" / "officer3.toml"
    write_client_profile(profile, "127.0.0.1:0", ca.cert_path, cert, key)
    return IdentityConfig(subject=subject_string("officer3"), roles=["officer"])


@pytest.fixture
def officers(dev_env: DevEnv, tmp_path: Path, officer3: IdentityConfig) -> Iterator[Officers]:
    identities = [*dev_env.config().identities, officer3]
    with server_with_policy(dev_env, tmp_path, POLICY, identities=identities) as server:
        yield Officers(server)


def _propose(o: Officers, name: str, **fields: object) -> keys_pb2.KeyCeremony:
    return o.stubs[name].ProposeKeyCeremony(keys_pb2.ProposeKeyCeremonyRequest(**fields))  # type: ignore[arg-type]


def _fetch(o: Officers, name: str, ceremony_id: str) -> keys_pb2.KeyCeremonyResult:
    return o.stubs[name].FetchKeyCeremonyResult(
        keys_pb2.FetchKeyCeremonyResultRequest(ceremony_id=ceremony_id, totp_code=o.code(name))
    )


def _approved(o: Officers, proposed: keys_pb2.KeyCeremony) -> keys_pb2.KeyCeremony:
    """Approved by the two officers other than the proposer (officer)."""
    o.approve("officer2", proposed.ceremony_id, proposed.digest)
    done = o.approve("officer3", proposed.ceremony_id, proposed.digest)
    assert done.state == "executed", done
    return done


def _address_of_pkcs8(der: bytes) -> str:
    """eth-account's address of a PKCS#8 secp256k1 private key (decoded by `cryptography`)."""
    key = serialization.load_der_private_key(der, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256k1"
    return str(Account.from_key(key.private_numbers().private_value.to_bytes(32, "big")).address)


def test_backup_key_and_backup_need_a_quorum_and_go_each_to_whom_it_is_for(
    officers: Officers, tmp_path: Path
) -> None:
    # The only test that makes the session's shared token's backup key.
    # TOTP codes are single-use, three steps are valid at a time: each officer
    # below uses at most three (a second fetch is refused in the export test).
    o = officers
    key = o.server.create_key("kept-1")
    address = builders.address(key, "ethereum", "sepolia")

    init = _propose(o, "officer", kind=INIT, threshold=2, holders=HOLDERS)
    assert (init.state, init.approvals_required) == ("open", 2)
    assert json.loads(init.params["holders"]) == HOLDERS
    # Nothing to fetch before the quorum.
    o.refused(lambda: _fetch(o, "officer", init.ceremony_id), PRECONDITION, "not executed")
    o.refused(
        lambda: _propose(o, "officer", kind=INIT, threshold=1, holders=HOLDERS),
        grpc.StatusCode.INVALID_ARGUMENT,
        "threshold",
    )
    o.refused(
        lambda: _propose(o, "officer", kind=INIT, threshold=2, holders=[*HOLDERS[:2], "CN=x"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "holders: not officers",
    )
    backup = _propose(o, "officer", kind=BACKUP)
    executed = _approved(o, init)
    assert "3 shares, any 2" in executed.outcome
    shares = {name: _fetch(o, name, init.ceremony_id).data.decode() for name in OFFICERS}
    assert len(set(shares.values())) == 3

    _approved(o, backup)
    result = _fetch(o, "officer", backup.ceremony_id)
    assert hashlib.sha256(result.data).hexdigest() == result.sha256
    shown = o.stubs["officer"].GetKeyCeremony(
        keys_pb2.GetKeyCeremonyRequest(ceremony_id=backup.ceremony_id)
    )
    assert list(shown.delivered_to) == [subject_string("officer")]

    # Second implementation: two shares give the backup key; it unwraps the key.
    backup_key = recover_backup_key([shares["officer3"], shares["officer"]])
    body = json.loads(result.data)["body"]
    (entry,) = body["keys"]
    assert entry["key_id"] == "kept-1"
    pkcs8 = aes_key_unwrap_with_padding(backup_key, base64.b64decode(entry["wrapped"]))
    assert _address_of_pkcs8(pkcs8) == address

    audit = o.audit()
    kinds = [kind for kind, _actor, _fields in audit]
    assert kinds.count("ceremony.delivered") == 4  # three shares, one file
    (created,) = [f for k, _a, f in audit if k == "backup_key.created"]
    assert (created["threshold"], created["shares"]) == (2, 3)
    assert created["ceremony_id"] == init.ceremony_id
    (backed_up,) = [f for k, _a, f in audit if k == "keys.backed_up"]
    assert (backed_up["sha256"], backed_up["key_ids"]) == (result.sha256, "kept-1")
    assert backed_up["ceremony_id"] == backup.ceremony_id
    # No share, nor the backup key, in the audit log, the database or the server's log.
    database = (tmp_path / "custos.db").read_bytes()
    texts = [json.dumps([f for _k, _a, f in audit]), database.decode("latin-1")]
    for share in shares.values():
        for text in texts:
            assert share not in text
            assert " ".join(share.split()[:4]) not in text
    for text in texts:
        assert backup_key.hex() not in text
    assert base64.b64encode(pkcs8).decode() not in texts[1]


def test_a_key_leaves_only_encrypted_to_the_recipient_after_a_quorum(officers: Officers) -> None:
    o = officers
    key = o.server.create_key("leaving-1")
    address = builders.address(key, "ethereum", "sepolia")
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    der = recipient.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505
    not_rsa = ec.generate_private_key(ec.SECP256R1()).public_key()
    for bad, words in (
        (b"not a key", "not a DER"),
        (
            small.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "1024 bits",
        ),
        (
            not_rsa.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "not an RSA",
        ),
    ):
        o.refused(
            lambda bad=bad: _propose(  # type: ignore[misc]
                o, "officer", kind=EXPORT, key_id="leaving-1", recipient_public_key=bad
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            words,
        )
    o.refused(
        lambda: _propose(o, "officer", kind=EXPORT, key_id="nope", recipient_public_key=der),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )
    proposed = _propose(o, "officer", kind=EXPORT, key_id="leaving-1", recipient_public_key=der)
    fingerprint = hashlib.sha256(der).hexdigest()
    assert proposed.params["recipient_fingerprint"] == fingerprint
    # Alone, or with one approval, nothing leaves; a code given with another
    # digest approves nothing.
    o.refused(lambda: _fetch(o, "officer", proposed.ceremony_id), PRECONDITION, "not executed")
    other = _propose(o, "officer", kind=BACKUP)
    o.refused(
        lambda: o.approve("officer2", proposed.ceremony_id, other.digest),
        PRECONDITION,
        "hash_mismatch",
    )
    o.approve("officer2", proposed.ceremony_id, proposed.digest)
    assert "key.exported" not in [k for k, _a, _f in o.audit()]
    o.approve("officer3", proposed.ceremony_id, proposed.digest)
    o.refused(lambda: _fetch(o, "officer3", proposed.ceremony_id), PRECONDITION, "proposed it")
    result = _fetch(o, "officer", proposed.ceremony_id)

    # Second implementation: CKM_RSA_AES_KEY_WRAP's layout, undone with `cryptography`.
    size = recipient.key_size // 8
    sha1 = hashes.SHA1()  # noqa: S303 - OAEP's hash, what SoftHSM supports; see hsm.key_export
    ephemeral = recipient.decrypt(
        result.data[:size], padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)
    )
    pkcs8 = aes_key_unwrap_with_padding(ephemeral, result.data[size:])
    assert _address_of_pkcs8(pkcs8) == address
    (exported,) = [f for k, _a, f in o.audit() if k == "key.exported"]
    assert exported["recipient_fingerprint"] == fingerprint
    assert exported["sha256"] == hashlib.sha256(result.data).hexdigest()
    assert exported["ceremony_id"] == proposed.ceremony_id
    o.refused(lambda: _fetch(o, "officer", proposed.ceremony_id), PRECONDITION, "fetched")


def _unwrapped(recipient: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """CKM_RSA_AES_KEY_WRAP's layout undone with `cryptography` (second implementation)."""
    size = recipient.key_size // 8
    sha1 = hashes.SHA1()  # noqa: S303 - OAEP's hash, what SoftHSM supports; see hsm.key_export
    ephemeral = recipient.decrypt(
        data[:size], padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)
    )
    return aes_key_unwrap_with_padding(ephemeral, data[size:])


def test_a_wallet_leaves_only_as_its_seed_encrypted_to_the_recipient_after_a_quorum(
    officers: Officers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    o = officers
    made = _propose(o, "officer", kind=keys_pb2.CEREMONY_KIND_CREATE_WALLET, wallet_id="leaving-w")
    assert made.state == "executed", made
    account = keys_pb2.WalletAccount(wallet_id="leaving-w", chain="ethereum", network="sepolia")
    derived = o.stubs["officer"].DeriveAddresses(
        keys_pb2.DeriveAddressesRequest(account=account, index=0, count=3)
    )
    addresses = [a.address for a in derived.addresses]
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = recipient.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for fields, code, words in (
        ({"wallet_id": "leaving-w"}, invalid, "recipient_public_key: required"),
        ({"wallet_id": "leaving-w", "recipient_public_key": b"junk"}, invalid, "not a DER"),
        ({"wallet_id": "Leaving W", "recipient_public_key": der}, invalid, "wallet_id"),
        ({"key_id": "k", "wallet_id": "leaving-w", "recipient_public_key": der}, invalid, "key_id"),
        ({"wallet_id": "nope", "recipient_public_key": der}, grpc.StatusCode.NOT_FOUND, "nope"),
    ):
        o.refused(
            lambda fields=fields: _propose(o, "officer", kind=EXPORT_WALLET, **fields),  # type: ignore[misc]
            code,
            words,
        )
    proposed = _propose(
        o, "officer", kind=EXPORT_WALLET, wallet_id="leaving-w", recipient_public_key=der
    )
    fingerprint = hashlib.sha256(der).hexdigest()
    assert proposed.params["recipient_fingerprint"] == fingerprint
    assert proposed.wallet_id == "leaving-w"
    # A lone officer, or one approval, gets nothing.
    o.refused(lambda: _fetch(o, "officer", proposed.ceremony_id), PRECONDITION, "not executed")
    o.approve("officer2", proposed.ceremony_id, proposed.digest)
    assert "wallet.exported" not in [k for k, _a, _f in o.audit()]
    o.approve("officer3", proposed.ceremony_id, proposed.digest)
    o.refused(lambda: _fetch(o, "officer3", proposed.ceremony_id), PRECONDITION, "proposed it")
    result = _fetch(o, "officer", proposed.ceremony_id)
    seed = _unwrapped(recipient, result.data)
    assert len(seed) == 64
    # bip-utils, from the seed alone, derives the addresses the service derived.
    chain = Bip44.FromSeed(seed, Bip44Coins.ETHEREUM).Purpose().Coin().Account(0)
    external = chain.Change(Bip44Changes.CHAIN_EXT)
    assert [external.AddressIndex(i).PublicKey().ToAddress() for i in range(3)] == addresses
    (exported,) = [f for k, _a, f in o.audit() if k == "wallet.exported"]
    assert exported["wallet_id"] == "leaving-w"
    assert exported["recipient_fingerprint"] == fingerprint
    assert exported["sha256"] == hashlib.sha256(result.data).hexdigest()
    assert exported["ceremony_id"] == proposed.ceremony_id
    o.refused(lambda: _fetch(o, "officer", proposed.ceremony_id), PRECONDITION, "fetched")
    # The seed is nowhere in the logs, the audit log or the database in the clear.
    text = json.dumps(o.audit()) + caplog.text
    assert "wallet.exported" in text
    database = b"".join(p.read_bytes() for p in tmp_path.glob("custos.db*"))
    assert database
    for form in (seed.hex(), seed.hex().upper(), base64.b64encode(seed).decode()):
        assert form not in text
        assert form.encode() not in database
    assert seed not in database


def test_the_import_key_is_made_by_a_quorum(officers: Officers) -> None:
    o = officers
    officer = o.stubs["officer"]
    o.refused(
        lambda: officer.CreateImportKey(keys_pb2.CreateImportKeyRequest()),
        PRECONDITION,
        "propose-import-key-init",
    )
    try:
        officer.GetImportKey(keys_pb2.GetImportKeyRequest())
        missing = None
    except grpc.RpcError as error:
        missing = error.code()
    if missing is None:
        # The session's token is shared, and test_key_import_e2e (or the auth probe)
        # may have made the import key already: then a proposal is refused at once.
        o.refused(
            lambda: _propose(o, "officer", kind=IMPORT_INIT),
            grpc.StatusCode.ALREADY_EXISTS,
            "the import key exists already",
        )
        return
    assert missing == PRECONDITION
    proposed = _propose(o, "officer", kind=IMPORT_INIT)
    o.approve("officer2", proposed.ceremony_id, proposed.digest)
    o.refused(
        lambda: officer.GetImportKey(keys_pb2.GetImportKeyRequest()), PRECONDITION, "no import"
    )
    done = o.approve("officer3", proposed.ceremony_id, proposed.digest)
    shown = officer.GetImportKey(keys_pb2.GetImportKeyRequest())
    assert done.outcome == f"import key made, fingerprint {shown.fingerprint}"
    (created,) = [f for k, _a, f in o.audit() if k == "import_key.created"]
    assert (created["fingerprint"], created["ceremony_id"]) == (
        shown.fingerprint,
        proposed.ceremony_id,
    )
    o.refused(lambda: _propose(o, "officer", kind=IMPORT_INIT), grpc.StatusCode.ALREADY_EXISTS, "")
    o.refused(lambda: _fetch(o, "officer", proposed.ceremony_id), PRECONDITION, "nothing to fetch")


def test_a_forged_backup_ceremony_row_hands_out_nothing(officers: Officers, tmp_path: Path) -> None:
    o = officers
    proposed = _propose(o, "officer", kind=BACKUP)
    db = sqlite3.connect(tmp_path / "custos.db")
    with db:  # "executed" without a single approval
        db.execute(
            "UPDATE ceremonies SET state = 'executed',"
            " record = json_set(record, '$.state', 'executed') WHERE ceremony_id = ?",
            (proposed.ceremony_id,),
        )
    db.close()
    o.refused(lambda: _fetch(o, "officer", proposed.ceremony_id), grpc.StatusCode.DATA_LOSS, "")
    assert "keys.backed_up" not in [k for k, _a, _f in o.audit()]


def test_the_cli_proposes_approves_and_fetches_an_export(
    officers: Officers, tmp_path: Path
) -> None:
    """`custos keys propose-export | approve | fetch`: the approver's client recomputes
    the digest, with the recipient's fingerprint from the key itself."""
    o = officers
    key = o.server.create_key("cli-leaving")
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = tmp_path / "recipient.pem"
    pem.write_bytes(
        recipient.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    profiles = {
        name: _cli_profile(o.server.env, o.server.port, name, tmp_path) for name in OFFICERS
    }

    def custos(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "custos.signer.tools.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CUSTOS_CLIENT": str(profiles[name])},
            check=False,
        )

    proposed = custos(
        "officer", "keys", "propose-export", "cli-leaving", "--recipient", str(pem), "-o", "json"
    )
    assert proposed.returncode == 0, proposed.stderr
    shown = json.loads(proposed.stdout)
    cid, digest = shown["ceremony_id"], shown["digest"]
    der = recipient.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = custos("officer2", "keys", "show-ceremony", cid).stdout
    assert f"recipient_fingerprint  {hashlib.sha256(der).hexdigest()}" in text
    wrong = custos("officer2", "keys", "approve", cid, "--digest", "0" * 64, "--code", "000000")
    assert wrong.returncode == 1
    assert "nothing was approved" in wrong.stderr

    for name in ("officer2", "officer3"):
        approved = custos(name, "keys", "approve", cid, "--digest", digest, "--code", o.code(name))
        assert approved.returncode == 0, approved.stderr
    out = tmp_path / "exported.bin"
    fetched = custos(
        "officer", "keys", "fetch", cid, "--out", str(out), "--code", o.code("officer")
    )
    assert fetched.returncode == 0, fetched.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    data = out.read_bytes()
    assert f"sha256 {hashlib.sha256(data).hexdigest()}" in fetched.stdout
    sha1 = hashes.SHA1()  # noqa: S303 - OAEP's hash, see hsm.key_export
    ephemeral = recipient.decrypt(
        data[:384], padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)
    )
    pkcs8 = aes_key_unwrap_with_padding(ephemeral, data[384:])
    assert _address_of_pkcs8(pkcs8) == builders.address(key, "ethereum", "sepolia")


def test_the_cli_proposes_a_wallet_export_its_approver_recomputes_the_digest(
    officers: Officers, tmp_path: Path
) -> None:
    """`custos keys propose-export-wallet`: the approver's client recomputes the digest
    (with the recipient's fingerprint from the key itself) and approves it."""
    o = officers
    made = _propose(o, "officer", kind=keys_pb2.CEREMONY_KIND_CREATE_WALLET, wallet_id="cli-w")
    assert made.state == "executed", made
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "recipient.pem"
    pem.write_bytes(
        recipient.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    profiles = {
        name: _cli_profile(o.server.env, o.server.port, name, tmp_path) for name in OFFICERS
    }

    def custos(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "custos.signer.tools.cli", "keys", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "CUSTOS_CLIENT": str(profiles[name])},
            check=False,
        )

    missing = custos("officer", "propose-export-wallet", "nope", "--recipient", str(pem))
    assert missing.returncode == 1
    assert "nope" in missing.stderr
    proposed = custos(
        "officer", "propose-export-wallet", "cli-w", "--recipient", str(pem), "-o", "json"
    )
    assert proposed.returncode == 0, proposed.stderr
    shown = json.loads(proposed.stdout)
    approved = custos(
        "officer2",
        *("approve", shown["ceremony_id"], "--digest", shown["digest"]),
        *("--code", o.code("officer2")),
    )
    assert approved.returncode == 0, approved.stderr
    ceremony = o.stubs["officer"].GetKeyCeremony(
        keys_pb2.GetKeyCeremonyRequest(ceremony_id=shown["ceremony_id"])
    )
    assert ceremony.approved_by == [subject_string("officer2")]
    assert ceremony.wallet_id == "cli-w"
