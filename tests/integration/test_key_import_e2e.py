"""Key import end to end: real SoftHSM token, real in-process mTLS gRPC server, the real CLI.

Each source (hex, WIF, keystore v3, BIP39 mnemonic with passphrase and path)
is imported by `custos keys import`, which reads the secret from standard input
and sends it only RSA-OAEP-encrypted to the HSM's import key. The key's
addresses equal what eth-account (Account.from_key, Account.decrypt,
Account.from_mnemonic) and python-bitcointx make of the same secret, and a
transaction the imported key signs through the server recovers (eth-account)
to that address. The bootstrap policy refuses imported keys on BNB Smart Chain:
the policy tells an imported key from a generated one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyotp
import pytest
from bitcointx import ChainParams
from bitcointx.wallet import CCoinKey, P2WPKHCoinAddress
from coincurve import PrivateKey
from eth_account import Account

from custos.hsm.errors import KeyNotFound
from custos.hsm.import_material import SecretKey, from_hex, wrap_for_import
from custos.hsm.pkcs11_token import Pkcs11Token
from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import subject_string
from custos.signer.usecases.key_import import IMPORT_KEY_ID
from tests import builders
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.integration.test_approvals_e2e import _cli_profile
from tests.second_impl import evm_sender
from tests.support import enroll_totp

pytestmark = pytest.mark.integration

TESTNET = keys_pb2.NETWORK_CLASS_TESTNET
MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"

POLICY = f"""\
version: 1
description: key import
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies: {{create_key: 0, import_key: 0, import_key_init: 0}}  # one officer alone; test_an_import_ceremony...
rules:
  - id: imported-not-on-bsc
    match: {{key_origins: [imported], chains: [bsc]}}
    action: deny
    reason: imported keys do not sign on BNB Smart Chain
  - id: everything-else
    action: allow
"""


@pytest.fixture(scope="module")
def imp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("import")


@pytest.fixture(scope="module")
def imp_server(dev_env: DevEnv, imp_dir: Path) -> Iterator[RunningServer]:
    with server_with_policy(dev_env, imp_dir, POLICY) as running:
        yield running


@pytest.fixture(scope="module")
def import_key(imp_server: RunningServer) -> keys_pb2.ImportWrappingKey:
    """The token's import key; made here unless another test made it on the shared token."""
    made = _import_key_of(imp_server)
    created = [
        {k: v for k, v in e.items() if k != "ceremony_id"}  # made by a quorum-0 ceremony
        for kind, e in _events(imp_server)
        if kind == "import_key.created"
    ]
    assert created in ([], [{"algorithm": "rsa-3072-oaep-sha1", "fingerprint": made.fingerprint}])
    return made


def _events(server: RunningServer) -> list[tuple[str, dict[str, object]]]:
    records = server.server.store.audit_records(0, 10**6)  # type: ignore[attr-defined]
    return [(r.event.kind, r.event.fields) for r in records]


def _rid() -> str:
    return f"imp-{uuid.uuid4().hex}"


def _address(key: keys_pb2.Key, chain: str, network: str, kind: str) -> str:
    (found,) = [
        a.address for a in key.addresses if (a.chain, a.network, a.kind) == (chain, network, kind)
    ]
    return found


def _bitcointx_p2wpkh(secret: bytes) -> str:
    with ChainParams("bitcoin/testnet"):
        return str(P2WPKHCoinAddress.from_pubkey(CCoinKey.from_secret_bytes(secret).pub))


def _sign(server: RunningServer, item: pb.SignItem) -> pb.SignBatchResponse:
    return server.signer().SignBatch(pb.SignBatchRequest(request_id=_rid(), items=[item]))


def _check_key(server: RunningServer, key: keys_pb2.Key, secret: bytes, eth_address: str) -> None:
    """Addresses agree with eth-account and python-bitcointx; a signature recovers to it."""
    assert key.origin == keys_pb2.KEY_ORIGIN_IMPORTED
    assert _address(key, "ethereum", "sepolia", "account") == eth_address
    assert _address(key, "bitcoin", "testnet", "p2wpkh") == _bitcointx_p2wpkh(secret)
    signed = _sign(server, builders.evm_item(key, chain_id=11155111))
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == eth_address


