"""SignPsbt end to end (issue 12): PSBTs built by python-bitcointx, signed by Custos.

Every PSBT here is created by python-bitcointx; python-bitcointx (or Custos,
when asked to finalize) finalizes it, python-bitcointx extracts the network
transaction, and its script interpreter runs every input with the P2SH and
witness flags (tests/second_impl.py verify_bitcoin). The other cosigners of a
multisig are software keys held by the test.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from bitcointx import ChainParams
from bitcointx.core import (
    CTxOut,
    b2lx,
)
from bitcointx.core.key import CPubKey, KeyStore
from bitcointx.core.psbt import PartiallySignedTransaction
from bitcointx.core.script import CScript
from bitcointx.wallet import P2WPKHCoinAddress

from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.psbt import parse_psbt
from custos.signer.tools.devsetup import subject_string
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.psbt_builders import (
    SOFT,
    Spend,
    build,
    external,
    multisig_script,
    p2pkh,
    p2sh_p2wpkh,
    p2sh_p2wsh,
    p2wpkh,
    p2wsh,
    pay_out,
    verify,
)
from tests.second_impl import bitcoin_prevout_script

pytestmark = pytest.mark.integration

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "bip174.json").read_text()
)
with ChainParams("bitcoin/testnet"):
    DENIED = str(P2WPKHCoinAddress.from_pubkey(SOFT[2].pub))

POLICY = f"""\
version: 1
description: issue 12 PSBT signing
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:
  create_key: 0  # one officer creates the test's keys alone (development)
identity_groups:
  approvers: ["{subject_string("approver")}"]
address_book:
  cooling_off: 0s
  groups: [sanctioned]
  entries:
    - id: denied-btc
      chain: bitcoin
      network: testnet
      address: "{DENIED}"
      groups: [sanctioned]
rules:
  - id: no-sanctioned
    match: {{destinations: {{groups: [sanctioned], mode: any}}}}
    action: deny
    reason: sanctioned destination
  - id: large-bitcoin-held
    match: {{chains: [bitcoin], assets: [native], amount: {{min: "1000000"}}}}
    action: require_approval
    approval: {{approvals: 1, group: approvers, totp: false}}
  - id: default
    match: {{}}
    action: allow
