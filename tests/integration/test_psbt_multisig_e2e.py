"""A 2-of-3 through the real server (issue 12): policy on the cosigners and the change.

Custos holds one key; the other two are python-bitcointx software keys held by
the test. The policy allows a multisig spend only when its other keys are the
two known cosigners and change returns to the same 2-of-3; a cosigner's
partial signature already in the PSBT is verified before Custos signs. Every
transaction that comes out is finalized and run by python-bitcointx's script
interpreter with the P2SH and witness flags (test_psbt_e2e.verify).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import grpc
import pytest
from bitcointx import ChainParams
from bitcointx.core.key import CKey, CPubKey, KeyStore
from bitcointx.core.psbt import PSBT_Output

from custos.proto.custos.v1 import keys_pb2
from custos.signer.chains.psbt import parse_psbt
from custos.signer.tools.devsetup import subject_string
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.integration.test_psbt_e2e import _pub, refused, sign, signed
from tests.psbt_builders import (
    SOFT,
    Spend,
    build,
    external,
    multisig_script,
    p2sh_p2wsh,
    p2wsh,
    verify,
)
from tests.second_impl import bitcoin_prevout_script

pytestmark = pytest.mark.integration

# SOFT[0] and SOFT[1] are the treasury's cosigners; STRANGER is nobody's.
STRANGER = CKey(hashlib.sha256(b"psbt-multisig-stranger").digest())

POLICY = f"""\
version: 1
description: issue 12 multisig policy
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:
  create_key: 0  # one officer creates the test's keys alone (development)
rules:
  - id: treasury-2-of-3
    match:
      chains: [bitcoin]
      multisig:
        cosigners: ["{SOFT[0].pub.hex()}", "{SOFT[1].pub.hex()}"]
        min_threshold: 2
        change: same_multisig
    action: allow
