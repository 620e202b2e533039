"""PSBTs built by python-bitcointx, the second implementation of the PSBT tests.

`Spend` is one input with its funding transaction and the scripts a PSBT needs
to spend it; `build` makes the PSBT (testnet, version 2, with
`non_witness_utxo` on every input); `verify` lets python-bitcointx finalize
what is left, extract the transaction and run every input's script.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from bitcointx import ChainParams
from bitcointx.core import CMutableTransaction, CMutableTxIn, CMutableTxOut, COutPoint, CTransaction
from bitcointx.core.key import CKey, KeyStore
from bitcointx.core.psbt import PartiallySignedTransaction
from bitcointx.core.script import OP_CHECKMULTISIG, CScript

from tests.second_impl import bitcoin_funding_tx, bitcoin_prevout_script, verify_bitcoin

# Software keys: the other cosigners of the multisigs, or other wallets' keys.
SOFT = [CKey(hashlib.sha256(f"psbt-soft-{i}".encode()).digest()) for i in range(3)]


def multisig_script(m: int, pubs: Sequence[bytes]) -> CScript:
    return CScript([m, *pubs, len(pubs), OP_CHECKMULTISIG])


class Spend:
    """One input: its previous output's script, and the scripts a PSBT needs to spend it."""

    def __init__(
        self,
        script: bytes,
        value: int = 100_000,
        witness_script: CScript | None = None,
        redeem_script: CScript | None = None,
    ) -> None:
        self.script = script
        self.value = value
        self.witness_script = witness_script
        self.redeem_script = redeem_script
        self.funding = CTransaction.deserialize(
            bitcoin_funding_tx([(value, script)], seed=uuid.uuid4().hex)
        )


def p2wpkh(pub: bytes) -> Spend:
    return Spend(bitcoin_prevout_script(pub, "p2wpkh"))


def p2pkh(pub: bytes) -> Spend:
    return Spend(bitcoin_prevout_script(pub, "p2pkh"))


def p2sh_p2wpkh(pub: bytes, with_redeem_script: bool = True) -> Spend:
    redeem = CScript(bitcoin_prevout_script(pub, "p2wpkh"))
    return Spend(
        bytes(redeem.to_p2sh_scriptPubKey()), redeem_script=redeem if with_redeem_script else None
    )


def p2wsh(witness_script: CScript) -> Spend:
    return Spend(bytes(witness_script.to_p2wsh_scriptPubKey()), witness_script=witness_script)


def p2sh_p2wsh(witness_script: CScript) -> Spend:
    redeem = witness_script.to_p2wsh_scriptPubKey()
    return Spend(
        bytes(redeem.to_p2sh_scriptPubKey()), witness_script=witness_script, redeem_script=redeem
    )


def build(
    spends: Sequence[Spend], outputs: Sequence[tuple[int, bytes]]
) -> PartiallySignedTransaction:
    with ChainParams("bitcoin/testnet"):
        tx = CMutableTransaction(
            [CMutableTxIn(COutPoint(s.funding.GetTxid(), 0), nSequence=0xFFFFFFFD) for s in spends],
            [CMutableTxOut(value, CScript(script)) for value, script in outputs],
            nVersion=2,
        )
        psbt = PartiallySignedTransaction(unsigned_tx=tx)
        for index, spend in enumerate(spends):
            if spend.witness_script is not None:
                psbt.inputs[index].witness_script = spend.witness_script
            if spend.redeem_script is not None:
                psbt.inputs[index].redeem_script = spend.redeem_script
            psbt.set_utxo(spend.funding, index)
        return psbt


def pay_out(spends: Sequence[Spend], to: bytes, fee: int = 2_000) -> list[tuple[int, bytes]]:
    return [(sum(s.value for s in spends) - fee, to)]


def external() -> bytes:
    return bitcoin_prevout_script(SOFT[0].pub, "p2wpkh")


def verify(psbt: PartiallySignedTransaction, spends: Sequence[Spend]) -> str:
    """python-bitcointx finalizes what is left, extracts, and runs every input's script."""
    with ChainParams("bitcoin/testnet"):
        assert psbt.sign(KeyStore(), finalize=True).is_final
        tx = psbt.extract_transaction()
        return verify_bitcoin(tx.serialize().hex(), [(s.value, s.script) for s in spends])