def test_the_import_key_is_made_once_and_its_fingerprint_is_its_digest(
    imp_server: RunningServer, import_key: keys_pb2.ImportWrappingKey
) -> None:
    stub = imp_server.keys()
    with pytest.raises(grpc.RpcError) as again:
        stub.CreateImportKey(keys_pb2.CreateImportKeyRequest())
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    shown = stub.GetImportKey(keys_pb2.GetImportKeyRequest())
    assert shown == import_key
    digest = hashlib.sha256(shown.public_key_der).hexdigest()
    assert shown.fingerprint.replace(":", "") == digest
    with pytest.raises(grpc.RpcError) as denied:
        imp_server.keys("payments").GetImportKey(keys_pb2.GetImportKeyRequest())
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_cli_shows_the_import_key_and_makes_it_once(
    imp_server: RunningServer, import_key: keys_pb2.ImportWrappingKey, tmp_path: Path
) -> None:
    shown = _custos(imp_server, tmp_path, "officer", "keys", "import-key", "show")
    assert shown.returncode == 0, shown.stderr
    assert f"fingerprint  {import_key.fingerprint}" in shown.stdout
    assert "-----BEGIN PUBLIC KEY-----" in shown.stdout
    again = _custos(imp_server, tmp_path, "officer", "keys", "import-key", "init")
    assert again.returncode == 1
    assert "ALREADY_EXISTS: the import key exists already" in again.stderr