"""


@pytest.fixture(scope="module")
def server(dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with server_with_policy(dev_env, tmp_path_factory.mktemp("multisig"), POLICY) as running:
        yield running


@pytest.fixture
def key(server: RunningServer) -> keys_pb2.Key:
    return server.create_key(f"msig-{uuid.uuid4().hex[:10]}")


def _treasury(key: keys_pb2.Key) -> bytes:
    return bytes(multisig_script(2, [SOFT[0].pub, _pub(key), SOFT[1].pub]))


def _denied(server: RunningServer, key: keys_pb2.Key, raw: bytes) -> None:
    code, details = refused(server, key, raw)
    assert code == grpc.StatusCode.PERMISSION_DENIED, details
    assert "no rule allows it" in details


def test_change_back_to_the_same_2_of_3_is_allowed_and_verifies(
    server: RunningServer, key: keys_pb2.Key
) -> None:
    script = multisig_script(2, [SOFT[0].pub, _pub(key), SOFT[1].pub])
    spends = [p2wsh(script)]
    # Change to the P2SH-P2WSH form of the same 2-of-3: the same custody.
    change = p2sh_p2wsh(script).script
    psbt = build(spends, [(30_000, external()), (68_000, change)])
    result = signed(sign(server, key, psbt))
    with ChainParams("bitcoin/testnet"):
        assert result.sign(KeyStore(SOFT[1]), finalize=False).num_inputs_signed == 1
    verify(result, spends)
    # The same keys in another order (a sortedmulti wallet's change), proven by
    # the witness script the coordinator puts in the PSBT's output fields.
    reordered = multisig_script(2, [SOFT[1].pub, SOFT[0].pub, _pub(key)])
    psbt = build(spends, [(30_000, external()), (68_000, p2wsh(reordered).script)])
    psbt.outputs[1] = PSBT_Output(witness_script=reordered, index=1)
    result = signed(sign(server, key, psbt))
    with ChainParams("bitcoin/testnet"):
        result.sign(KeyStore(SOFT[0]), finalize=False)
    verify(result, spends)


def test_change_to_another_multisig_or_to_custos_alone_is_refused(
    server: RunningServer, key: keys_pb2.Key
) -> None:
    pub = _pub(key)
    spends = [p2wsh(multisig_script(2, [SOFT[0].pub, pub, SOFT[1].pub]))]
    swapped = multisig_script(2, [SOFT[0].pub, pub, STRANGER.pub])
    one_of_one = multisig_script(1, [pub])
    for script, claimed in [
        (p2wsh(swapped).script, swapped),  # one key swapped, claimed as change
        (p2sh_p2wsh(swapped).script, None),
        (p2wsh(one_of_one).script, one_of_one),  # a 1-of-1 of Custos's own key
        (bitcoin_prevout_script(pub, "p2wpkh"), None),  # Custos's key alone
    ]:
        psbt = build(spends, [(30_000, external()), (68_000, script)])
        if claimed is not None:
            psbt.outputs[1] = PSBT_Output(witness_script=claimed, index=1)
        _denied(server, key, psbt.serialize())


def test_an_unknown_cosigner_or_a_lower_threshold_is_refused(
    server: RunningServer, key: keys_pb2.Key
) -> None:
    pub = _pub(key)
    for script in [
        multisig_script(2, [SOFT[0].pub, pub, STRANGER.pub]),
        multisig_script(1, [SOFT[0].pub, pub, SOFT[1].pub]),
    ]:
        spends = [p2wsh(script)]
        psbt = build(spends, [(30_000, external()), (68_000, spends[0].script)])
        _denied(server, key, psbt.serialize())


def _with_partial_sig(raw: bytes, index: int, pubkey: bytes, value: bytes) -> bytes:
    psbt = parse_psbt(raw, 10, 10)
    psbt.inputs[index].put(b"\x02" + pubkey, value)
    return psbt.serialize()


def test_a_forged_cosigner_signature_is_refused_naming_the_input(
    server: RunningServer, key: keys_pb2.Key
) -> None:
    script = multisig_script(2, [SOFT[0].pub, _pub(key), SOFT[1].pub])
    spends = [p2wsh(script), p2sh_p2wsh(script)]
    change = spends[0].script
    psbt = build(spends, [(30_000, external()), (168_000, change)])
    with ChainParams("bitcoin/testnet"):
        # A real signature by SOFT[0] on input 0, so that only input 1 is wrong.
        assert psbt.sign(KeyStore(SOFT[0]), finalize=False).num_inputs_signed == 2
    raw = psbt.serialize()
    good = bytes(psbt.inputs[0].partial_sigs[CPubKey(SOFT[0].pub)])
    other_digest = SOFT[0].sign(hashlib.sha256(b"some other transaction").digest()) + b"\x01"
    high_s = _high_s(good)
    forgeries = [
        (SOFT[0].pub, other_digest, "is not a valid low-S DER signature"),  # wrong digest
        (SOFT[0].pub, good, "is not a valid low-S DER signature"),  # input 0's signature
        (SOFT[0].pub, high_s, "is not a valid low-S DER signature"),  # malleated
        (SOFT[0].pub, good[:-1] + b"\x02", "sighash type 2, not SIGHASH_ALL"),
        (STRANGER.pub, STRANGER.sign(b"\x11" * 32) + b"\x01", "does not list"),
    ]
    for pubkey, value, message in forgeries:
        code, details = refused(server, key, _with_partial_sig(raw, 1, pubkey, value))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "items[0].bitcoin_psbt.psbt.inputs[1].partial_sig: by key " in details
        assert pubkey.hex() in details
        assert message in details


def _high_s(sig_with_type: bytes) -> bytes:
    """The same signature with s replaced by n - s (valid ECDSA, not low-S)."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    der = sig_with_type[:-1]
    r_len = der[3]
    r = der[4 : 4 + r_len]
    s = int.from_bytes(der[6 + r_len :], "big")
    body = (n - s).to_bytes(32, "big").lstrip(b"\x00")
    if body[0] & 0x80:
        body = b"\x00" + body
    inner = b"\x02" + bytes([r_len]) + r + b"\x02" + bytes([len(body)]) + body
    return b"\x30" + bytes([len(inner)]) + inner + sig_with_type[-1:]


def test_a_valid_cosigner_signature_and_custos_finalize_and_verify(
    server: RunningServer, key: keys_pb2.Key
) -> None:
    script = multisig_script(2, [SOFT[0].pub, _pub(key), SOFT[1].pub])
    spends = [p2wsh(script), p2sh_p2wsh(script), Spend(p2wsh(script).script, 50_000)]
    spends[2].witness_script = script
    psbt = build(spends, [(100_000, external()), (148_000, spends[1].script)])
    with ChainParams("bitcoin/testnet"):
        assert psbt.sign(KeyStore(SOFT[1]), finalize=False).num_inputs_signed == 3
    final = signed(sign(server, key, psbt, finalize=True))
    assert final.is_final()
    verify(final, spends)