"""


@pytest.fixture(scope="module")
def psbt_server(
    dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with server_with_policy(dev_env, tmp_path_factory.mktemp("psbt"), POLICY) as running:
        yield running


@pytest.fixture
def key(psbt_server: RunningServer) -> keys_pb2.Key:
    return psbt_server.create_key(f"psbt-{uuid.uuid4().hex[:10]}")


# ---- building PSBTs with python-bitcointx -------------------------------------


def _pub(key: keys_pb2.Key) -> bytes:
    return bytes.fromhex(key.public_key)


def sign(
    server: RunningServer,
    key: keys_pb2.Key,
    psbt: PartiallySignedTransaction,
    finalize: bool = False,
    request_id: str = "",
) -> pb.SignPsbtResponse:
    return server.signer().SignPsbt(
        pb.SignPsbtRequest(
            request_id=request_id or f"psbt-{uuid.uuid4().hex}",
            key_id=key.key_id,
            network="testnet",
            psbt=psbt.serialize(),
            finalize=finalize,
        )
    )


def signed(response: pb.SignPsbtResponse) -> PartiallySignedTransaction:
    assert response.batch.status == pb.BATCH_STATUS_SIGNED
    (item,) = response.batch.items
    assert base64.b64decode(item.raw_tx) == response.psbt
    return PartiallySignedTransaction.from_binary(response.psbt)


def refused(server: RunningServer, key: keys_pb2.Key, raw: bytes) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignPsbt(
            pb.SignPsbtRequest(
                request_id=f"psbt-{uuid.uuid4().hex}",
                key_id=key.key_id,
                network="testnet",
                psbt=raw,
            )
        )
    return info.value.code(), str(info.value.details())


# ---- tests ------------------------------------------------------------------


@pytest.mark.parametrize("finalize", [False, True], ids=["bitcointx-finalizes", "custos-finalizes"])
def test_own_inputs_of_every_type_are_signed_and_verify(
    psbt_server: RunningServer, key: keys_pb2.Key, finalize: bool
) -> None:
    pub = _pub(key)
    # The second P2SH-P2WPKH input comes without its redeem script: Custos knows its own.
    spends = [p2wpkh(pub), p2pkh(pub), p2sh_p2wpkh(pub), p2sh_p2wpkh(pub, False)]
    change = bitcoin_prevout_script(pub, "p2wpkh")
    psbt = build(spends, [(250_000, external()), (145_000, change)])
    response = sign(psbt_server, key, psbt, finalize=finalize)
    result = signed(response)
    item = response.batch.items[0]
    assert item.chain == "bitcoin"
    assert item.fee == 5_000
    assert item.tx_id == b2lx(psbt.unsigned_tx.GetTxid())
    assert len(item.signatures) == 4
    if finalize:
        assert result.is_final()
    else:
        assert all(CPubKey(pub) in i.partial_sigs for i in result.inputs)
    verify(result, spends)


def test_two_of_three_p2wsh_with_two_software_cosigners(
    psbt_server: RunningServer, key: keys_pb2.Key
) -> None:
    pub = _pub(key)
    script = multisig_script(2, [SOFT[0].pub, pub, SOFT[1].pub])
    spends = [p2wsh(script), p2sh_p2wsh(script)]
    # Change back to the same multisig: the policy sees it as change.
    psbt = build(spends, [(50_000, external()), (148_000, spends[0].script)])
    # Custos signs first, a software cosigner second; python-bitcointx finalizes.
    first = signed(sign(psbt_server, key, psbt))
    assert not first.is_final()
    with ChainParams("bitcoin/testnet"):
        assert first.sign(KeyStore(SOFT[1]), finalize=False).num_inputs_signed == 2
    verify(first, spends)
    # A software cosigner signs first; Custos adds the second signature and finalizes.
    again = build(spends, [(50_000, external()), (148_000, spends[0].script)])
    with ChainParams("bitcoin/testnet"):
        assert again.sign(KeyStore(SOFT[0]), finalize=False).num_inputs_signed == 2
    final = signed(sign(psbt_server, key, again, finalize=True))
    assert final.is_final()
    verify(final, spends)


def test_an_input_custos_cannot_sign_is_left_untouched(
    psbt_server: RunningServer, key: keys_pb2.Key
) -> None:
    spends = [p2wpkh(SOFT[1].pub), p2wpkh(_pub(key))]
    psbt = build(spends, pay_out(spends, external()))
    raw = psbt.serialize()
    result = signed(sign(psbt_server, key, psbt, finalize=True))
    ours, theirs = parse_psbt(raw, 10, 10), parse_psbt(result.serialize(), 10, 10)
    assert theirs.inputs[0].records == ours.inputs[0].records
    assert theirs.inputs[1].records != ours.inputs[1].records
    assert not result.inputs[0].partial_sigs
    assert result.inputs[1].final_script_witness
    with ChainParams("bitcoin/testnet"):
        result.sign(KeyStore(SOFT[1]), finalize=False)
    verify(result, spends)


def test_missing_or_mismatched_previous_transaction_is_refused_naming_the_input(
    psbt_server: RunningServer, key: keys_pb2.Key
) -> None:
    pub = _pub(key)
    spends = [p2wpkh(pub), p2wpkh(pub)]
    psbt = build(spends, pay_out(spends, external()))
    with ChainParams("bitcoin/testnet"):
        # Only the witness UTXO: a declared value, not a proven one.
        out = CTxOut(spends[1].value, CScript(spends[1].script))
        psbt.inputs[1].set_utxo(out, psbt.unsigned_tx)
    code, details = refused(psbt_server, key, psbt.serialize())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "bitcoin_psbt.psbt.inputs[1].non_witness_utxo: required" in details
    # Input 1 carries input 0's previous transaction.
    mismatched = parse_psbt(build(spends, pay_out(spends, external())).serialize(), 10, 10)
    mismatched.inputs[1].put(b"\x00", spends[0].funding.serialize())
    mismatched.inputs[1].records = [(k, v) for k, v in mismatched.inputs[1].records if k != b"\x01"]
    code, details = refused(psbt_server, key, mismatched.serialize())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[1].non_witness_utxo: hashes to txid" in details
    # A witness UTXO that disagrees with the previous transaction (a hidden fee).
    lying = parse_psbt(build(spends, pay_out(spends, external())).serialize(), 10, 10)
    lying.inputs[0].put(b"\x01", (1).to_bytes(8, "little") + bytes([22]) + spends[0].script)
    code, details = refused(psbt_server, key, lying.serialize())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0].witness_utxo" in details


def test_a_network_outside_the_keys_class_is_refused(
    psbt_server: RunningServer, key: keys_pb2.Key
) -> None:
    spends = [p2wpkh(_pub(key))]
    psbt = build(spends, pay_out(spends, external()))
    with pytest.raises(grpc.RpcError) as info:
        psbt_server.signer().SignPsbt(
            pb.SignPsbtRequest(
                request_id=f"psbt-{uuid.uuid4().hex}",
                key_id=key.key_id,
                network="mainnet",
                psbt=psbt.serialize(),
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[0].bitcoin_psbt.network: bitcoin mainnet is a mainnet network" in str(
        info.value.details()
    )


def test_policy_denial_refuses_the_whole_psbt(
    psbt_server: RunningServer, key: keys_pb2.Key
) -> None:
    pub = _pub(key)
    spends = [p2wpkh(pub), p2pkh(pub)]
    denied = bitcoin_prevout_script(SOFT[2].pub, "p2wpkh")
    psbt = build(spends, [(100_000, external()), (98_000, denied)])
    code, details = refused(psbt_server, key, psbt.serialize())
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "sanctioned" in details


def test_a_held_psbt_is_signed_after_approval_and_change_to_the_multisig_is_change(
    psbt_server: RunningServer, key: keys_pb2.Key
) -> None:
    script = multisig_script(2, [_pub(key), SOFT[0].pub, SOFT[1].pub])
    spends = [Spend(bytes(script.to_p2wsh_scriptPubKey()), 3_000_000, witness_script=script)]
    to_self = spends[0].script
    psbt = build(spends, [(1_500_000, external()), (1_490_000, to_self)])
    request_id = f"psbt-{uuid.uuid4().hex}"
    held = sign(psbt_server, key, psbt, request_id=request_id)
    assert held.batch.status == pb.BATCH_STATUS_PENDING_APPROVAL
    assert not held.psbt
    approvals = policy_pb2_grpc.ApprovalsStub(psbt_server.channel("approver"))
    pending = next(
        b
        for b in approvals.ListPending(policy_pb2.ListPendingRequest()).batches
        if b.approval_id == held.batch.approval_id
    )
    (item,) = pending.items
    assert [(t.amount, t.is_change) for t in item.transfers] == [
        ("1500000", False),
        ("1490000", True),
    ]
    assert item.fee == "10000"
    # Approvers see the multisig as the policy does: m, n and the other keys.
    (multisig,) = item.multisigs
    assert (multisig.threshold, multisig.total) == (2, 3)
    assert list(multisig.cosigners) == sorted(k.pub.hex() for k in SOFT[:2])
    approvals.Approve(
        policy_pb2.DecideRequest(
            approval_id=held.batch.approval_id, request_digest=pending.request_digest
        )
    )
    result = signed(sign(psbt_server, key, psbt, request_id=request_id))
    with ChainParams("bitcoin/testnet"):
        result.sign(KeyStore(SOFT[1]), finalize=False)
    verify(result, spends)


def test_only_sighash_all_is_signed(psbt_server: RunningServer, key: keys_pb2.Key) -> None:
    spends = [p2wpkh(_pub(key))]
    psbt = parse_psbt(build(spends, pay_out(spends, external())).serialize(), 10, 10)
    psbt.inputs[0].put(b"\x03", (0x83).to_bytes(4, "little"))  # SINGLE|ANYONECANPAY
    code, details = refused(psbt_server, key, psbt.serialize())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0].sighash_type: Custos signs with SIGHASH_ALL (1) only, not 131" in details


def test_retry_replays_and_get_batch_answers(psbt_server: RunningServer, key: keys_pb2.Key) -> None:
    spends = [p2wpkh(_pub(key))]
    psbt = build(spends, pay_out(spends, external()))
    request_id = f"psbt-{uuid.uuid4().hex}"
    first = sign(psbt_server, key, psbt, request_id=request_id)
    again = sign(psbt_server, key, psbt, request_id=request_id)
    assert again.batch.replayed
    assert again.psbt == first.psbt
    stored = psbt_server.signer().GetBatch(pb.GetBatchRequest(request_id=request_id))
    assert stored.items[0].raw_tx == first.batch.items[0].raw_tx
    # The same id with another PSBT is refused, not signed.
    other = build(spends, pay_out(spends, external(), fee=3_000))
    with pytest.raises(grpc.RpcError) as info:
        sign(psbt_server, key, other, request_id=request_id)
    assert info.value.code() in (
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["case"][:50])
def test_bip174_invalid_vectors_are_invalid_argument(
    psbt_server: RunningServer, key: keys_pb2.Key, case: dict[str, str]
) -> None:
    code, details = refused(psbt_server, key, bytes.fromhex(case["hex"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[0].bitcoin_psbt.psbt" in details


@pytest.mark.parametrize("group", ["valid", "fails_signer_checks"])
def test_bip174_other_vectors_are_parsed_then_refused_for_their_inputs(
    psbt_server: RunningServer, key: keys_pb2.Key, group: str
) -> None:
    # Parsed, then refused: their inputs are not this key's, lack the previous
    # transaction, or fail BIP174's Signer checks; each error names the inputs.
    for case in VECTORS[group]:
        code, details = refused(psbt_server, key, bytes.fromhex(case["hex"]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, case["case"]
        assert "items[0].bitcoin_psbt.psbt.inputs" in details, (case["case"], details)


def test_custos_sign_psbt_command(
    psbt_server: RunningServer, key: keys_pb2.Key, tmp_path: Path
) -> None:
    spends = [p2wpkh(_pub(key))]
    psbt = build(spends, pay_out(spends, external()))
    profile = tmp_path / "payments.toml"
    text = (psbt_server.env.dir / "clients" / "payments.toml").read_text()
    profile.write_text(
        text.replace('endpoint = "127.0.0.1:0"', f'endpoint = "127.0.0.1:{psbt_server.port}"')
    )
    source = tmp_path / "unsigned.psbt"
    source.write_text(psbt.to_base64() + "\n")
    out = tmp_path / "signed.psbt"
    args = ["sign-psbt", str(source), "--key", key.key_id, "--network", "testnet"]
    run = subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *args, "--finalize", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUSTOS_CLIENT": str(profile)},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["batch"]["status"] == "BATCH_STATUS_SIGNED"
    result = PartiallySignedTransaction.from_base64(out.read_text().strip())
    assert result.is_final()
    verify(result, spends)
    # `-` reads the PSBT from standard input: the same request, so the same result.
    piped = subprocess.run(
        [
            sys.executable,
            "-m",
            "custos.signer.tools.cli",
            "sign-psbt",
            "-",
            *args[2:],
            "--finalize",
        ],
        input=source.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUSTOS_CLIENT": str(profile)},
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["batch"]["status"] == "BATCH_STATUS_SIGNED"
