"""Independent checks of signed transactions, by libraries other than the adapters.

- EVM: eth-account recovers the sender from the raw signed transaction.
- Bitcoin: python-bitcointx's script interpreter runs every input (P2SH and
  witness flags on) against its previous output. python-bitcointx also builds
  the previous transactions that requests carry (`bitcoin_funding_tx`) and reads
  the txid, value and script of a previous output from them (`bitcoin_prevout`). python-bitcointx is the
  maintained fork of python-bitcoinlib; python-bitcoinlib 0.12.2, the latest
  release, has no witness support in VerifyScript.
- Tron: tronpy recovers the signer's address from the txID and signature,
  and the txID is checked to be SHA-256 of raw_data_hex.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from bitcointx.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxInWitness,
    CMutableTxOut,
    CMutableTxWitness,
    COutPoint,
    CTransaction,
    Hash160,
    b2lx,
    x,
)
from bitcointx.core.script import (
    OP_0,
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUALVERIFY,
    OP_HASH160,
    CScript,
    CScriptWitness,
)
from bitcointx.core.scripteval import SCRIPT_VERIFY_P2SH, SCRIPT_VERIFY_WITNESS, VerifyScript
from eth_account import Account
from tronpy.keys import Signature as TronSignature

from hsm.secp256k1 import compressed


def evm_sender(raw_tx_hex: str) -> str:
    return str(Account.recover_transaction(raw_tx_hex))


def bitcoin_prevout_script(public_key: bytes, script_type: str) -> bytes:
    h = Hash160(compressed(public_key))
    if script_type == "p2wpkh":
        return bytes(CScript([OP_0, h]))
    return bytes(CScript([OP_DUP, OP_HASH160, h, OP_EQUALVERIFY, OP_CHECKSIG]))


def bitcoin_funding_tx(
    outputs: Sequence[tuple[int, bytes]], seed: str = "funding", segwit: bool = False
) -> bytes:
    """A serialized transaction paying `outputs` ((value, scriptPubKey) each).

    Its one input spends a made-up outpoint derived from `seed`; with `segwit`
    it carries a witness, so it is serialized in the BIP144 form (marker, flag,
    witness), whose txid is computed without them.
    """
    txin = CMutableTxIn(COutPoint(hashlib.sha256(seed.encode()).digest(), 0), nSequence=0xFFFFFFFF)
    txouts = [CMutableTxOut(value, CScript(script)) for value, script in outputs]
    witness = None
    if segwit:
        stack = CScriptWitness([bytes(71) + b"\x01", b"\x02" + bytes(32)])
        witness = CMutableTxWitness([CMutableTxInWitness(stack)])
    tx = CMutableTransaction([txin], txouts, nLockTime=0, nVersion=2, witness=witness)
    raw: bytes = tx.serialize()
    return raw


def bitcoin_prevout(prev_tx: bytes, vout: int) -> tuple[str, int, bytes]:
    """(txid as explorers show it, value, scriptPubKey) of output `vout` of a serialized tx."""
    tx = CTransaction.deserialize(prev_tx)
    output = tx.vout[vout]
    return b2lx(tx.GetTxid()), int(output.nValue), bytes(output.scriptPubKey)


def verify_bitcoin(raw_tx_hex: str, prevouts: Sequence[tuple[int, bytes]]) -> str:
    """Run every input's script; returns the txid. `prevouts` are (value, scriptPubKey)."""
    tx = CTransaction.deserialize(x(raw_tx_hex))
    assert len(tx.vin) == len(prevouts)
    for index, (value, script_pubkey) in enumerate(prevouts):
        witness = tx.wit.vtxinwit[index].scriptWitness if tx.wit.vtxinwit else CScriptWitness()
        VerifyScript(
            tx.vin[index].scriptSig,
            CScript(script_pubkey),
            tx,
            index,
            flags=(SCRIPT_VERIFY_P2SH, SCRIPT_VERIFY_WITNESS),
            amount=value,
            witness=witness,
        )
    return b2lx(tx.GetTxid())


def tron_signer(raw_tx_json: str) -> str:
    """The base58 address that signed a Tron transaction (after checking its txID)."""
    tx = json.loads(raw_tx_json)
    txid = hashlib.sha256(bytes.fromhex(tx["raw_data_hex"])).digest()
    assert txid.hex() == tx["txID"]
    (signature,) = tx["signature"]
    public = TronSignature(bytes.fromhex(signature)).recover_public_key_from_msg_hash(txid)
    return str(public.to_base58check_address())
