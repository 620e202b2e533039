"""Hypothesis strategies for the `bitcoin_psbt` item (signer/chains/bitcoin_psbt.py).

The seeds are PSBTs built by python-bitcointx that spend the fuzz key's
P2WPKH, P2PKH and P2SH-P2WPKH outputs and a 2-of-3 P2WSH / P2SH-P2WSH
multisig listing it; the structured strategy edits the PSBT bytes themselves
(flipped, deleted, inserted and duplicated bytes, truncation), since the
protobuf-level mutations of test_fuzz_chains.py rarely reach inside them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from bitcointx import ChainParams
from bitcointx.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxOut,
    COutPoint,
    CTransaction,
)
from bitcointx.core.key import CKey
from bitcointx.core.psbt import PartiallySignedTransaction
from bitcointx.core.script import OP_CHECKMULTISIG, CScript
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from custos.common.secp256k1 import compressed
from custos.proto.custos.v1 import signer_pb2 as pb
from tests.fuzz.strategies import KEY
from tests.second_impl import bitcoin_funding_tx, bitcoin_prevout_script

_PUB = compressed(KEY.info.public_key)
_OTHERS = [CKey(hashlib.sha256(f"fuzz cosigner {i}".encode()).digest()).pub for i in range(2)]


def _psbt(spends: list[tuple[bytes, CScript | None, CScript | None]], seed: str) -> bytes:
    """A PSBT spending (scriptPubKey, witness script, redeem script) outputs of 100,000 sat."""
    with ChainParams("bitcoin/testnet"):
        fundings = [
            CTransaction.deserialize(bitcoin_funding_tx([(100_000, spk)], seed=f"{seed}-{i}"))
            for i, (spk, _, _) in enumerate(spends)
        ]
        tx = CMutableTransaction(
            [CMutableTxIn(COutPoint(f.GetTxid(), 0), nSequence=0xFFFFFFFD) for f in fundings],
            [
                CMutableTxOut(60_000, CScript(bitcoin_prevout_script(_OTHERS[0], "p2wpkh"))),
                CMutableTxOut(
                    100_000 * len(spends) - 62_000, CScript(bitcoin_prevout_script(_PUB, "p2pkh"))
                ),
            ],
            nVersion=2,
        )
        psbt = PartiallySignedTransaction(unsigned_tx=tx)
        for index, (_, witness_script, redeem_script) in enumerate(spends):
            if witness_script is not None:
                psbt.inputs[index].witness_script = witness_script
            if redeem_script is not None:
                psbt.inputs[index].redeem_script = redeem_script
            psbt.set_utxo(fundings[index], index)
        raw: bytes = psbt.serialize()
        return raw


def _seeds() -> list[bytes]:
    wpkh = CScript(bitcoin_prevout_script(_PUB, "p2wpkh"))
    multisig = CScript([2, _OTHERS[0], _PUB, _OTHERS[1], 3, OP_CHECKMULTISIG])
    wsh = multisig.to_p2wsh_scriptPubKey()
    return [
        _psbt(
            [
                (bytes(wpkh), None, None),
                (bitcoin_prevout_script(_PUB, "p2pkh"), None, None),
                (bytes(wpkh.to_p2sh_scriptPubKey()), None, wpkh),
            ],
            "own",
        ),
        _psbt(
            [(bytes(wsh), multisig, None), (bytes(wsh.to_p2sh_scriptPubKey()), multisig, wsh)],
            "multisig",
        ),
        # One input of another key: left as it is.
        _psbt(
            [
                (bitcoin_prevout_script(_OTHERS[1], "p2wpkh"), None, None),
                (bytes(wpkh), None, None),
            ],
            "mixed",
        ),
    ]


PSBTS = _seeds()
_NETWORKS = st.sampled_from(["testnet"] * 7 + ["signet", "mainnet", "Testnet"])


@st.composite
def mutated_psbt(draw: st.DrawFn) -> bytes:
    """A seed PSBT after one to four byte-level edits."""
    data = bytearray(draw(st.sampled_from(PSBTS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        edit = draw(st.integers(0, 5))
        if edit == 0:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == 1:
            data[at] = draw(st.sampled_from([0x00, 0x01, 0xFC, 0xFD, 0xFE, 0xFF]))
        elif edit == 2:
            del data[at : at + draw(st.integers(1, 40))]
        elif edit == 3:
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
        elif edit == 4:
            end = min(len(data), at + draw(st.integers(1, 80)))
            data[at:at] = data[at:end]  # a record or a part of one, twice
        else:
            del data[at:]
    return bytes(data)


def bitcoin_psbt() -> SearchStrategy[Any]:
    return st.builds(
        pb.BitcoinPsbt,
        network=_NETWORKS,
        psbt=mutated_psbt() | st.sampled_from(PSBTS) | st.binary(max_size=300),
        finalize=st.booleans(),
    )


SEEDS: dict[str, list[Any]] = {
    "bitcoin_psbt": [
        pb.BitcoinPsbt(network="testnet", psbt=raw, finalize=i % 2 == 0)
        for i, raw in enumerate(PSBTS)
    ]
}
STRUCTURED: dict[str, SearchStrategy[Any]] = {"bitcoin_psbt": bitcoin_psbt()}
VALID: dict[str, SearchStrategy[Any] | None] = {"bitcoin_psbt": None}
MESSAGE_TYPES: dict[str, Any] = {"bitcoin_psbt": pb.BitcoinPsbt}