def _custos(
    server: RunningServer, tmp_path: Path, name: str, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    profile = _cli_profile(server.env, server.port, name, tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUSTOS_CLIENT": str(profile)},
        check=False,
    )


def _cli_import(
    server: RunningServer, tmp_path: Path, fingerprint: str, args: list[str], stdin: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """`custos keys import` as an officer runs it, the secret on standard input."""
    key_id = f"imp-{uuid.uuid4().hex[:10]}"
    options = ["--network-class", "testnet", "--fingerprint", fingerprint, "-o", "json"]
    result = _custos(
        server, tmp_path, "officer", "keys", "import", key_id, *options, *args, stdin=stdin
    )
    return result, key_id


def _sources(tmp_path: Path) -> dict[str, tuple[list[str], str, bytes, str]]:
    """Per source: CLI arguments, standard input, the secret, and eth-account's address."""
    Account.enable_unaudited_hdwallet_features()
    keys = [
        PrivateKey(hashlib.sha256(f"import {i} {uuid.uuid4()}".encode()).digest()) for i in range(3)
    ]
    hex_secret, wif_secret, store_secret = (k.secret for k in keys)
    with ChainParams("bitcoin/testnet"):
        wif = str(CCoinKey.from_secret_bytes(wif_secret))
    keystore = Account.encrypt(store_secret, "correct horse", kdf="scrypt", iterations=2**12)
    keystore_path = tmp_path / "keystore.json"
    keystore_path.write_text(json.dumps(keystore))
    path = f"m/44'/60'/0'/0/{uuid.uuid4().int % 1000}"
    derived = Account.from_mnemonic(MNEMONIC, "TREZOR", path)
    return {
        "hex": (
            ["--from", "hex"],
            "0x" + hex_secret.hex() + "\n",
            hex_secret,
            Account.from_key(hex_secret).address,
        ),
        "wif": (["--from", "wif"], wif + "\n", wif_secret, Account.from_key(wif_secret).address),
        "keystore": (
            ["--from", "keystore", "--keystore", str(keystore_path)],
            "correct horse\n",
            bytes(Account.decrypt(keystore, "correct horse")),
            Account.from_key(store_secret).address,
        ),
        "mnemonic": (
            ["--from", "mnemonic", "--passphrase", "--path", path],
            MNEMONIC + "\nTREZOR\n",
            bytes(derived.key),
            derived.address,
        ),
    }


@pytest.mark.parametrize("source", ["hex", "wif", "keystore", "mnemonic"])
def test_each_source_imports_through_the_cli_and_signs(
    imp_server: RunningServer,
    import_key: keys_pb2.ImportWrappingKey,
    tmp_path: Path,
    source: str,
) -> None:
    args, stdin, secret, eth_address = _sources(tmp_path)[source]
    result, key_id = _cli_import(imp_server, tmp_path, import_key.fingerprint, args, stdin)
    assert result.returncode == 0, result.stderr
    assert import_key.fingerprint in result.stderr  # shown before anything is sent
    shown = json.loads(result.stdout)
    assert shown["origin"] == "KEY_ORIGIN_IMPORTED"
    key = imp_server.keys().GetKey(keys_pb2.GetKeyRequest(key_id=key_id))
    _check_key(imp_server, key, secret, eth_address)
    listed = {k.key_id: k for k in imp_server.keys().ListKeys(keys_pb2.ListKeysRequest()).keys}
    assert listed[key_id].origin == keys_pb2.KEY_ORIGIN_IMPORTED
    (event,) = [
        e for kind, e in _events(imp_server) if kind == "key.imported" and e["key_id"] == key_id
    ]
    assert event["origin"] == "imported"
    assert event["source"] == source
    assert event["import_key_fingerprint"] == import_key.fingerprint
    assert event["public_key"] == PrivateKey(secret).public_key.format(compressed=False).hex()
    assert f"ethereum/sepolia/account:{eth_address}" in event["addresses"]  # type: ignore[operator]
    for text in (result.stdout, result.stderr, json.dumps(event)):
        assert secret.hex() not in text
        assert MNEMONIC.split(maxsplit=1)[0] not in text


def test_a_wrong_pin_sends_nothing(
    imp_server: RunningServer, import_key: keys_pb2.ImportWrappingKey, tmp_path: Path
) -> None:
    first = import_key.fingerprint[0]
    wrong = ("1" if first != "1" else "2") + import_key.fingerprint[1:]
    result, key_id = _cli_import(imp_server, tmp_path, wrong, ["--from", "hex"], "11" * 32 + "\n")
    assert result.returncode == 2
    assert "does not have the pinned fingerprint" in result.stderr
    with pytest.raises(grpc.RpcError) as missing:
        imp_server.keys().GetKey(keys_pb2.GetKeyRequest(key_id=key_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_policy_tells_imported_keys_from_generated_ones(
    imp_server: RunningServer, import_key: keys_pb2.ImportWrappingKey
) -> None:
    secret = from_hex(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    key = imp_server.keys().ImportKey(_request(f"imp-{uuid.uuid4().hex[:10]}", secret, import_key))
    generated = imp_server.create_key(f"gen-{uuid.uuid4().hex[:10]}")
    assert generated.origin == keys_pb2.KEY_ORIGIN_GENERATED
    bsc = builders.evm_item(generated, chain_id=97, tx_type=pb.EVM_TX_TYPE_LEGACY)
    signed = _sign(imp_server, bsc)
    assert signed.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == builders.address(generated, "bsc", "testnet")
    with pytest.raises(grpc.RpcError) as denied:
        _sign(imp_server, builders.evm_item(key, chain_id=97, tx_type=pb.EVM_TX_TYPE_LEGACY))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "imported keys do not sign on BNB Smart Chain" in (denied.value.details() or "")


def _request(
    key_id: str, secret: SecretKey, import_key: keys_pb2.ImportWrappingKey
) -> keys_pb2.ImportKeyRequest:
    return keys_pb2.ImportKeyRequest(
        key_id=key_id,
        network_class=TESTNET,
        wrapped_key=wrap_for_import(secret, import_key.public_key_der),
        public_key=secret.public_key,
        import_key_fingerprint=import_key.fingerprint,
        source=secret.source,
    )


def test_bad_imports_are_refused_and_leave_nothing(
    imp_server: RunningServer, import_key: keys_pb2.ImportWrappingKey, imp_dir: Path
) -> None:
    stub = imp_server.keys()
    secret = from_hex(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    other = from_hex(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    key_id = f"imp-{uuid.uuid4().hex[:10]}"
    good = _request(key_id, secret, import_key)
    tampered = bytearray(good.wrapped_key)
    tampered[100] ^= 1
    cases: list[tuple[keys_pb2.ImportKeyRequest, grpc.StatusCode, str]] = []

    def case(code: grpc.StatusCode, words: str, **changes: object) -> None:
        request = keys_pb2.ImportKeyRequest()
        request.CopyFrom(good)
        for name, value in changes.items():
            setattr(request, name, value)
        cases.append((request, code, words))

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    case(grpc.StatusCode.FAILED_PRECONDITION, "import_key_fingerprint", import_key_fingerprint="ab")
    case(invalid, "wrapped_key: does not unwrap", wrapped_key=bytes(tampered))
    case(invalid, "does not match public_key", public_key=other.public_key)
    case(invalid, "wrapped_key: 383 bytes", wrapped_key=good.wrapped_key[:-1])
    case(invalid, "public_key", public_key=b"\x04" + bytes(64))
    case(invalid, "source", source="paper")
    case(invalid, "path: only a mnemonic", path="m/44'/60'/0'/0/0")
    case(invalid, "network_class", network_class=keys_pb2.NETWORK_CLASS_UNSPECIFIED)
    case(invalid, "key_id", key_id="Not Valid")
    for request, code, words in cases:
        with pytest.raises(grpc.RpcError) as refused:
            stub.ImportKey(request)
        assert refused.value.code() == code, (words, refused.value.details())
        assert words in (refused.value.details() or ""), refused.value.details()
    # Nothing was made: no record, no object in the token; then the good request works.
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetKey(keys_pb2.GetKeyRequest(key_id=key_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(KeyNotFound):
        imp_server.server.pool.public_key(key_id)  # type: ignore[attr-defined]
    key = stub.ImportKey(good)
    _check_key(imp_server, key, secret.value, Account.from_key(secret.value).address)
    # The same id again, and the same secret under another id, are refused.
    for request, words in (
        (good, f"key {key_id!r} already exists"),
        (
            _request(f"imp-{uuid.uuid4().hex[:10]}", secret, import_key),
            f"custody as key {key_id!r}",
        ),
    ):
        with pytest.raises(grpc.RpcError) as exists:
            stub.ImportKey(request)
        assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert words in (exists.value.details() or "")
    _assert_store_holds_no_secret(
        imp_server, imp_dir / "custos.db", [secret.value, other.value], [good.wrapped_key]
    )


def _assert_store_holds_no_secret(
    server: RunningServer, path: Path, secrets: list[bytes], blobs: list[bytes]
) -> None:
    """Neither the secret (raw, hex) nor the wrapped blob is in the store or the audit log."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(FULL)")
    data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    for secret in secrets:
        for form in (secret, secret.hex().encode(), secret.hex().upper().encode()):
            assert form not in data
    for blob in blobs:
        assert blob[:48] not in data
    records = server.server.store.audit_records(0, 10**6)  # type: ignore[attr-defined]
    text = json.dumps([r.event.fields for r in records])
    assert all(secret.hex() not in text for secret in secrets)


def _token_attributes(env: DevEnv, key_id: str) -> dict[str, bool]:
    """What the token says of the private key object with CKA_ID `key_id`."""
    from pkcs11 import Attribute, ObjectClass

    hsm = env.config().hsm
    # Pkcs11Token: its log-in waits out the token file being rewritten by a worker.
    token = Pkcs11Token(str(hsm.library), hsm.token_label, env.pin())
    try:
        (private,) = token._session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key_id.encode()}
        )
        names = ("SENSITIVE", "EXTRACTABLE", "SIGN", "DECRYPT", "UNWRAP")
        return {n: bool(private[getattr(Attribute, n)]) for n in names}
    finally:
        token.close()


def test_imported_keys_are_sensitive_and_import_key_never_extractable(
    imp_server: RunningServer, import_key: keys_pb2.ImportWrappingKey
) -> None:
    secret = from_hex(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    key_id = f"imp-{uuid.uuid4().hex[:10]}"
    imp_server.keys().ImportKey(_request(key_id, secret, import_key))
    # Like a generated key: extractable only so that a backup can wrap it.
    assert _token_attributes(imp_server.env, key_id) == {
        "SENSITIVE": True,
        "EXTRACTABLE": True,
        "SIGN": True,
        "DECRYPT": False,
        "UNWRAP": False,
    }
    unwrapper = _token_attributes(imp_server.env, IMPORT_KEY_ID)
    # It only unwraps: a decrypting import key would hand any blob back in the clear.
    assert unwrapper == {
        "SENSITIVE": True,
        "EXTRACTABLE": False,
        "SIGN": False,
        "DECRYPT": False,
        "UNWRAP": True,
    }


def test_a_key_unwrapped_but_not_registered_is_adopted_only_if_it_is_the_same(
    imp_server: RunningServer, import_key: keys_pb2.ImportWrappingKey
) -> None:
    """A crash between the HSM's unwrap and the store's insert leaves a token object."""
    pool = imp_server.server.pool  # type: ignore[attr-defined]
    secret = from_hex(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    key_id = f"imp-{uuid.uuid4().hex[:10]}"
    request = _request(key_id, secret, import_key)
    pool.unwrap_secp256k1(IMPORT_KEY_ID, key_id, request.wrapped_key, secret.public_key)
    other = from_hex(hashlib.sha256(uuid.uuid4().bytes).hexdigest())
    with pytest.raises(grpc.RpcError) as taken:
        imp_server.keys().ImportKey(_request(key_id, other, import_key))
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "the HSM holds another key under this id" in (taken.value.details() or "")
    key = imp_server.keys().ImportKey(request)
    _check_key(imp_server, key, secret.value, Account.from_key(secret.value).address)
    (event,) = [
        e for kind, e in _events(imp_server) if kind == "key.imported" and e["key_id"] == key_id
    ]
    assert event["adopted"] is True


CEREMONY_POLICY = f"""\
version: 1
description: key import under a quorum
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies: {{import_key: 1, import_key_init: 0}}
rules:
  - id: everything
    action: allow
"""


def test_an_import_ceremony_needs_another_officers_totp_bound_to_the_blob(
    dev_env: DevEnv, tmp_path: Path
) -> None:
    Account.enable_unaudited_hdwallet_features()
    path = "m/44'/60'/0'/0/7"
    expected = Account.from_mnemonic(MNEMONIC, "", path)
    (tmp_path / "srv").mkdir()
    with server_with_policy(dev_env, tmp_path / "srv", CEREMONY_POLICY) as server:
        fingerprint = _import_key_of(server).fingerprint
        key_id = f"imp-{uuid.uuid4().hex[:10]}"
        args = ["--network-class", "testnet", "--fingerprint", fingerprint, "-o", "json"]
        alone = _custos(
            server,
            tmp_path,
            "officer",
            "keys",
            "import",
            key_id,
            "--from",
            "mnemonic",
            "--path",
            path,
            *args,
            stdin=MNEMONIC + "\n",
        )
        assert alone.returncode == 1
        assert "propose it with `custos keys propose-import`" in alone.stderr
        proposed = _custos(
            server,
            tmp_path,
            "officer",
            "keys",
            "propose-import",
            key_id,
            "--from",
            "mnemonic",
            "--path",
            path,
            *args,
            stdin=MNEMONIC + "\n",
        )
        assert proposed.returncode == 0, proposed.stderr
        ceremony = json.loads(proposed.stdout)
        assert ceremony["state"] == "open"
        assert ceremony["kind"] == "CEREMONY_KIND_IMPORT_KEY"
        with pytest.raises(grpc.RpcError) as missing:
            server.keys().GetKey(keys_pb2.GetKeyRequest(key_id=key_id))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        _assert_a_damaged_blob_is_never_proposed(server, ceremony)
        uri = enroll_totp(server.channel, "officer2")
        approved = _custos(
            server,
            tmp_path,
            "officer2",
            "keys",
            "approve",
            ceremony["ceremony_id"],
            "--digest",
            ceremony["digest"],
            "--code",
            pyotp.parse_uri(uri).now(),
            "-o",
            "json",
        )
        assert approved.returncode == 0, approved.stderr
        assert json.loads(approved.stdout)["state"] == "executed"
        key = server.keys().GetKey(keys_pb2.GetKeyRequest(key_id=key_id))
        _check_key(server, key, bytes(expected.key), expected.address)
        events = _events(server)
        (imported,) = [e for kind, e in events if kind == "key.imported"]
        assert imported["ceremony_id"] == ceremony["ceremony_id"]
        assert imported["path"] == path
        blob = base64.b64decode(ceremony["imported_key"]["wrapped_key"])
        steps = [e for kind, e in events if kind.startswith("ceremony.")]
        assert steps
        for step in steps:
            assert "wrapped_key" not in step
            assert step["wrapped_key_sha256"] == hashlib.sha256(base64.b64encode(blob)).hexdigest()
        _assert_store_holds_no_secret(
            server, tmp_path / "srv" / "custos.db", [bytes(expected.key)], []
        )


def _import_key_of(server: RunningServer) -> keys_pb2.ImportWrappingKey:
    stub = server.keys()
    try:
        return stub.CreateImportKey(keys_pb2.CreateImportKeyRequest())
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    return stub.GetImportKey(keys_pb2.GetImportKeyRequest())


def _assert_a_damaged_blob_is_never_proposed(
    server: RunningServer, ceremony: dict[str, object]
) -> None:
    """The HSM's trial unwrap refuses it up front: no ceremony for officers to approve."""
    imported = ceremony["imported_key"]
    assert isinstance(imported, dict)
    damaged = bytearray(base64.b64decode(imported["wrapped_key"]))
    damaged[7] ^= 1
    before = server.keys().ListKeyCeremonies(keys_pb2.ListKeyCeremoniesRequest()).ceremonies
    with pytest.raises(grpc.RpcError) as refused:
        server.keys().ProposeKeyCeremony(
            keys_pb2.ProposeKeyCeremonyRequest(
                kind=keys_pb2.CEREMONY_KIND_IMPORT_KEY,
                key_id=f"imp-{uuid.uuid4().hex[:10]}",
                network_class=TESTNET,
                imported_key=keys_pb2.ImportKeyRequest(
                    wrapped_key=bytes(damaged),
                    public_key=base64.b64decode(imported["public_key"]),
                    import_key_fingerprint=str(imported["import_key_fingerprint"]),
                    source=str(imported["source"]),
                    path=str(imported["path"]),
                ),
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "wrapped_key: does not unwrap" in (refused.value.details() or "")
    after = server.keys().ListKeyCeremonies(keys_pb2.ListKeyCeremoniesRequest()).ceremonies
    assert len(after) == len(before)
