"""The BIP174 parser against BIP174's own test vectors and python-bitcointx."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from bitcointx.core.psbt import PartiallySignedTransaction, PSBT_Output

from custos.common.intent import Intent
from custos.common.secp256k1 import compressed, verify_der
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.base import InvalidField
from custos.signer.chains.bitcoin_address import b58check_decode
from custos.signer.chains.bitcoin_psbt import BitcoinPsbtAdapter, parse_multisig
from custos.signer.chains.limits import ChainLimits
from custos.signer.chains.psbt import Psbt, PsbtError, parse_psbt
from custos.signer.edge import requests as edge
from tests.psbt_builders import SOFT, Spend, build, multisig_script, p2sh_p2wsh, p2wpkh, p2wsh
from tests.second_impl import bitcoin_prevout_script
from tests.support import LocalKey

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "bip174.json").read_text()
)


def test_the_vectors_are_all_there() -> None:
    assert "bip-0174.mediawiki" in VECTORS["source"]
    assert len(VECTORS["invalid"]) == 20
    assert len(VECTORS["valid"]) == 10
    assert len(VECTORS["fails_signer_checks"]) == 4


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["case"][:60])
def test_invalid_vectors_are_refused(case: dict[str, str]) -> None:
    with pytest.raises(PsbtError):
        parse_psbt(bytes.fromhex(case["hex"]), 1000, 1000)


@pytest.mark.parametrize(
    "case", VECTORS["valid"] + VECTORS["fails_signer_checks"], ids=lambda c: c["case"][:60]
)
def test_valid_vectors_parse_and_serialize_back_unchanged(case: dict[str, str]) -> None:
    raw = bytes.fromhex(case["hex"])
    psbt = parse_psbt(raw, 1000, 1000)
    assert psbt.serialize() == raw
    assert len(psbt.inputs) == len(psbt.tx.inputs)
    assert len(psbt.outputs) == len(psbt.tx.outputs)


def test_parsed_like_python_bitcointx() -> None:
    # The 2-of-2 P2WSH vector: python-bitcointx reads the same transaction and scripts.
    case = next(c for c in VECTORS["valid"] if "P2WSH input of a 2-of-2" in c["case"])
    raw = bytes.fromhex(case["hex"])
    ours = parse_psbt(raw, 1000, 1000)
    theirs = PartiallySignedTransaction.from_binary(raw)
    assert ours.tx.txid == theirs.unsigned_tx.GetTxid()
    assert [v for v, _ in ours.tx.outputs] == [o.nValue for o in theirs.unsigned_tx.vout]
    script = ours.inputs[0].get(b"\x05")
    assert script == bytes(theirs.inputs[0].witness_script)
    assert script is not None
    multisig = parse_multisig(script)
    assert multisig is not None
    assert multisig[0] == 2
    assert len(multisig[1]) == 2


def test_limits_and_trailing_bytes() -> None:
    raw = bytes.fromhex(VECTORS["valid"][3]["hex"])
    with pytest.raises(PsbtError, match=r"limits\.bitcoin_max_inputs = 1"):
        parse_psbt(raw, 1, 1000)
    with pytest.raises(PsbtError, match=r"limits\.bitcoin_max_outputs = 1"):
        parse_psbt(raw, 1000, 1)
    with pytest.raises(PsbtError, match="after the last output map"):
        parse_psbt(raw + b"\x00", 1000, 1000)
    with pytest.raises(PsbtError, match="magic"):
        parse_psbt(b"", 1000, 1000)


def test_version_2_fields_and_versions_are_refused() -> None:
    raw = bytes.fromhex(VECTORS["valid"][0]["hex"])
    magic_len = 5
    # PSBT_GLOBAL_VERSION = 2, then PSBT_GLOBAL_TX_VERSION (v2 only), each in the global map.
    version_2 = raw[:magic_len] + b"\x01\xfb\x04\x02\x00\x00\x00" + raw[magic_len:]
    with pytest.raises(PsbtError, match="only PSBT version 0"):
        parse_psbt(version_2, 1000, 1000)
    tx_version = raw[:magic_len] + b"\x01\x02\x04\x02\x00\x00\x00" + raw[magic_len:]
    with pytest.raises(PsbtError, match="only in PSBT version 2"):
        parse_psbt(tx_version, 1000, 1000)


def _signer_vector_psbt() -> bytes:
    vector = VECTORS["signer"]
    psbt = parse_psbt(bytes.fromhex(vector["psbt"]), 10, 10)
    psbt.inputs[1].put(b"\x00", bytes.fromhex(vector["input1_previous_transaction"]))
    return psbt.serialize()


def _local_key(wif: str) -> LocalKey:
    payload = b58check_decode(wif)
    assert payload[0] == 0xEF
    assert payload[-1] == 1  # testnet, compressed
    return LocalKey(payload[1:33])


def _sign(key: LocalKey, raw: bytes, finalize: bool = False) -> Psbt:
    adapter = BitcoinPsbtAdapter(ChainLimits())
    prepared = adapter.prepare(
        edge.transaction(pb.BitcoinPsbt(network="testnet", psbt=raw, finalize=finalize)), key.info
    )
    signed = adapter.assemble(prepared, [key.sign(d) for d in prepared.digests])
    return parse_psbt(base64.b64decode(signed.raw_tx), 10, 10)


@pytest.mark.parametrize("signer", VECTORS["signer"]["signers"], ids=lambda s: s["path"])
def test_bip174_signer_vector(signer: dict[str, str]) -> None:
    """The P2SH-P2WSH cosigners' signatures are BIP174's, byte for byte (RFC6979 nonces)."""
    key = _local_key(signer["wif"])
    raw = _signer_vector_psbt()
    expected = parse_psbt(bytes.fromhex(signer["psbt"]), 10, 10)
    pub = compressed(key.info.public_key)
    in_script = [dict(m.of_type(0x02)).get(pub) for m in expected.inputs]
    if in_script[1] is None:
        # A key of the legacy P2SH multisig of input 0: not a script Custos signs.
        with pytest.raises(InvalidField, match="no unfinalized input is locked to key"):
            _sign(key, raw)
        return
    result = _sign(key, raw)
    assert dict(result.inputs[1].of_type(0x02)) == {pub: in_script[1]}
    assert result.inputs[0].records == parse_psbt(raw, 10, 10).inputs[0].records


def test_bip174_finalizer_vector() -> None:
    """The second cosigner of input 1 signs and finalizes: BIP174's final scriptSig and witness."""
    first, second = VECTORS["signer"]["signers"][1], VECTORS["signer"]["signers"][3]
    raw = _sign(_local_key(first["wif"]), _signer_vector_psbt()).serialize()
    result = _sign(_local_key(second["wif"]), raw, finalize=True)
    final = parse_psbt(bytes.fromhex(VECTORS["signer"]["finalized"]), 10, 10)
    for key_type in (0x07, 0x08):
        assert result.inputs[1].get(bytes([key_type])) == final.inputs[1].get(bytes([key_type]))
    # Only the UTXOs and the final fields are left, as BIP174's Input Finalizer leaves them.
    assert sorted(k[0] for k, _ in result.inputs[1].records) == [0x00, 0x01, 0x07, 0x08]


