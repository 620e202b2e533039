"""The BIP174 parser against BIP174's own test vectors and python-bitcointx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bitcointx.core.psbt import PartiallySignedTransaction

from signer.chains.bitcoin_psbt import parse_multisig
from signer.chains.psbt import PsbtError, parse_psbt

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
