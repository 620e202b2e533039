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
- Messages: eth-account hashes EIP-191 and EIP-712 messages (encode_defunct,
  encode_typed_data) and recovers the signer (recover_message); tronpy's
  hash_message is TronWeb's signMessageV2 hash (TIP-191, decimal length) and
  recovers the signer; python-bitcointx's VerifyMessage checks P2PKH, and for
  P2WPKH (BIP137 header 39-42) the public key recovered by python-bitcointx
  must hash to the address's witness program.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence

from bitcointx import ChainParams
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
from bitcointx.core.key import CPubKey
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
from bitcointx.signmessage import BitcoinMessage, VerifyMessage
from bitcointx.wallet import CCoinAddress, P2PKHCoinAddress, P2WPKHCoinAddress
from eth_account import Account
from eth_account.messages import SignableMessage, encode_defunct, encode_typed_data
from eth_hash.auto import keccak
from tronpy.keys import Signature as TronSignature
from tronpy.keys import hash_message as tron_hash_message

from custos.common.secp256k1 import compressed


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


# ---- messages ----------------------------------------------------------------

_BITCOINTX_CHAINS = {
    "mainnet": "bitcoin",
    "testnet": "bitcoin/testnet",
    "signet": "bitcoin/signet",
    "regtest": "bitcoin/regtest",
}


def typed_data_digest(typed_data_json: str) -> bytes:
    """eth-account's EIP-712 digest: keccak256(0x19 0x01 || domainSeparator || hashStruct)."""
    signable = encode_typed_data(full_message=json.loads(typed_data_json))
    assert bytes(signable.version) == b"\x01"  # EIP-191 version byte of EIP-712
    assert len(signable.header) == 32
    assert len(signable.body) == 32
    return keccak(b"\x19\x01" + bytes(signable.header) + bytes(signable.body))


def _recover(signable: SignableMessage, signature_hex: str) -> str:
    signature = bytes.fromhex(signature_hex.removeprefix("0x"))
    assert len(signature) == 65
    assert signature[64] in (27, 28)
    return str(Account.recover_message(signable, signature=signature))


def evm_message_signer(message: bytes, signature_hex: str) -> str:
    """The address that signed an EIP-191 personal_sign message (v = 27/28)."""
    return _recover(encode_defunct(primitive=message), signature_hex)


def evm_typed_data_signer(typed_data_json: str, signature_hex: str) -> str:
    """The address that signed EIP-712 typed data (eth_signTypedData_v4 JSON)."""
    return _recover(encode_typed_data(full_message=json.loads(typed_data_json)), signature_hex)


def tron_message_signer(message: bytes, signature_hex: str) -> str:
    """The base58 address that signed a TIP-191 message, as TronWeb's verifyMessageV2 finds it."""
    signature = bytes.fromhex(signature_hex.removeprefix("0x"))
    assert len(signature) == 65
    assert signature[64] in (27, 28)  # TronWeb's v
    # tronpy must hash as TronWeb's src/utils/message hashMessage does (TIP-191,
    # the V2 format): keccak256(prefix || String(message.length) || message).
    prefix = b"\x19TRON Signed Message:\n"
    assert tron_hash_message(message) == keccak(prefix + str(len(message)).encode() + message)
    public = TronSignature(signature).recover_public_key_from_msg(message)
    assert public.verify_msg(message, TronSignature(signature))
    assert (
        TronSignature(signature).recover_public_key_from_msg_hash(tron_hash_message(message))
        == public
    )
    return str(public.to_base58check_address())


def bitcoin_message_verifies(address: str, network: str, message: bytes, signature: str) -> bool:
    """Whether a base64 BIP137 signature of `message` is by `address`."""
    raw = base64.b64decode(signature, validate=True)
    with ChainParams(_BITCOINTX_CHAINS[network]):
        parsed = CCoinAddress(address)
        if isinstance(parsed, P2PKHCoinAddress):
            assert 31 <= raw[0] <= 34  # compressed-key P2PKH header
            return bool(VerifyMessage(parsed, BitcoinMessage(message), signature))
        assert isinstance(parsed, P2WPKHCoinAddress)
        assert 39 <= raw[0] <= 42  # BIP137 P2WPKH header
        public = CPubKey.recover_compact(BitcoinMessage(message).GetHash(), raw)
        if public is None:
            return False
        return bytes(P2WPKHCoinAddress.from_pubkey(public)) == bytes(parsed)
