"""TronAdapter: published vectors, a second implementation (tronpy), bad input."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Any

import base58
import pytest
from coincurve import PublicKey
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tronpy.abi import tron_abi
from tronpy.hdwallet import key_from_seed
from tronpy.keys import (
    PrivateKey,
    Signature,
    to_base58check_address,
    to_hex_address,
    to_raw_address,
)
from tronpy.proto import calculate_txid_from_raw_data
from tronpy.proto import tron_pb2 as tronpy_pb2

from custos.common.secp256k1 import N, RecoverableSignature
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.proto.tron import tron_pb2
from custos.signer.chains.base import (
    ContractCall,
    InvalidField,
    KeyInfo,
    PreparedTx,
    SignedTx,
    Transfer,
)
from custos.signer.chains.limits import DEFAULT_LIMITS, ChainLimits
from custos.signer.chains.tron import (
    MAX_FEE_LIMIT,
    MAX_LIFETIME_MS,
    NETWORKS,
    TronAdapter,
    encode_raw,
    key_address,
)
from custos.signer.edge import requests as edge
from tests.support import LocalKey

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "tron_transactions.json").read_text()
)["vectors"]
NOW_S = 1_760_000_000.0  # the adapter's clock: NOW (below) in seconds
ADAPTER = TronAdapter(clock=lambda: NOW_S)
SECRET = bytes.fromhex("8e812436a0e3323166e1f0e8ba79e19e217b2c4a53c970d4cca0cfb1078979df")
KEY = LocalKey(SECRET)
KEY_ADDRESS = PrivateKey(SECRET).public_key.to_base58check_address()
RECIPIENT = PrivateKey(bytes([0x22] * 32)).public_key.to_base58check_address()
USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"  # Tether's TRC-20 contract on mainnet
NOW = 1_760_000_000_000  # ms
TYPE_URL = "type.googleapis.com/protocol."
TRANSFER_SELECTOR = keccak(b"transfer(address,uint256)")[:4]


def make_tx(**fields: Any) -> pb.TronTransaction:
    """A Tron transaction with a valid reference block and lifetime, `fields` overriding."""
    base: dict[str, Any] = {
        "network": "mainnet",
        "ref_block_bytes": "5e4b",
        "ref_block_hash": "47c9dc89341b300d",
        "timestamp": NOW,
        "expiration": NOW + 60_000,
    }
    base.update(fields)
    return pb.TronTransaction(**base)


def trx(to: str = RECIPIENT, amount: int = 1_000_000, **fields: Any) -> pb.TronTransaction:
    return make_tx(trx_transfer=pb.TronTrxTransfer(to=to, amount=amount), **fields)


def trc20(
    contract: str = USDT, to: str = RECIPIENT, amount: str = "2500000", **fields: Any
) -> pb.TronTransaction:
    fields.setdefault("fee_limit", 30_000_000)
    transfer = pb.TronTrc20Transfer(contract=contract, to=to, amount=amount)
    return make_tx(trc20_transfer=transfer, **fields)


def sign(tx: pb.TronTransaction, key: LocalKey = KEY) -> tuple[PreparedTx, SignedTx]:
    prepared = ADAPTER.prepare(edge.transaction(tx), key.info)
    signatures = [key.sign(digest) for digest in prepared.digests]
    return prepared, ADAPTER.assemble(prepared, signatures)


def decoded_raw_data(raw: bytes, pb2: Any) -> dict[str, Any]:
    """The raw_data JSON a node prints for `raw`, decoded with the classes of `pb2`."""
    message = pb2.Transaction.raw.FromString(raw)
    # Re-encoding gives the same bytes: no unknown fields, nothing out of order.
    assert message.SerializeToString() == raw
    [contract] = message.contract
    assert [f.name for f, _ in contract.ListFields()] == ["type", "parameter"]
    kind = pb2.Transaction.Contract.ContractType.Name(contract.type)
    inner = getattr(pb2, kind).FromString(contract.parameter.value)
    assert inner.SerializeToString() == contract.parameter.value

    def as_json(message: Any) -> dict[str, Any]:
        # Like a node with visible=false: bytes as hex, default values left out.
        return {f.name: v.hex() if isinstance(v, bytes) else v for f, v in message.ListFields()}

    parameter = {"value": as_json(inner), "type_url": contract.parameter.type_url}
    out = {k: v for k, v in as_json(message).items() if k != "contract"}
    return {"contract": [{"parameter": parameter, "type": kind}], **out}


def check_with_tronpy(signed: SignedTx) -> dict[str, Any]:
    """Check a signed transaction with tronpy and both sets of generated classes."""
    obj: dict[str, Any] = json.loads(signed.raw_tx)
    assert list(obj) == ["visible", "txID", "raw_data", "raw_data_hex", "signature"]
    assert obj["visible"] is False
    raw = bytes.fromhex(obj["raw_data_hex"])
    assert hashlib.sha256(raw).hexdigest() == obj["txID"] == signed.tx_id
    # tronpy's own encoder, from the JSON that a node rebuilds the transaction from.
    assert calculate_txid_from_raw_data(obj["raw_data"]) == obj["txID"]
    [signature] = obj["signature"]
    sig_bytes = bytes.fromhex(signature)
    assert len(sig_bytes) == 65
    assert sig_bytes[64] in (0, 1)
    assert int.from_bytes(sig_bytes[32:64], "big") <= N // 2
    public_key = Signature(sig_bytes).recover_public_key_from_msg_hash(bytes.fromhex(obj["txID"]))
    assert public_key.to_base58check_address() == signed.address
    for pb2 in (tron_pb2, tronpy_pb2):
        assert decoded_raw_data(raw, pb2) == obj["raw_data"]
    [contract] = obj["raw_data"]["contract"]
    assert contract["parameter"]["type_url"] == TYPE_URL + contract["type"]
    owner = contract["parameter"]["value"]["owner_address"]
    assert to_base58check_address(owner) == signed.address
    if contract["type"] == "TriggerSmartContract":
        data = bytes.fromhex(contract["parameter"]["value"]["data"])
        to, amount = tron_abi.decode(["address", "uint256"], data[4:])
        # tronpy's decoder ignores padding; eth-abi's encoder fixes what it must be.
        words = abi_encode(["address", "uint256"], [to_raw_address(to)[1:], amount])
        assert data == TRANSFER_SELECTOR + words
    return obj


# ---- addresses -------------------------------------------------------------


def test_addresses_agree_with_tronpy() -> None:
    addresses = ADAPTER.addresses(KEY.info.public_key)
    assert [(a.chain, a.network, a.kind) for a in addresses] == [
        ("tron", network, "account") for network in NETWORKS
    ]
    assert {a.address for a in addresses} == {KEY_ADDRESS}
    assert KEY_ADDRESS.startswith("T")
    assert len(KEY_ADDRESS) == 34
    compressed = PublicKey(KEY.info.public_key).format(compressed=True)
    assert key_address(compressed) == KEY_ADDRESS


def test_kind_names_the_sign_item_field() -> None:
    fields = pb.SignItem.DESCRIPTOR.oneofs_by_name["tx"].fields
    assert ADAPTER.kind in [f.name for f in fields]


# ---- signed transactions, checked by tronpy ----------------------------------


@pytest.mark.parametrize("network", NETWORKS)
def test_trx_transfer(network: str) -> None:
    prepared, signed = sign(trx(network=network, amount=1_234_567))
    obj = check_with_tronpy(signed)

    assert prepared.digests == (bytes.fromhex(signed.tx_id),)
    assert prepared.intent.chain == "tron"
    assert prepared.intent.network == network
    assert prepared.intent.key_id == KEY.info.key_id
    assert prepared.intent.from_address == KEY_ADDRESS
    assert prepared.intent.transfers == (Transfer(RECIPIENT, "native", 1_234_567),)
    assert prepared.intent.contract_call is None
    assert prepared.intent.fee == 0
    assert prepared.intent.fee_details == (("fee_limit", 0),)
    assert (signed.chain, signed.network, signed.address) == ("tron", network, KEY_ADDRESS)
    assert (signed.fee, signed.max_fee) == (0, 0)

    raw_data = obj["raw_data"]
    assert "fee_limit" not in raw_data
    assert raw_data["contract"][0]["type"] == "TransferContract"
    assert raw_data["contract"][0]["parameter"]["value"] == {
        "amount": 1_234_567,
        "owner_address": to_hex_address(KEY_ADDRESS),
        "to_address": to_hex_address(RECIPIENT),
    }
    assert raw_data["ref_block_bytes"] == "5e4b"
    assert raw_data["ref_block_hash"] == "47c9dc89341b300d"
    assert (raw_data["timestamp"], raw_data["expiration"]) == (NOW, NOW + 60_000)


def test_trc20_transfer() -> None:
    prepared, signed = sign(trc20(amount="2500000", fee_limit=40_000_000))
    obj = check_with_tronpy(signed)

    intent = prepared.intent
    assert intent.transfers == (Transfer(RECIPIENT, USDT, 2_500_000),)
    assert intent.contract_call == ContractCall(
        USDT, "transfer", (("to", RECIPIENT), ("amount", "2500000"))
    )
    assert intent.fee == 40_000_000
    assert intent.fee_details == (("fee_limit", 40_000_000),)
    assert signed.max_fee == 40_000_000

    raw_data = obj["raw_data"]
    assert raw_data["fee_limit"] == 40_000_000
    [contract] = raw_data["contract"]
    assert contract["type"] == "TriggerSmartContract"
    value = contract["parameter"]["value"]
    assert set(value) == {"data", "owner_address", "contract_address"}  # call_value 0 left out
    assert value["owner_address"] == to_hex_address(KEY_ADDRESS)
    assert value["contract_address"] == to_hex_address(USDT)
    data = bytes.fromhex(value["data"])
    assert data[:4] == TRANSFER_SELECTOR
    assert len(data) == 68
    assert tron_abi.decode(["address", "uint256"], data[4:]) == (RECIPIENT, 2_500_000)


@pytest.mark.parametrize("amount", [1, 2**64, 2**256 - 1])
def test_trc20_amount_range(amount: int) -> None:
    prepared, signed = sign(trc20(amount=str(amount)))
    obj = check_with_tronpy(signed)
    data = bytes.fromhex(obj["raw_data"]["contract"][0]["parameter"]["value"]["data"])
    assert tron_abi.decode(["address", "uint256"], data[4:]) == (RECIPIENT, amount)
    assert prepared.intent.transfers[0].amount == amount


def test_limits_are_inclusive() -> None:
    tx = trc20(fee_limit=MAX_FEE_LIMIT, expiration=NOW + MAX_LIFETIME_MS)
    _, signed = sign(tx)
    assert check_with_tronpy(signed)["raw_data"]["fee_limit"] == MAX_FEE_LIMIT


def test_hex_case_is_normalized() -> None:
    _, upper = sign(trx(ref_block_bytes="5E4B", ref_block_hash="47C9DC89341B300D"))
    _, lower = sign(trx())
    assert check_with_tronpy(upper) == check_with_tronpy(lower)


def test_trc20_transfer_to_self_is_allowed() -> None:
    _, signed = sign(trc20(to=KEY_ADDRESS))
    check_with_tronpy(signed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    secret=st.integers(1, N - 1),
    recipient=st.binary(min_size=20, max_size=20),
    trx_amount=st.integers(1, DEFAULT_LIMITS.tron_max_amount_sun),
    token_amount=st.integers(1, 2**256 - 1),
    fee_limit=st.integers(1, MAX_FEE_LIMIT),
    timestamp=st.integers(10**12, NOW),
    lifetime=st.integers(1, MAX_LIFETIME_MS),
    ref=st.binary(min_size=10, max_size=10),
)
def test_any_valid_transaction_checks_out(
    *,
    secret: int,
    recipient: bytes,
    trx_amount: int,
    token_amount: int,
    fee_limit: int,
    timestamp: int,
    lifetime: int,
    ref: bytes,
) -> None:
    key = LocalKey(secret.to_bytes(32, "big"))
    to = to_base58check_address(b"\x41" + recipient)
    block = {
        "ref_block_bytes": ref[:2].hex(),
        "ref_block_hash": ref[2:].hex(),
        "timestamp": timestamp,
        "expiration": timestamp + lifetime,
    }
    if to != key_address(key.info.public_key):
        check_with_tronpy(sign(trx(to=to, amount=trx_amount, **block), key)[1])
    tx = trc20(to=to, amount=str(token_amount), fee_limit=fee_limit, **block)
    check_with_tronpy(sign(tx, key)[1])


# ---- published vectors ------------------------------------------------------


def vector_id(vector: dict[str, Any]) -> str:
    return str(vector["name"])


@pytest.mark.parametrize("vector", VECTORS, ids=vector_id)
def test_vector_encoding(vector: dict[str, Any]) -> None:
    tx = vector["transaction"]
    raw = encode_raw(tx["raw_data"])
    assert raw.hex() == tx["raw_data_hex"]
    assert hashlib.sha256(raw).hexdigest() == tx["txID"]
    for pb2 in (tron_pb2, tronpy_pb2):
        assert decoded_raw_data(raw, pb2) == tx["raw_data"]
    for signature in tx.get("signature", []):
        sig = Signature(bytes.fromhex(signature))
        public_key = sig.recover_public_key_from_msg_hash(bytes.fromhex(tx["txID"]))
        assert public_key.to_hex_address() == vector["signer"]


def bip39_seed(mnemonic: str) -> bytes:
    words = unicodedata.normalize("NFKD", mnemonic).encode()
    return hashlib.pbkdf2_hmac("sha512", words, b"mnemonic", 2048)


@pytest.mark.parametrize("vector", [v for v in VECTORS if "signer_key" in v], ids=vector_id)
def test_vector_signature_from_known_key(vector: dict[str, Any]) -> None:
    spec, tx = vector["signer_key"], vector["transaction"]
    secret = bytes.fromhex(spec["private_key"])
    assert key_from_seed(bip39_seed(spec["mnemonic"]), spec["path"]) == secret
    key = LocalKey(secret)
    assert to_hex_address(key_address(key.info.public_key)) == vector["signer"]
    # r || s || v with v the recovery id, byte for byte as published.
    assert [key.sign(bytes.fromhex(tx["txID"])).rsv().hex()] == tx["signature"]


@pytest.mark.parametrize("vector", [v for v in VECTORS if "request" in v], ids=vector_id)
def test_vector_end_to_end(vector: dict[str, Any]) -> None:
    published = vector["transaction"]
    txid = bytes.fromhex(published["txID"])
    [signature] = published["signature"]
    sig_bytes = bytes.fromhex(signature)
    public_key = PublicKey.from_signature_and_message(sig_bytes, txid, hasher=None)
    key = KeyInfo("vector-key", public_key.format(compressed=False))
    tx = json_format.ParseDict(vector["request"], pb.TronTransaction())

    prepared = ADAPTER.prepare(edge.transaction(tx), key)
    assert prepared.digests == (txid,)
    sig = RecoverableSignature(
        int.from_bytes(sig_bytes[:32], "big"),
        int.from_bytes(sig_bytes[32:64], "big"),
        sig_bytes[64],
    )
    signed = ADAPTER.assemble(prepared, [sig])
    assert json.loads(signed.raw_tx) == published
    assert to_hex_address(signed.address) == vector["signer"]
    check_with_tronpy(signed)


# ---- assemble misuse ---------------------------------------------------------


def test_assemble_refuses_wrong_signature_count() -> None:
    prepared = ADAPTER.prepare(edge.transaction(trx()), KEY.info)
    sig = KEY.sign(prepared.digests[0])
    for signatures in ([], [sig, sig]):
        with pytest.raises(ValueError, match="1 signature"):
            ADAPTER.assemble(prepared, signatures)
    with pytest.raises(ValueError, match="recovery id"):
        ADAPTER.assemble(prepared, [RecoverableSignature(sig.r, sig.s, 2)])


def test_assemble_refuses_foreign_prepared_tx() -> None:
    prepared = ADAPTER.prepare(edge.transaction(trx()), KEY.info)
    foreign = PreparedTx(prepared.intent, prepared.digests, object())
    with pytest.raises(TypeError):
        ADAPTER.assemble(foreign, [KEY.sign(prepared.digests[0])])


# ---- bad input -------------------------------------------------------------

ACCOUNT_ID = bytes(range(1, 21))
BAD_ADDRESSES = [
    pytest.param("", id="empty"),
    pytest.param(RECIPIENT[:-1] + ("2" if RECIPIENT[-1] != "2" else "3"), id="bad-checksum"),
    pytest.param(RECIPIENT.lower(), id="lowercased"),
    pytest.param(RECIPIENT + " ", id="trailing-space"),
    pytest.param(" " + RECIPIENT, id="leading-space"),
    pytest.param(base58.b58encode_check(b"\x00" + ACCOUNT_ID).decode(), id="version-0x00"),
    pytest.param(base58.b58encode_check(b"\xa0" + ACCOUNT_ID).decode(), id="version-0xa0"),
    pytest.param(base58.b58encode_check(b"\x41" + ACCOUNT_ID[:19]).decode(), id="20-bytes"),
    pytest.param(base58.b58encode_check(b"\x41" + ACCOUNT_ID + b"\0").decode(), id="22-bytes"),
    pytest.param(to_hex_address(RECIPIENT), id="hex-41"),
    pytest.param("0x" + ACCOUNT_ID.hex(), id="evm-hex"),
    pytest.param(RECIPIENT[:-1] + "é", id="non-ascii"),
]

BAD_TRC20_AMOUNTS = [
    "",
    "0",
    "00",
    "01",
    "-1",
    "+1",
    "1.5",
    " 1",
    "1 ",
    "1e6",
    "0x10",
    "1_000",
    "١٢",  # Arabic-Indic digits
    "²",
    str(2**256),
    "9" * 79,
    "1" * 5000,
]

BAD_INPUT = [
    *(
        pytest.param(trx(network=n), "tron.network", id=f"network-{n!r}")
        for n in ("", "testnet", "Mainnet", "tron")
    ),
    pytest.param(make_tx(), "tron.contract", id="no-contract"),
    pytest.param(trx(to=KEY_ADDRESS), "tron.trx_transfer.to", id="trx-to-self"),
    *(
        pytest.param(trx(amount=a), "tron.trx_transfer.amount", id=f"trx-amount-{a}")
        for a in (0, -1, -(2**63))
    ),
    *(pytest.param(trx(fee_limit=f), "tron.fee_limit", id=f"trx-fee-limit-{f}") for f in (1, -1)),
    *(
        pytest.param(trc20(amount=a), "tron.trc20_transfer.amount", id=f"trc20-amount-{a[:12]!r}")
        for a in BAD_TRC20_AMOUNTS
    ),
    *(
        pytest.param(trc20(fee_limit=f), "tron.fee_limit", id=f"trc20-fee-limit-{f}")
        for f in (0, -1, MAX_FEE_LIMIT + 1)
    ),
    *(
        pytest.param(trx(ref_block_bytes=r), "tron.ref_block_bytes", id=f"ref-bytes-{r!r}")
        for r in ("", "5e4", "5e4b5c", "zz4b", "0x5e4b", "5e4b\n", " 5e4b")
    ),
    *(
        pytest.param(trx(ref_block_hash=r), "tron.ref_block_hash", id=f"ref-hash-{r!r}")
        for r in ("", "47c9dc89341b30", "47c9dc89341b300d00", "g" * 16, "0x47c9dc89341b30")
    ),
    *(
        pytest.param(trx(timestamp=t), "tron.timestamp", id=f"timestamp-{t}")
        for t in (0, -1, 1_760_000_000)
    ),
    *(
        pytest.param(trx(expiration=e), "tron.expiration", id=f"expiration-{e}")
        for e in (0, NOW - 1, NOW, NOW + MAX_LIFETIME_MS + 1)
    ),
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
@pytest.mark.parametrize(
    ("build", "field"),
    [
        pytest.param(lambda a: trx(to=a), "tron.trx_transfer.to", id="trx.to"),
        pytest.param(lambda a: trc20(to=a), "tron.trc20_transfer.to", id="trc20.to"),
        pytest.param(lambda a: trc20(contract=a), "tron.trc20_transfer.contract", id="contract"),
    ],
)
def test_bad_address(address: str, build: Any, field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(edge.transaction(build(address)), KEY.info)
    assert caught.value.field == field
    assert caught.value.message


@pytest.mark.parametrize(("tx", "field"), BAD_INPUT)
def test_bad_input(tx: pb.TronTransaction, field: str) -> None:
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(edge.transaction(tx), KEY.info)
    assert caught.value.field == field
    assert caught.value.message


def test_trx_amount_cannot_overflow_int64() -> None:
    # The proto field is int64: a larger amount never reaches the adapter.
    with pytest.raises(ValueError, match="out of range"):
        pb.TronTrxTransfer(to=RECIPIENT, amount=2**63)


def test_expiration_is_on_the_intent_and_bounded_ahead_of_now() -> None:
    # Issue 9 item 7: a transaction valid far ahead is a signature someone can hold.
    prepared = ADAPTER.prepare(edge.transaction(trx()), KEY.info)
    assert prepared.intent.expiration_ms == NOW + 60_000
    ahead = DEFAULT_LIMITS.max_lock_ahead_seconds * 1000
    later = NOW + 30 * 86_400_000
    ADAPTER.prepare(
        edge.transaction(trx(timestamp=NOW + ahead - 1000, expiration=NOW + ahead)), KEY.info
    )
    for tx in (
        trx(timestamp=NOW + ahead, expiration=NOW + ahead + 1),
        trx(timestamp=later, expiration=later + 60_000),
    ):
        with pytest.raises(InvalidField, match=r"limits\.max_lock_ahead_seconds") as caught:
            ADAPTER.prepare(edge.transaction(tx), KEY.info)
        assert caught.value.field == "tron.expiration"
    # Seen a month later, the same transaction is within the bound.
    month_later = TronAdapter(clock=lambda: NOW_S + 30 * 86_400)
    month_later.prepare(edge.transaction(trx(timestamp=later, expiration=later + 60_000)), KEY.info)


def test_amount_and_fee_limit_are_bounded_by_the_limits() -> None:
    top = DEFAULT_LIMITS.tron_max_amount_sun
    ADAPTER.prepare(edge.transaction(trx(amount=top)), KEY.info)
    with pytest.raises(InvalidField, match=r"exceeds limits\.tron_max_amount_sun") as caught:
        ADAPTER.prepare(edge.transaction(trx(amount=top + 1)), KEY.info)
    assert caught.value.field == "tron.trx_transfer.amount"
    lowered = TronAdapter(ChainLimits(tron_max_fee_limit_sun=100_000_000), clock=lambda: NOW_S)
    lowered.prepare(edge.transaction(trc20(fee_limit=100_000_000)), KEY.info)
    with pytest.raises(InvalidField, match=r"limits\.tron_max_fee_limit_sun") as caught:
        lowered.prepare(edge.transaction(trc20(fee_limit=100_000_001)), KEY.info)
    assert caught.value.field == "tron.fee_limit"
