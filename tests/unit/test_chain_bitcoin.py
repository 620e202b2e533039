"""BitcoinAdapter: published vectors, and every signed transaction re-checked by python-bitcoinlib.

bitcoinlib is the second implementation: it deserializes the raw transaction,
recomputes each signature hash with its own code and verifies the signature
with OpenSSL. Test addresses are encoded with bitcoinlib's bech32 and the
base58 package, not with the module under test. The previous transactions
that inputs carry are built, and their txids computed, by python-bitcointx.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import base58
import bitcoin
import pytest
from bitcoin import segwit_addr
from bitcoin.core import CTransaction, Hash160, b2lx
from bitcoin.core.key import CPubKey
from bitcoin.core.script import (
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUALVERIFY,
    OP_HASH160,
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    SignatureHash,
)
from bitcoin.core.scripteval import SCRIPT_VERIFY_P2SH, VerifyScript
from bitcointx.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxInWitness,
    CMutableTxOut,
    CMutableTxWitness,
    COutPoint,
)
from bitcointx.core import CTransaction as TxCTransaction
from bitcointx.core import b2lx as b2lx_tx
from bitcointx.core.script import CScript as TxCScript
from bitcointx.core.script import CScriptWitness
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from custos.common.secp256k1 import HALF_N, compressed
from custos.proto.custos.v1 import signer_pb2
from custos.signer.chains import bitcoin as adapter_module
from custos.signer.chains import bitcoin_prevtx as prevtx_module
from custos.signer.chains.base import InvalidField, PreparedTx, SignedTx
from custos.signer.chains.bitcoin import MAX_MONEY, BitcoinAdapter
from custos.signer.chains.bitcoin_address import (
    BECH32_CONST,
    BECH32M_CONST,
    AddressError,
    bech32_decode,
    decode_segwit,
    encode_segwit,
    hash160,
    p2wpkh_script,
    script_for_address,
    segwit_script,
    sha256d,
)
from custos.signer.chains.bitcoin_prevtx import PrevTx, PrevTxError, parse_prev_tx
from custos.signer.chains.limits import (
    BITCOIN_INPUT_UNITS,
    BITCOIN_OUTPUT_UNITS,
    ITEM_UNITS,
    PARSE_WEIGHT,
    ChainLimits,
    WorkBudget,
)
from custos.signer.edge import requests as edge
from tests.second_impl import bitcoin_funding_tx, bitcoin_prevout
from tests.support import LocalKey

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
NETWORKS = ("mainnet", "testnet", "signet", "regtest")
HRP = {"mainnet": "bc", "testnet": "tb", "signet": "tb", "regtest": "bcrt"}
ADAPTER = BitcoinAdapter()
KEY = LocalKey(hashlib.sha256(b"custos bitcoin test key").digest(), key_id="btc-key")
OTHER = LocalKey(hashlib.sha256(b"someone else").digest())
PROGRAMS = {
    "p2pkh": bytes(range(20)),
    "p2sh": bytes(range(20, 40)),
    "p2wpkh": bytes(range(40, 60)),
    "p2wsh": bytes(range(60, 92)),
    "p2tr": bytes(range(100, 132)),
}


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


# ---- an independent encoder for the addresses the tests pay to ---------------


def bech32_address(hrp: str, version: int, program: bytes, const: int) -> str:
    """Segwit address with either checksum, from bitcoinlib's (pre-BIP350) bech32 primitives."""
    data = [version, *segwit_addr.convertbits(list(program), 8, 5)]
    poly = segwit_addr.bech32_polymod(
        [*segwit_addr.bech32_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]
    )
    checksum = [((poly ^ const) >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(segwit_addr.CHARSET[d] for d in data + checksum)


def address_of(network: str, kind: str, program: bytes) -> str:
    mainnet = network == "mainnet"
    if kind == "p2pkh":
        return str(base58.b58encode_check(bytes([0x00 if mainnet else 0x6F]) + program).decode())
    if kind == "p2sh":
        return str(base58.b58encode_check(bytes([0x05 if mainnet else 0xC4]) + program).decode())
    if kind in ("p2wpkh", "p2wsh"):
        return str(segwit_addr.encode(HRP[network], 0, list(program)))
    return bech32_address(HRP[network], 1, program, 0x2BC830A3)


def script_of(kind: str, program: bytes) -> bytes:
    return {
        "p2pkh": b"\x76\xa9\x14" + program + b"\x88\xac",
        "p2sh": b"\xa9\x14" + program + b"\x87",
        "p2wpkh": b"\x00\x14" + program,
        "p2wsh": b"\x00\x20" + program,
        "p2tr": b"\x51\x20" + program,
    }[kind]


def own_address(network: str, kind: str, key: LocalKey = KEY) -> str:
    return address_of(network, kind, Hash160(compressed(key.info.public_key)))


# ---- building, signing and checking transactions -----------------------------


def own_script(script_type: str, key: LocalKey = KEY) -> bytes:
    return script_of(script_type, Hash160(compressed(key.info.public_key)))


def prev_tx(outputs: list[tuple[int, bytes]], n: int = 0, segwit: bool = False) -> bytes:
    return bitcoin_funding_tx(outputs, f"prev-{n}", segwit)


def spend(
    script_type: str,
    value: int,
    n: int = 0,
    vout: int | None = None,
    declare: bool = True,
    segwit: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An input spending output `vout` of previous transaction `n`, which it carries whole.

    The previous transaction pays `value` to the key's `script_type` script at
    `vout`, and decoys to someone else before it; every third one is serialized
    with witness data. `declare` also sends the value and type as cross-checks.
    """
    vout = n % 3 if vout is None else vout
    decoy = (777, script_of("p2wpkh", PROGRAMS["p2wpkh"]))
    raw = prev_tx([decoy] * vout + [(value, own_script(script_type))], n, n % 3 == 1)
    if segwit is not None:
        raw = prev_tx([decoy] * vout + [(value, own_script(script_type))], n, segwit)
    txid, _, _ = bitcoin_prevout(raw, vout)
    fields: dict[str, Any] = {"txid": txid, "vout": vout, "prev_tx": raw, **extra}
    if declare:
        fields.update(value=value, script_type=script_type)
    return fields


def tx_message(
    network: str,
    inputs: list[dict[str, Any]],
    outputs: list[tuple[str, int]],
    version: int = 2,
    lock_time: int = 0,
) -> signer_pb2.BitcoinTransaction:
    msg = signer_pb2.BitcoinTransaction(network=network, version=version, lock_time=lock_time)
    for spec in inputs:
        msg.inputs.add(**spec)
    for address, value in outputs:
        msg.outputs.add(address=address, value=value)
    return msg


def sign(msg: signer_pb2.BitcoinTransaction, key: LocalKey = KEY) -> tuple[PreparedTx, SignedTx]:
    prepared = ADAPTER.prepare(edge.transaction(msg), key.info)
    return prepared, ADAPTER.assemble(prepared, [key.sign(d) for d in prepared.digests])


def base_message() -> signer_pb2.BitcoinTransaction:
    return tx_message(
        "mainnet",
        [spend("p2wpkh", 60_000, 1), spend("p2pkh", 40_000, 2)],
        [
            (own_address("mainnet", "p2pkh", OTHER), 50_000),
            (own_address("mainnet", "p2wpkh"), 45_000),
        ],
    )


def assert_refused(msg: signer_pb2.BitcoinTransaction, field: str, message: str) -> None:
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(edge.transaction(msg), KEY.info)
    assert caught.value.field == field
    assert message in caught.value.message


def assert_strict_der_low_s(der: bytes) -> None:
    """BIP66 IsValidSignatureEncoding (without the hash type byte), then BIP146 low S."""
    assert der[0] == 0x30
    assert der[1] == len(der) - 2
    assert der[2] == 0x02
    r_len = der[3]
    r = der[4 : 4 + r_len]
    assert der[4 + r_len] == 0x02
    s = der[6 + r_len :]
    assert len(s) == der[5 + r_len]
    for value in (r, s):
        assert value
        assert not value[0] & 0x80
        assert not (len(value) > 1 and value[0] == 0 and not value[1] & 0x80)
    assert 0 < int.from_bytes(s, "big") <= HALF_N


def check_with_bitcoinlib(
    msg: signer_pb2.BitcoinTransaction,
    prepared: PreparedTx,
    signed: SignedTx,
    key: LocalKey = KEY,
) -> CTransaction:
    raw = bytes.fromhex(signed.raw_tx)
    tx = CTransaction.deserialize(raw)
    assert tx.serialize() == raw
    assert b2lx(tx.GetTxid()) == signed.tx_id
    assert tx.nVersion == (msg.version or 2)
    assert tx.nLockTime == msg.lock_time
    pub = compressed(key.info.public_key)
    p2pkh = CScript([OP_DUP, OP_HASH160, Hash160(pub), OP_EQUALVERIFY, OP_CHECKSIG])
    assert len(tx.vin) == len(msg.inputs) == len(prepared.digests)
    for i, (txin, spec) in enumerate(zip(tx.vin, msg.inputs, strict=True)):
        assert b2lx(txin.prevout.hash) == spec.txid.lower()
        assert txin.prevout.n == spec.vout
        assert txin.nSequence == (spec.sequence if spec.HasField("sequence") else 0xFFFFFFFD)
        stack = list(tx.wit.vtxinwit[i].scriptWitness.stack) if tx.has_witness() else []
        # What the input spends, as python-bitcointx reads it from the previous tx.
        prev_txid, value, script_pubkey = bitcoin_prevout(spec.prev_tx, spec.vout)
        assert prev_txid == spec.txid.lower()
        assert script_pubkey in (bytes(p2pkh), own_script("p2wpkh", key))
        if script_pubkey == bytes(p2pkh):
            assert stack == []
            assert prepared.digests[i] == SignatureHash(p2pkh, tx, i, SIGHASH_ALL)
            VerifyScript(txin.scriptSig, p2pkh, tx, i, flags=(SCRIPT_VERIFY_P2SH,))
            sig = next(iter(txin.scriptSig))
        else:
            # bitcoinlib 0.12 has no witness interpreter: BIP141's P2WPKH rules
            # by hand, with bitcoinlib's BIP143 sighash and OpenSSL's ECDSA.
            assert len(txin.scriptSig) == 0
            assert len(stack) == 2
            assert stack[1] == pub
            sig = stack[0]
            digest = SignatureHash(
                p2pkh, tx, i, SIGHASH_ALL, amount=value, sigversion=SIGVERSION_WITNESS_V0
            )
            assert prepared.digests[i] == digest
            assert CPubKey(pub).verify(digest, sig[:-1])
        assert sig[-1] == SIGHASH_ALL
        assert_strict_der_low_s(sig[:-1])
    assert [(o.nValue, bytes(o.scriptPubKey)) for o in tx.vout] == [
        (o.value, script_for_address(o.address, msg.network)[1]) for o in msg.outputs
    ]
    return tx


# ---- addresses -----------------------------------------------------------


def test_addresses_cover_every_network_and_kind_from_the_compressed_key() -> None:
    # The BIP173 examples are P2WPKH addresses of the generator point's key (secret 1).
    key = LocalKey((1).to_bytes(32, "big"))
    assert len(key.info.public_key) == 65
    found = {(a.network, a.kind): a.address for a in ADAPTER.addresses(key.info.public_key)}
    assert found == {
        ("mainnet", "p2wpkh"): "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        ("mainnet", "p2pkh"): "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH",
        ("testnet", "p2wpkh"): "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
        ("testnet", "p2pkh"): "mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r",
        ("signet", "p2wpkh"): "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
        ("signet", "p2pkh"): "mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r",
        ("regtest", "p2wpkh"): "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        ("regtest", "p2pkh"): "mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r",
    }
    assert all(a.chain == "bitcoin" for a in ADAPTER.addresses(key.info.public_key))
    for (network, kind), address in found.items():
        assert address == own_address(network, kind, key)


@pytest.mark.parametrize("text", load("bitcoin_addresses.json")["valid_bech32"])
def test_bip173_valid_bech32_strings(text: str) -> None:
    assert bech32_decode(text)[2] == BECH32_CONST
    pos = text.rfind("1")
    broken = text[: pos + 1] + chr(ord(text[pos + 1]) ^ 1) + text[pos + 2 :]
    with pytest.raises(AddressError):
        bech32_decode(broken)


@pytest.mark.parametrize("text", load("bitcoin_addresses.json")["valid_bech32m"])
def test_bip350_valid_bech32m_strings(text: str) -> None:
    assert bech32_decode(text)[2] == BECH32M_CONST


@pytest.mark.parametrize(
    ("text", "const"),
    [(v["string"], BECH32_CONST) for v in load("bitcoin_addresses.json")["invalid_bech32"]]
    + [(v["string"], BECH32M_CONST) for v in load("bitcoin_addresses.json")["invalid_bech32m"]],
)
def test_bip173_bip350_invalid_strings(text: str, const: int) -> None:
    try:
        decoded = bech32_decode(text)
    except AddressError:
        return
    assert decoded[2] != const


@pytest.mark.parametrize(
    "vector", load("bitcoin_addresses.json")["valid_addresses"], ids=lambda v: v["address"][:16]
)
def test_valid_addresses(vector: dict[str, Any]) -> None:
    address, network, script = vector["address"], vector["network"], vector["script_pubkey"]
    if vector["from"].startswith("BIP"):
        hrp, version, program = decode_segwit(address)
        assert segwit_script(version, program).hex() == script
        assert encode_segwit(hrp, version, program) == address.lower()
    else:
        assert base58.b58decode_check(address)[1:].hex() in script
    if vector["accepted_output"]:
        assert script_for_address(address, network)[1].hex() == script
    else:
        with pytest.raises(AddressError, match="not a supported output"):
            script_for_address(address, network)


@pytest.mark.parametrize(
    "vector", load("bitcoin_addresses.json")["invalid_addresses"], ids=lambda v: v["address"][:16]
)
@pytest.mark.parametrize("network", ["mainnet", "testnet"])
def test_invalid_addresses(vector: dict[str, Any], network: str) -> None:
    with pytest.raises(AddressError) as caught:
        script_for_address(vector["address"], network)
    assert vector["error"] in str(caught.value)


@pytest.mark.parametrize(
    ("tx_network", "address", "message"),
    [
        ("mainnet", own_address("testnet", "p2wpkh"), "address is for testnet/signet, not mainnet"),
        ("mainnet", own_address("testnet", "p2pkh"), "for testnet/signet/regtest, not mainnet"),
        ("mainnet", own_address("regtest", "p2wpkh"), "address is for regtest, not mainnet"),
        ("testnet", own_address("mainnet", "p2pkh"), "address is for mainnet, not testnet"),
        ("signet", address_of("mainnet", "p2sh", PROGRAMS["p2sh"]), "for mainnet, not signet"),
        ("regtest", address_of("testnet", "p2tr", PROGRAMS["p2tr"]), "testnet/signet, not regtest"),
        ("testnet", own_address("regtest", "p2wpkh"), "address is for regtest, not testnet"),
    ],
)
def test_address_of_another_network_is_refused(tx_network: str, address: str, message: str) -> None:
    msg = tx_message(tx_network, [spend("p2wpkh", 100_000)], [(address, 90_000)])
    assert_refused(msg, "bitcoin.outputs[0].address", message)


def test_base58_addresses_shared_by_test_networks_are_accepted_on_each() -> None:
    address = address_of("testnet", "p2sh", PROGRAMS["p2sh"])
    for network in ("testnet", "signet", "regtest"):
        assert script_for_address(address, network)[1] == script_of("p2sh", PROGRAMS["p2sh"])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (bytes([0x30]) + bytes(20), "unknown base58 version byte 0x30"),
        (bytes([0x00]) + bytes(19), "payload is 20 bytes, expected 21"),
        (bytes([0x00]) + bytes(32), "payload is 33 bytes, expected 21"),
    ],
)
def test_base58_payload_must_be_a_known_version_and_length(payload: bytes, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        script_for_address(base58.b58encode_check(payload).decode(), "mainnet")


def test_hash160_without_openssl_ripemd160(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ripemd(name: str, *args: Any) -> Any:
        raise ValueError(f"unsupported hash type {name}")

    monkeypatch.setattr(hashlib, "new", no_ripemd)
    assert hash160(b"custos") == Hash160(b"custos")


def test_address_handling_ignores_bitcoinlib_global_params() -> None:
    msg = tx_message(
        "mainnet", [spend("p2wpkh", 100_000)], [(own_address("mainnet", "p2pkh"), 90_000)]
    )
    expected = ADAPTER.prepare(edge.transaction(msg), KEY.info)
    bitcoin.SelectParams("testnet")
    try:
        assert ADAPTER.prepare(edge.transaction(msg), KEY.info) == expected
    finally:
        bitcoin.SelectParams("mainnet")


# ---- BIP143 published vector ------------------------------------------------


def test_bip143_native_p2wpkh_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    vector = load("bitcoin_bip143.json")
    key = LocalKey(bytes.fromhex(vector["private_key"]))
    pub = compressed(key.info.public_key)
    assert pub.hex() == vector["public_key"]
    assert p2wpkh_script(hash160(pub)).hex() == vector["script_pubkey"]
    assert b"\x76\xa9\x14" + hash160(pub) + b"\x88\xac" == bytes.fromhex(vector["script_code"])
    # The BIP does not publish the previous transactions, so nothing can hash to
    # its txids: this test of the digest alone stands their parse in for them.
    proven = {}
    for index, i in enumerate(vector["inputs"]):
        outputs = ((1, b""),) * i["vout"] + ((i["value"], p2wpkh_script(hash160(pub))),)
        proven[f"vector {index}".encode()] = PrevTx(bytes.fromhex(i["txid"])[::-1], outputs)
    monkeypatch.setattr(prevtx_module, "parse_prev_tx", proven.__getitem__)
    msg = tx_message(
        vector["network"],
        [
            {
                "txid": i["txid"],
                "vout": i["vout"],
                "prev_tx": f"vector {index}".encode(),
                "sequence": i["sequence"],
            }
            for index, i in enumerate(vector["inputs"])
        ],
        [(o["address"], o["value"]) for o in vector["outputs"]],
        version=vector["version"],
        lock_time=vector["lock_time"],
    )
    # The example pays an 8.89 BTC fee, which the fee-rate guard rightly refuses.
    with pytest.raises(InvalidField, match="default broadcast limit"):
        ADAPTER.prepare(edge.transaction(msg), key.info)
    monkeypatch.setattr(adapter_module, "MAX_FEE_RATE_SAT_VB", 10**12)
    prepared, signed = sign(msg, key)
    index = vector["signed_input"]
    assert prepared.digests[index].hex() == vector["sighash"]
    # Segwit inputs leave scriptSig empty, so the txid is the published unsigned tx's.
    assert signed.tx_id == sha256d(bytes.fromhex(vector["unsigned_tx"]))[::-1].hex()
    tx = CTransaction.deserialize(bytes.fromhex(signed.raw_tx))
    assert tx.wit.vtxinwit[index].scriptWitness.stack[0].hex() == vector["signature"]
    assert [o.scriptPubKey.hex() for o in tx.vout] == [
        o["script_pubkey"] for o in vector["outputs"]
    ]


# ---- signing, checked by the second implementation ----------------------------

INPUT_MIXES = {
    "p2wpkh": ["p2wpkh", "p2wpkh"],
    "p2pkh": ["p2pkh", "p2pkh"],
    "mixed": ["p2pkh", "p2wpkh", "p2pkh"],
}


@pytest.mark.parametrize("mix", INPUT_MIXES)
@pytest.mark.parametrize("network", NETWORKS)
def test_signed_transaction_verifies_with_bitcoinlib(network: str, mix: str) -> None:
    inputs = [spend(kind, 40_000 + n, n) for n, kind in enumerate(INPUT_MIXES[mix])]
    outputs = [(address_of(network, k, p), 5_000) for k, p in PROGRAMS.items()]
    outputs.append((own_address(network, "p2wpkh"), 7_000))
    msg = tx_message(network, inputs, outputs)
    prepared, signed = sign(msg)
    tx = check_with_bitcoinlib(msg, prepared, signed)
    assert [o.scriptPubKey for o in tx.vout[:5]] == [script_of(k, p) for k, p in PROGRAMS.items()]
    assert (signed.chain, signed.network) == ("bitcoin", network)
    assert signed.address == own_address(network, "p2wpkh")
    if mix == "p2pkh":
        # BIP144: without witness data the legacy serialization is the only valid one.
        assert not tx.has_witness()
        assert signed.tx_id == sha256d(bytes.fromhex(signed.raw_tx))[::-1].hex()
    else:
        assert bytes.fromhex(signed.raw_tx)[4:6] == b"\x00\x01"


def test_version_sequence_and_lock_time_are_honoured() -> None:
    inputs = [
        spend("p2wpkh", 50_000, 1, sequence=0xFFFFFFFF),
        spend("p2pkh", 50_000, 2, sequence=0),
        spend("p2wpkh", 50_000, 3),
    ]
    for version in (0, 1, 2):
        msg = tx_message(
            "testnet",
            inputs,
            [(own_address("testnet", "p2pkh"), 100_000)],
            version=version,
            lock_time=800_000,  # a height in the past
        )
        check_with_bitcoinlib(msg, *sign(msg))
        msg.lock_time = 1_700_000_000  # a Unix time in the past
        check_with_bitcoinlib(msg, *sign(msg))


def test_largest_lock_time_is_serialized() -> None:
    msg = tx_message(
        "regtest",
        [spend("p2pkh", 10_000)],
        [(own_address("regtest", "p2pkh"), 9_000)],
        lock_time=0xFFFFFFFF,
    )
    # Seen from 2106, when that lock time is no longer in the future.
    adapter = BitcoinAdapter(clock=lambda: 0xFFFFFFFF)
    prepared = adapter.prepare(edge.transaction(msg), KEY.info)
    signed = adapter.assemble(prepared, [KEY.sign(d) for d in prepared.digests])
    assert signed.raw_tx.endswith("ffffffff")
    assert CTransaction.deserialize(bytes.fromhex(signed.raw_tx)).nLockTime == 0xFFFFFFFF


def test_many_inputs_use_multi_byte_counts() -> None:
    # 260 inputs: the input count needs the 0xfd varint form.
    inputs = [spend("p2pkh" if n % 20 == 0 else "p2wpkh", 1_000, n) for n in range(260)]
    msg = tx_message("signet", inputs, [(address_of("signet", "p2tr", PROGRAMS["p2tr"]), 250_000)])
    prepared, signed = sign(msg)
    check_with_bitcoinlib(msg, prepared, signed)


def test_same_txid_with_another_vout_is_a_different_outpoint() -> None:
    # One previous transaction paying the key twice; each input carries it.
    raw = prev_tx([(10_000, own_script("p2wpkh")), (20_000, own_script("p2pkh"))], 7)
    txid, _, _ = bitcoin_prevout(raw, 0)
    inputs = [{"txid": txid, "vout": vout, "prev_tx": raw} for vout in (1, 0)]
    msg = tx_message("mainnet", inputs, [(own_address("mainnet", "p2pkh"), 29_000)])
    prepared, signed = sign(msg)
    assert prepared.intent.fee == 1_000
    check_with_bitcoinlib(msg, prepared, signed)


# ---- intent: change, fee, vsize --------------------------------------------


def test_change_is_recognised_by_script_on_the_transaction_network() -> None:
    own_p2wpkh = own_address("mainnet", "p2wpkh")
    nested = address_of(
        "mainnet", "p2sh", Hash160(b"\x00\x14" + Hash160(compressed(KEY.info.public_key)))
    )
    outputs = [
        (own_p2wpkh.upper(), 10_000),
        (own_address("mainnet", "p2pkh"), 10_000),
        (own_address("mainnet", "p2wpkh", OTHER), 10_000),
        (nested, 10_000),  # P2SH-P2WPKH of the same key: not an address Custos reports for it
    ]
    prepared = ADAPTER.prepare(
        edge.transaction(tx_message("mainnet", [spend("p2wpkh", 50_000)], outputs)), KEY.info
    )
    transfers = prepared.intent.transfers
    assert [t.is_change for t in transfers] == [True, True, False, False]
    assert transfers[0].to == own_p2wpkh  # bech32 canonicalised to lowercase
    assert [t.to for t in transfers[1:]] == [a for a, _ in outputs[1:]]
    assert all(t.asset == "native" and t.amount == 10_000 for t in transfers)


def test_fee_and_vsize() -> None:
    inputs = [spend("p2wpkh", 100_000, 1), spend("p2pkh", 50_000, 2)]
    outputs = [
        (address_of("regtest", "p2wsh", PROGRAMS["p2wsh"]), 90_000),
        (own_address("regtest", "p2wpkh"), 30_000),
    ]
    msg = tx_message("regtest", inputs, outputs)
    prepared, signed = sign(msg)
    intent = prepared.intent
    assert (intent.chain, intent.network, intent.key_id) == ("bitcoin", "regtest", "btc-key")
    assert intent.from_address == own_address("regtest", "p2wpkh")
    assert intent.fee == signed.fee == 30_000
    assert intent.contract_call is None
    details = dict(intent.fee_details)
    assert set(details) == {"vsize", "fee_rate_sat_vb_milli"}
    tx = check_with_bitcoinlib(msg, prepared, signed)
    weight = 3 * len(tx.serialize(params={"include_witness": False})) + len(tx.serialize())
    actual_vsize = (weight + 3) // 4
    # Estimated with the longest signature: an upper bound, at most 1 vbyte per input over.
    assert actual_vsize <= details["vsize"] <= actual_vsize + len(inputs)
    assert details["fee_rate_sat_vb_milli"] == 30_000 * 1000 // details["vsize"]


def test_zero_fee_is_reported_not_refused() -> None:
    msg = tx_message(
        "testnet", [spend("p2wpkh", 10_000)], [(own_address("testnet", "p2pkh"), 10_000)]
    )
    prepared = ADAPTER.prepare(edge.transaction(msg), KEY.info)
    assert prepared.intent.fee == 0
    assert dict(prepared.intent.fee_details)["fee_rate_sat_vb_milli"] == 0


def test_fee_rate_guard_boundary() -> None:
    msg = tx_message(
        "mainnet", [spend("p2wpkh", 10_000_000)], [(own_address("mainnet", "p2pkh"), 9_990_000)]
    )
    vsize = dict(ADAPTER.prepare(edge.transaction(msg), KEY.info).intent.fee_details)["vsize"]
    msg.outputs[0].value = 10_000_000 - adapter_module.MAX_FEE_RATE_SAT_VB * vsize
    assert (
        dict(ADAPTER.prepare(edge.transaction(msg), KEY.info).intent.fee_details)["vsize"] == vsize
    )
    msg.outputs[0].value -= 1
    assert_refused(msg, "bitcoin.outputs", "above Bitcoin Core's default broadcast limit")


# ---- refused requests --------------------------------------------------------


OTHER_P2WPKH = own_address("mainnet", "p2wpkh", OTHER)
BAD_CHECKSUM = OTHER_P2WPKH[:-1] + ("q" if OTHER_P2WPKH[-1] != "q" else "p")

# (path in the request, bad value, part of the message); the field named in the
# error is the path itself, as "bitcoin.inputs[0].txid".
BAD_VALUES: list[tuple[str, Any, str]] = [
    ("network", "", "must be one of"),
    ("network", "Mainnet", "must be one of"),
    ("network", "testnet3", "must be one of"),
    ("version", 3, "must be 1 or 2"),
    ("inputs.0.txid", "ab" * 31, "64 hex"),
    ("inputs.1.txid", "ab" * 33, "64 hex"),
    ("inputs.0.txid", "0x" + "ab" * 31, "64 hex"),
    ("inputs.0.txid", "g" * 64, "64 hex"),
    ("inputs.0.txid", " " + "a" * 63, "64 hex"),
    ("inputs.0.txid", "a" * 64 + "\n", "64 hex"),
    ("inputs.0.txid", "0" * 64, "all-zero txid"),
    ("inputs.0.value", 59_999, "declared 59999 sat, but the previous output holds 60000 sat"),
    ("inputs.1.value", -5, "declared -5 sat, but the previous output holds 40000 sat"),
    ("inputs.1.value", MAX_MONEY + 1, "but the previous output holds 40000 sat"),
    ("inputs.0.script_type", "p2pkh", "declared p2pkh, but the previous output is p2wpkh"),
    ("inputs.1.script_type", "p2wpkh", "declared p2wpkh, but the previous output is p2pkh"),
    ("inputs.1.script_type", "P2PKH", "must be p2wpkh or p2pkh"),
    ("inputs.0.script_type", "p2tr", "must be p2wpkh or p2pkh"),
    ("inputs.0.script_type", "p2sh-p2wpkh", "must be p2wpkh or p2pkh"),
    ("inputs.0.prev_tx", b"", "required: the previous transaction"),
    ("inputs.0.prev_tx", b"\x02\x00\x00\x00", "not a serialized transaction: ends early"),
    ("inputs.1.prev_tx", prev_tx([(40_000, script_of("p2pkh", bytes(20)))], 2), "hashes to txid"),
    ("inputs.1.vout", 5, "the previous transaction has 3 outputs"),
    ("outputs.0.value", 0, "must be positive"),
    ("outputs.1.value", -1, "must be positive"),
    ("outputs.0.value", MAX_MONEY + 1, "exceeds 21,000,000 BTC"),
    ("outputs.0.address", "", "must be 1 to 100 characters"),
    ("outputs.0.address", "1" * 101, "must be 1 to 100 characters"),
    ("outputs.1.address", BAD_CHECKSUM, "bad bech32 checksum"),
    ("outputs.1.address", own_address("testnet", "p2wpkh"), "is for testnet/signet, not mainnet"),
    ("outputs.1.address", own_address("regtest", "p2pkh"), "testnet/signet/regtest, not mainnet"),
    ("outputs.0.address", "tc" + OTHER_P2WPKH[2:], "nor valid base58check"),
    ("outputs.0.address", bech32_address("bc", 1, PROGRAMS["p2tr"], 1), "must use bech32m"),
    ("outputs.0.address", bech32_address("bc", 0, bytes(20), BECH32M_CONST), "must use bech32,"),
    ("outputs.0.address", encode_segwit("bc", 2, bytes(32)), "not a supported output"),
    ("outputs.0.address", " " + OTHER_P2WPKH, "invalid base58 character ' '"),
    ("outputs.0.address", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", "bad base58check checksum"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_VALUES)
def test_bad_value_names_its_field(path: str, value: Any, message: str) -> None:
    msg = base_message()
    ADAPTER.prepare(edge.transaction(msg), KEY.info)  # the request is fine before the change
    *parents, name = path.split(".")
    target: Any = msg
    for part in parents:
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    setattr(target, name, value)
    assert_refused(msg, "bitcoin." + re.sub(r"\.(\d+)", r"[\1]", path), message)


def add_inputs(msg: signer_pb2.BitcoinTransaction, count: int, script_type: str) -> None:
    for n in range(100, 100 + count):
        msg.inputs.add(**spend(script_type, 10_000, n))


def test_input_and_output_counts() -> None:
    msg = base_message()
    msg.ClearField("inputs")
    assert_refused(msg, "bitcoin.inputs", "at least one input")
    msg = base_message()
    msg.ClearField("outputs")
    assert_refused(msg, "bitcoin.outputs", "at least one output")
    msg = base_message()
    add_inputs(msg, 999, "p2wpkh")
    assert_refused(msg, "bitcoin.inputs", "1001 inputs exceed limits.bitcoin_max_inputs = 1000")
    msg = base_message()
    for _ in range(999):
        msg.outputs.add(address=own_address("mainnet", "p2wpkh"), value=1)
    assert_refused(msg, "bitcoin.outputs", "1001 outputs exceed limits.bitcoin_max_outputs = 1000")


def test_transaction_over_the_standard_weight_is_refused() -> None:
    msg = base_message()
    add_inputs(msg, 700, "p2pkh")  # ~148 vbytes each
    assert_refused(msg, "bitcoin", "WU exceeds the standard limit 400000")


@pytest.mark.parametrize("spelling", [str.lower, str.upper])
def test_duplicate_outpoint_is_refused(spelling: Callable[[str], str]) -> None:
    msg = base_message()
    first = msg.inputs[0]
    msg.inputs.add(txid=spelling(first.txid), vout=first.vout, value=1, script_type="p2pkh")
    assert_refused(msg, "bitcoin.inputs[2]", "spends the same outpoint as inputs[0]")


def test_totals_must_balance_and_stay_under_max_money() -> None:
    msg = base_message()
    msg.outputs[1].value = 50_001
    assert_refused(msg, "bitcoin.outputs", "outputs exceed inputs by 1 sat")
    msg = tx_message(
        "mainnet",
        [spend("p2wpkh", MAX_MONEY, 1, vout=0), spend("p2pkh", MAX_MONEY, 2, vout=0)],
        [(own_address("mainnet", "p2pkh", OTHER), 50_000)],
    )
    assert_refused(msg, "bitcoin.inputs", "total value exceeds 21,000,000 BTC")
    msg = base_message()
    for output in msg.outputs:
        output.value = MAX_MONEY
    assert_refused(msg, "bitcoin.outputs", "total value exceeds 21,000,000 BTC")


def test_vout_out_of_uint32_range_cannot_be_expressed() -> None:
    # The proto field is uint32: protobuf itself refuses negative or 33-bit vouts.
    for vout in (-1, 2**32):
        with pytest.raises(ValueError, match="out of range"):
            signer_pb2.BitcoinInput(vout=vout)


# ---- assemble --------------------------------------------------------------


def test_assemble_needs_one_signature_per_input() -> None:
    msg = base_message()
    prepared = ADAPTER.prepare(edge.transaction(msg), KEY.info)
    with pytest.raises(ValueError, match="2 inputs"):
        ADAPTER.assemble(prepared, [KEY.sign(prepared.digests[0])])


def test_assemble_refuses_a_foreign_prepared_tx() -> None:
    prepared = ADAPTER.prepare(edge.transaction(base_message()), KEY.info)
    foreign = PreparedTx(prepared.intent, prepared.digests, unsigned={"not": "bitcoin"})
    with pytest.raises(TypeError):
        ADAPTER.assemble(foreign, [KEY.sign(d) for d in prepared.digests])


# ---- previous transactions: the proof of what each input spends ----------------


@pytest.mark.parametrize("segwit", [False, True])
def test_prev_tx_parse_matches_python_bitcointx(segwit: bool) -> None:
    outputs = [(n * 1_000 + 1, script_of(k, p)) for n, (k, p) in enumerate(PROGRAMS.items())]
    outputs += [(5, b""), (6, b"\x6a" + bytes(80))]  # empty and OP_RETURN scripts
    raw = prev_tx(outputs, 42, segwit)
    assert (raw[4:6] == b"\x00\x01") is segwit
    parsed = parse_prev_tx(raw)
    for vout, expected in enumerate(outputs):
        txid, value, script = bitcoin_prevout(raw, vout)
        assert parsed.txid_hex == txid
        assert parsed.outputs[vout] == (value, script) == expected


def test_segwit_and_stripped_serializations_prove_the_same_input() -> None:
    with_witness = prev_tx([(50_000, own_script("p2wpkh"))], 9, segwit=True)
    stripped = CTransaction.deserialize(with_witness).serialize(params={"include_witness": False})
    assert stripped != with_witness
    txid, _, _ = bitcoin_prevout(with_witness, 0)
    digests = set()
    for raw in (with_witness, stripped):
        msg = tx_message(
            "mainnet",
            [{"txid": txid, "vout": 0, "prev_tx": raw}],
            [(own_address("mainnet", "p2pkh", OTHER), 49_000)],
        )
        prepared, signed = sign(msg)
        check_with_bitcoinlib(msg, prepared, signed)
        digests.add(prepared.digests)
    assert len(digests) == 1


def _compact(n: int, width: int) -> bytes:
    return {1: bytes([n]), 3: b"\xfd" + n.to_bytes(2, "little")}[width]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw + b"\x00", "1 bytes after the end"),
        (lambda raw: raw[:-1], "ends early"),
        (lambda raw: raw[:4] + b"\x00\x02" + raw[6:], "unknown segwit flag 0x02"),
        # One input, count written in the 3-byte form: refused as Bitcoin Core does.
        (lambda raw: raw[:4] + _compact(1, 3) + raw[5:], "non-canonical CompactSize"),
        (lambda raw: raw[:4] + b"\x00", "has no inputs"),
        (lambda raw: raw[:4] + b"\x00\x01" + raw[4:-4] + b"\x00" + raw[-4:], "without any witness"),
    ],
)
def test_malformed_prev_tx_is_refused(mutate: Callable[[bytes], bytes], message: str) -> None:
    raw = prev_tx([(50_000, own_script("p2wpkh"))], 11)
    with pytest.raises(PrevTxError, match=message):
        parse_prev_tx(mutate(raw))
    msg = tx_message(
        "mainnet",
        [{"txid": bitcoin_prevout(raw, 0)[0], "vout": 0, "prev_tx": mutate(raw)}],
        [(own_address("mainnet", "p2pkh", OTHER), 49_000)],
    )
    assert_refused(msg, "bitcoin.inputs[0].prev_tx", message)


def test_output_not_locked_to_the_key_is_refused() -> None:
    for script in (own_script("p2wpkh", OTHER), script_of("p2tr", PROGRAMS["p2tr"])):
        raw = prev_tx([(50_000, script)], 12)
        msg = tx_message(
            "mainnet",
            [{"txid": bitcoin_prevout(raw, 0)[0], "vout": 0, "prev_tx": raw}],
            [(own_address("mainnet", "p2pkh", OTHER), 49_000)],
        )
        assert_refused(msg, "bitcoin.inputs[0].prev_tx", "output 0 is not locked to this key")


def test_oversized_prev_tx_is_refused_before_parsing() -> None:
    raw = prev_tx([(50_000, own_script("p2wpkh")), (1, b"\x6a" + bytes(5_000))], 13)
    adapter = BitcoinAdapter(ChainLimits(bitcoin_max_prev_tx_bytes=4_000))
    msg = tx_message(
        "mainnet",
        [{"txid": bitcoin_prevout(raw, 0)[0], "vout": 0, "prev_tx": raw}],
        [(own_address("mainnet", "p2pkh", OTHER), 49_000)],
    )
    with pytest.raises(InvalidField, match=r"exceed limits.bitcoin_max_prev_tx_bytes = 4000"):
        adapter.prepare(edge.transaction(msg), KEY.info)


def test_understated_p2pkh_input_value_is_refused_and_fee_is_the_real_one() -> None:
    # Issue 9: a P2PKH sighash does not commit to the input's value, so the same
    # digest was signed for declared values of 1,010,000 and 1,020,000 sat.
    outputs = [(own_address("mainnet", "p2wpkh", OTHER), 1_000_000)]
    msg = tx_message("mainnet", [spend("p2pkh", 1_020_000, 3, declare=False)], outputs)
    prepared = ADAPTER.prepare(edge.transaction(msg), KEY.info)
    assert prepared.intent.fee == 20_000  # from the proven value, not a declared one
    msg.inputs[0].value = 1_010_000
    assert_refused(msg, "bitcoin.inputs[0].value", "the previous output holds 1020000 sat")
    # A made-up previous transaction holding less does not hash to the txid.
    forged = prev_tx([(1_010_000, own_script("p2pkh"))], 3)
    msg.inputs[0].value = 0
    msg.inputs[0].prev_tx = forged
    assert_refused(msg, "bitcoin.inputs[0].prev_tx", "not the input's txid")


def test_segwit_two_request_fee_attack_is_refused() -> None:
    # Issue 9: BIP143 commits each signature to its own input's value only. Two
    # requests with the same outpoints and outputs, each understating a different
    # input, used to look like small fees while their signatures combined into a
    # transaction paying the difference to miners. Each request now proves both
    # values, so each sees the whole fee; a lie about either is refused.
    inputs = [
        spend("p2wpkh", 1_000_000, 21, declare=False),
        spend("p2wpkh", 1_000_000, 22, declare=False),
    ]
    outputs = [(own_address("mainnet", "p2wpkh", OTHER), 1_500_000)]
    msg = tx_message("mainnet", inputs, outputs)
    assert ADAPTER.prepare(edge.transaction(msg), KEY.info).intent.fee == 500_000
    for understated in (0, 1):
        attack = tx_message("mainnet", inputs, outputs)
        lie = attack.inputs[understated]
        decoys = [(777, script_of("p2wpkh", PROGRAMS["p2wpkh"]))] * lie.vout
        lie.prev_tx = prev_tx([*decoys, (510_000, own_script("p2wpkh"))], 21 + understated)
        assert_refused(attack, f"bitcoin.inputs[{understated}].prev_tx", "not the input's txid")
        attack = tx_message("mainnet", inputs, outputs)
        attack.inputs[understated].value = 510_000
        assert_refused(attack, f"bitcoin.inputs[{understated}].value", "holds 1000000 sat")


# ---- lock time and sequence: facts on the intent, bounded ahead ---------------


NOW = 1_800_000_000.0  # 2027-01-15
AT_NOW = BitcoinAdapter(clock=lambda: NOW)


def test_lock_time_and_sequences_are_on_the_intent() -> None:
    inputs = [spend("p2wpkh", 50_000, 1, sequence=5), spend("p2pkh", 50_000, 2)]
    msg = tx_message("mainnet", inputs, [(own_address("mainnet", "p2pkh", OTHER), 99_000)])
    msg.lock_time = int(NOW)
    intent = AT_NOW.prepare(edge.transaction(msg), KEY.info).intent
    assert intent.lock_time == int(NOW)
    assert intent.sequences == (5, 0xFFFFFFFD)
    assert intent.expiration_ms == 0


def test_lock_time_in_the_future_beyond_the_bound_is_refused() -> None:
    limits = ChainLimits()
    msg = tx_message(
        "mainnet", [spend("p2wpkh", 50_000, 1)], [(own_address("mainnet", "p2pkh", OTHER), 49_000)]
    )
    msg.lock_time = int(NOW) + limits.max_lock_ahead_seconds
    AT_NOW.prepare(edge.transaction(msg), KEY.info)
    msg.lock_time += 1
    with pytest.raises(InvalidField, match=r"limits\.max_lock_ahead_seconds") as caught:
        AT_NOW.prepare(edge.transaction(msg), KEY.info)
    assert caught.value.field == "bitcoin.lock_time"
    # Heights: the estimate of the tip is an upper bound (9-minute blocks since block 840,000).
    highest = 840_000 + (int(NOW) - 1_713_571_767) // 540 + limits.max_lock_ahead_blocks
    msg.lock_time = highest
    AT_NOW.prepare(edge.transaction(msg), KEY.info)
    msg.lock_time = highest + 1
    with pytest.raises(InvalidField, match=r"limits\.max_lock_ahead_blocks") as caught:
        AT_NOW.prepare(edge.transaction(msg), KEY.info)
    assert caught.value.field == "bitcoin.lock_time"


@pytest.mark.parametrize(
    ("sequence", "version", "refused"),
    [
        (144, 2, False),
        (145, 2, True),  # relative lock of 145 blocks
        (145, 1, False),  # BIP68 applies from version 2
        (145 | 1 << 31, 2, False),  # disable flag
        ((1 << 22) | 168, 2, False),  # 168 * 512 s < 1 day
        ((1 << 22) | 169, 2, True),
    ],
)
def test_bip68_relative_locks_are_bounded(sequence: int, version: int, refused: bool) -> None:
    msg = tx_message(
        "mainnet",
        [spend("p2wpkh", 50_000, 1, sequence=sequence)],
        [(own_address("mainnet", "p2pkh", OTHER), 49_000)],
        version=version,
    )
    if refused:
        assert_refused(msg, "bitcoin.inputs[0].sequence", "relative lock of")
    else:
        ADAPTER.prepare(edge.transaction(msg), KEY.info)


# ---- the work of signature hashes ---------------------------------------------


def test_sighash_bytes_counts_what_is_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = [spend("p2pkh" if n % 3 else "p2wpkh", 10_000, n) for n in range(40)]
    msg = tx_message("mainnet", inputs, [(own_address("mainnet", "p2pkh", OTHER), 390_000)])
    prepared = ADAPTER.prepare(edge.transaction(msg), KEY.info)
    hashed: list[int] = []

    def counting(data: bytes) -> bytes:
        hashed.append(len(data))
        return sha256d(data)

    monkeypatch.setattr(adapter_module, "sha256d", counting)
    assert adapter_module._digests(prepared.unsigned) == prepared.digests
    assert sum(hashed) == adapter_module.sighash_bytes(prepared.unsigned)


def test_quadratic_legacy_sighash_is_bounded_per_item_and_per_batch() -> None:
    # Issue 10: 650 P2PKH inputs took 0.5 s to prepare; every legacy input
    # hashes the whole transaction, so the work grows with the square.
    inputs = [spend("p2pkh", 10_000, n) for n in range(300)]
    msg = tx_message("mainnet", inputs, [(own_address("mainnet", "p2pkh", OTHER), 2_990_000)])
    prepared = ADAPTER.prepare(edge.transaction(msg), KEY.info)
    work = adapter_module.sighash_bytes(prepared.unsigned)
    assert work > 3_000_000  # 300 inputs x ~12 kB
    small = BitcoinAdapter(ChainLimits(bitcoin_max_sighash_bytes=work - 1))
    with pytest.raises(InvalidField, match=f"exceed limits.bitcoin_max_sighash_bytes = {work - 1}"):
        small.prepare(edge.transaction(msg), KEY.info)
    charge = ITEM_UNITS + PARSE_WEIGHT * msg.ByteSize() + BITCOIN_INPUT_UNITS * 300
    budget = WorkBudget(charge + BITCOIN_OUTPUT_UNITS + work)
    ADAPTER.prepare(edge.transaction(msg), KEY.info, budget)
    with pytest.raises(InvalidField, match=r"limits\.max_batch_work_units") as caught:
        ADAPTER.prepare(edge.transaction(msg), KEY.info, budget)
    assert caught.value.field == "bitcoin"  # refused before parsing the second item


# ---- differential: the previous-transaction parser against python-bitcointx ---------


@st.composite
def random_tx(draw: st.DrawFn) -> bytes:
    """A serialized transaction of random shape, built by python-bitcointx."""
    inputs = [
        CMutableTxIn(
            COutPoint(draw(st.binary(min_size=32, max_size=32)), draw(st.integers(0, 2**32 - 1))),
            TxCScript(draw(st.binary(max_size=300))),
            draw(st.integers(0, 2**32 - 1)),
        )
        for _ in range(draw(st.integers(1, 5)))
    ]
    outputs = [
        CMutableTxOut(draw(st.integers(0, 10**15)), TxCScript(draw(st.binary(max_size=300))))
        for _ in range(draw(st.integers(1, 300 if draw(st.booleans()) else 3)))
    ]
    witness = None
    if draw(st.booleans()):
        stacks = [
            CMutableTxInWitness(CScriptWitness(draw(st.lists(st.binary(max_size=80), max_size=3))))
            for _ in inputs
        ]
        assume(any(s.scriptWitness.stack for s in stacks))
        witness = CMutableTxWitness(stacks)
    tx = CMutableTransaction(
        inputs,
        outputs,
        nLockTime=draw(st.integers(0, 2**32 - 1)),
        nVersion=draw(st.integers(-(2**31), 2**31 - 1)),
        witness=witness,
    )
    raw: bytes = tx.serialize()
    return raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=random_tx(), edit=st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 255)))
def test_prev_tx_parser_agrees_with_python_bitcointx(
    raw: bytes, edit: tuple[int, int] | None
) -> None:
    if edit is not None:  # one byte changed: parsed alike, or refused by us
        at = edit[0] % len(raw)
        raw = raw[:at] + bytes([edit[1]]) + raw[at + 1 :]
    try:
        parsed = parse_prev_tx(raw)
    except PrevTxError:
        return
    theirs = TxCTransaction.deserialize(raw)  # what we accept, python-bitcointx reads the same
    assert parsed.txid_hex == b2lx_tx(theirs.GetTxid())
    assert parsed.outputs == tuple((o.nValue, bytes(o.scriptPubKey)) for o in theirs.vout)


def test_a_full_batch_of_ordinary_items_fits_the_default_budget() -> None:
    # The budget must stop abuse, not the largest ordinary batch: 1000 items
    # (server.max_batch_items) of two inputs and two outputs.
    from custos.signer.edge.config import ServerConfig

    msg = base_message()
    budget = WorkBudget(ChainLimits().max_batch_work_units)
    for _ in range(ServerConfig().max_batch_items):
        ADAPTER.prepare(edge.transaction(msg), KEY.info, budget)
    assert budget.used < budget.limit * 3 // 5  # about half of it