# ---- custody and change (issue 12) ----------------------------------------

CUSTOS = LocalKey(hashlib.sha256(b"unit-psbt-custos").digest())
CUSTOS_PUB = compressed(CUSTOS.info.public_key)
TREASURY = multisig_script(2, [SOFT[0].pub, CUSTOS_PUB, SOFT[1].pub])


def _intent(spends: list[Spend], outputs: list[tuple[int, bytes]]) -> Intent:
    raw = build(spends, outputs).serialize()
    adapter = BitcoinPsbtAdapter(ChainLimits())
    return adapter.prepare(
        edge.transaction(pb.BitcoinPsbt(network="testnet", psbt=raw)), CUSTOS.info
    ).intent


def test_change_is_only_the_custody_every_signed_input_comes_from() -> None:
    own = bitcoin_prevout_script(CUSTOS_PUB, "p2wpkh")
    treasury, nested = p2wsh(TREASURY).script, p2sh_p2wsh(TREASURY).script
    # The 2-of-3 alone: both of its forms are change, the key alone is not.
    intent = _intent([p2wsh(TREASURY)], [(1_000, own), (2_000, nested), (3_000, treasury)])
    assert [t.is_change for t in intent.transfers] == [False, True, True]
    (fact,) = intent.multisig
    assert (fact.threshold, fact.total) == (2, 3)
    assert fact.cosigners == tuple(sorted(k.hex() for k in (SOFT[0].pub, SOFT[1].pub)))
    # The key alone: its own script is change, the 2-of-3 is not.
    intent = _intent([p2wpkh(CUSTOS_PUB)], [(1_000, own), (2_000, treasury)])
    assert [t.is_change for t in intent.transfers] == [True, False]
    assert intent.multisig == ()
    # Both at once: whichever output, value leaves one of the two custodies.
    intent = _intent([p2wpkh(CUSTOS_PUB), p2wsh(TREASURY)], [(100_000, treasury), (90_000, own)])
    assert [t.is_change for t in intent.transfers] == [False, False]


def test_an_output_witness_script_that_does_not_hash_to_the_output_is_refused() -> None:
    psbt = build([p2wsh(TREASURY)], [(90_000, p2wsh(TREASURY).script)])
    psbt.outputs[0] = PSBT_Output(witness_script=multisig_script(1, [CUSTOS_PUB]), index=0)
    adapter = BitcoinPsbtAdapter(ChainLimits())
    item = pb.BitcoinPsbt(network="testnet", psbt=psbt.serialize())
    with pytest.raises(InvalidField) as info:
        adapter.prepare(edge.transaction(item), CUSTOS.info)
    assert info.value.field == "bitcoin_psbt.psbt.outputs[0].witness_script"


def test_verify_der_is_strict() -> None:
    digest = hashlib.sha256(b"digest").digest()
    der = SOFT[0].sign(digest)  # python-bitcointx: low-S strict DER
    pub = bytes(SOFT[0].pub)
    assert verify_der(der, digest, pub)
    assert not verify_der(der, hashlib.sha256(b"other").digest(), pub)
    assert not verify_der(der, digest, bytes(SOFT[1].pub))
    assert not verify_der(der + b"\x00", digest, pub)  # trailing byte
    padded = b"\x30" + bytes([der[1] + 1]) + b"\x02" + bytes([der[3] + 1]) + b"\x00" + der[4:]
    assert not verify_der(padded, digest, pub)  # a needlessly padded r
    assert not verify_der(b"", digest, pub)


def test_a_multisig_listing_a_key_twice_is_refused() -> None:
    # [Custos, Custos, SOFT[0]]: Custos's one signature would count twice.
    script = multisig_script(2, [CUSTOS_PUB, CUSTOS_PUB, SOFT[0].pub])
    psbt = build([p2wsh(script)], [(90_000, bitcoin_prevout_script(SOFT[1].pub, "p2wpkh"))])
    adapter = BitcoinPsbtAdapter(ChainLimits())
    item = pb.BitcoinPsbt(network="testnet", psbt=psbt.serialize())
    with pytest.raises(InvalidField) as info:
        adapter.prepare(edge.transaction(item), CUSTOS.info)
    assert info.value.field == "bitcoin_psbt.psbt.inputs[0].witness_script"
    assert "lists a key more than once" in info.value.message
