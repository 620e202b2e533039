"""Operability: Prometheus metrics on their own port; JSON logs with context and no secrets."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import urllib.request
import uuid

import grpc
import pyotp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

from custos.hsm.backup import recover_backup_key
from custos.hsm.bip39 import entropy_to_mnemonic
from custos.hsm.import_material import (
    from_hex,
    wallet_from_mnemonic,
    wrap_for_import,
    wrap_seed_for_import,
)
from custos.proto.custos.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import subject_string
from tests import builders
from tests.conftest import RunningServer, ServerProcess
from tests.support import enroll_totp
from tests.totp import TotpCodes

pytestmark = pytest.mark.integration


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def test_metrics_endpoint_reports_signing_hsm_policy_and_health(server: RunningServer) -> None:
    key = server.create_key(f"met-{uuid.uuid4().hex[:8]}")
    server.signer().SignBatch(
        pb.SignBatchRequest(request_id=f"m-{uuid.uuid4().hex}", items=[builders.evm_item(key)])
    )
    port = server.server.metrics_port  # type: ignore[attr-defined]
    assert port
    text = _scrape(port)
    for name in (
        'custos_sign_requests_total{outcome="signed"}',
        'custos_sign_items_total{chain="ethereum",outcome="signed"}',
        "custos_hsm_sign_seconds_count",
        "custos_audit_append_seconds_count",
        "custos_rpc_seconds_count",
        "custos_pending_approvals",
        "custos_audit_checkpoint_age_seconds",
        'custos_component_up{component="hsm"} 1.0',
        'custos_component_up{component="store"} 1.0',
    ):
        assert name in text, name


def test_logs_are_json_with_context_and_never_hold_secrets(own_server: ServerProcess) -> None:
    own_server.start()
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="logged", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    uri = enroll_totp(own_server.channel, "approver")
    secret = pyotp.parse_uri(uri).secret
    signer = signer_pb2_grpc.SignerStub(own_server.channel("payments"))
    held = signer.SignBatch(
        pb.SignBatchRequest(
            request_id="logged-1", items=[builders.evm_item(key, value=str(2 * 10**18))]
        )
    )
    approvals = policy_pb2_grpc.ApprovalsStub(own_server.channel("approver"))
    pending = approvals.ListPending(policy_pb2.ListPendingRequest()).batches[0]
    good = pyotp.TOTP(secret).now()
    # Failures first: once approved, a refusal comes before (and without) the code.
    for code in ("000000", "123456", good):
        with contextlib.suppress(grpc.RpcError):  # refusals are expected here
            approvals.Approve(
                policy_pb2.DecideRequest(
                    approval_id=held.approval_id,
                    request_digest=pending.request_digest,
                    totp_code=code,
                )
            )
    bad = builders.evm_item(key)
    bad.evm.to = "0x1234"
    with contextlib.suppress(grpc.RpcError):
        signer.SignBatch(pb.SignBatchRequest(request_id="logged-2", items=[bad]))
    imported, blob = _import_a_key(keys_pb2_grpc.KeysStub(own_server.channel("officer")))
    # The wallet first, so that the backup carries it (its seal key wrapped, its seed sealed).
    words, seed = _import_and_use_a_wallet(own_server)
    custody = _custody_ceremonies(own_server, key)
    own_server.stop()

    text = (own_server.env.dir / "server.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, text[-2000:]
    assert all({"ts", "level", "component", "msg"} <= set(line) for line in lines)
    refused = [line for line in lines if line.get("request_id") == "logged-2"]
    assert refused, "the refused request left no log line with its request id"
    assert refused[0]["caller"] == subject_string("payments")
    assert refused[0]["component"] == "custos.pipeline"
    pin = (own_server.env.dir / "hsm.pin").read_text().strip()
    so_pin = (own_server.env.dir / "hsm.so-pin").read_text().strip()
    for forbidden in (pin, so_pin, secret, good, imported, blob, words, seed, *custody):
        assert forbidden not in text
    # Nothing in the store (audit log included) holds a secret in clear either.
    with sqlite3.connect(own_server.env.dir / "custos.db") as db:
        dump = "\n".join(db.iterdump())
        # Audit records are BLOBs (hex in the dump): read them as the text they are.
        dump += "\n".join(bytes(r[0]).decode() for r in db.execute("SELECT record FROM audit_log"))
    assert "totp.failed" in dump
    assert "key.imported" in dump
    assert "keys.backed_up" in dump
    assert "key.exported" in dump
    assert "wallet.imported" in dump
    with sqlite3.connect(own_server.env.dir / "custos.db") as db:
        audit = [json.loads(bytes(r[0])) for r in db.execute("SELECT record FROM audit_log")]
    (backed_up,) = [r["fields"] for r in audit if r.get("kind") == "keys.backed_up"]
    assert backed_up["wallet_ids"] == "logged-wallet"
    for forbidden in (pin, so_pin, secret, imported, blob, words, seed, *custody):
        assert forbidden not in dump
    # Every share was fetched: none is left in its ceremony row, even sealed.
    with sqlite3.connect(own_server.env.dir / "custos.db") as db:
        rows = [json.loads(r[0]) for r in db.execute("SELECT record FROM ceremonies")]
    assert [r["sealed"] for r in rows if r["kind"] == "backup_key_init"] == [[]]


def _custody_ceremonies(server: ServerProcess, key: keys_pb2.Key) -> list[str]:
    """The backup key's shares fetched by their holders, a backup and an export (the
    development policy: quorum 0, export 1); the secrets they must never leak: each
    share and its first words, the backup key, the exported key in clear."""
    uris = {name: enroll_totp(server.channel, name) for name in ("officer", "officer2")}
    code = TotpCodes(uris).code

    stubs = {name: keys_pb2_grpc.KeysStub(server.channel(name)) for name in uris}

    def fetch(name: str, ceremony_id: str) -> bytes:
        request = keys_pb2.FetchKeyCeremonyResultRequest(
            ceremony_id=ceremony_id, totp_code=code(name)
        )
        return bytes(stubs[name].FetchKeyCeremonyResult(request).data)

    init = stubs["officer"].ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(
            kind=keys_pb2.CEREMONY_KIND_BACKUP_KEY_INIT,
            threshold=2,
            holders=[subject_string(name) for name in uris],
        )
    )
    shares = [fetch(name, init.ceremony_id).decode() for name in uris]
    backup = stubs["officer"].ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(kind=keys_pb2.CEREMONY_KIND_BACKUP)
    )
    fetch("officer", backup.ceremony_id)
    recipient = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    export = stubs["officer"].ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(
            kind=keys_pb2.CEREMONY_KIND_EXPORT_KEY,
            key_id=key.key_id,
            recipient_public_key=recipient.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    )
    stubs["officer2"].ApproveKeyCeremony(
        keys_pb2.ApproveKeyCeremonyRequest(
            ceremony_id=export.ceremony_id, digest=export.digest, totp_code=code("officer2")
        )
    )
    wrapped = fetch("officer", export.ceremony_id)
    sha1 = hashes.SHA1()  # noqa: S303 - OAEP's hash, see hsm.key_export
    ephemeral = recipient.decrypt(
        wrapped[:384], padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None)
    )
    clear = serialization.load_der_private_key(
        aes_key_unwrap_with_padding(ephemeral, wrapped[384:]), None
    )
    assert isinstance(clear, ec.EllipticCurvePrivateKey)
    exported = clear.private_numbers().private_value.to_bytes(32, "big")
    backup_key = recover_backup_key(shares)
    return [
        *shares,
        *(" ".join(share.split()[:4]) for share in shares),
        backup_key.hex(),
        exported.hex(),
        ephemeral.hex(),
    ]


def _import_a_key(keys: keys_pb2_grpc.KeysStub) -> tuple[str, str]:
    """Import a key (after a damaged attempt); its secret and wrapped blob, as hex."""
    import_key = keys.CreateImportKey(keys_pb2.CreateImportKeyRequest())
    secret = from_hex(os.urandom(32).hex())
    request = keys_pb2.ImportKeyRequest(
        key_id="imported",
        network_class=keys_pb2.NETWORK_CLASS_TESTNET,
        wrapped_key=wrap_for_import(secret, import_key.public_key_der),
        public_key=secret.public_key,
        import_key_fingerprint=import_key.fingerprint,
        source="hex",
    )
    damaged = keys_pb2.ImportKeyRequest()
    damaged.CopyFrom(request)
    damaged.wrapped_key = bytes(b ^ 1 for b in request.wrapped_key)
    with contextlib.suppress(grpc.RpcError):  # refused, as test_key_import_e2e checks
        keys.ImportKey(damaged)
    keys.ImportKey(request)
    return secret.value.hex(), request.wrapped_key.hex()


def _import_and_use_a_wallet(server: ServerProcess) -> tuple[str, str]:
    """Import a wallet from a fresh mnemonic and sign with one of its keys (the
    development policy lets one officer import alone); its mnemonic and seed (hex)."""
    keys = keys_pb2_grpc.KeysStub(server.channel("officer"))
    import_key = keys.GetImportKey(keys_pb2.GetImportKeyRequest())
    words = entropy_to_mnemonic(os.urandom(32))
    wallet = wallet_from_mnemonic(words, "logged passphrase")
    done = keys.ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(
            kind=keys_pb2.CEREMONY_KIND_IMPORT_WALLET,
            wallet_id="logged-wallet",
            imported_wallet=keys_pb2.ImportedWallet(
                wrapped_seed=wrap_seed_for_import(wallet, import_key.public_key_der),
                master_public_key=wallet.master_public_key,
                import_key_fingerprint=import_key.fingerprint,
            ),
        )
    )
    assert done.state == "executed", done.outcome
    item = builders.evm_item(keys_pb2.Key())
    item.hd.CopyFrom(pb.HdKeyRef(wallet_id="logged-wallet", index=3))
    signed = signer_pb2_grpc.SignerStub(server.channel("payments")).SignBatch(
        pb.SignBatchRequest(request_id="logged-wallet-1", items=[item])
    )
    assert signed.status == pb.BATCH_STATUS_SIGNED
    return words, wallet.seed.hex()
