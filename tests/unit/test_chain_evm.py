"""EvmAdapter: a published vector, a second implementation (eth-account), bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account._utils.legacy_transactions import Transaction
from eth_account._utils.signing import hash_of_signed_transaction
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_hash.auto import keccak
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.common.secp256k1 import N, RecoverableSignature
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.base import ContractCall, InvalidField, PreparedTx, SignedTx, Transfer
from custos.signer.chains.evm import CHAINS, EvmAdapter, checksum_address
from custos.signer.chains.limits import DEFAULT_LIMITS, ChainLimits
from custos.signer.edge import requests as edge
from tests.support import LocalKey

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
ADAPTER = EvmAdapter()
SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY = LocalKey(SECRET)
KEY_ADDRESS = Account.from_key(SECRET).address

TO = "0x3535353535353535353535353535353535353535"
TOKEN = "0xdAC17F958D2ee523a2206206994597C13D831ec7"  # USDT on Ethereum mainnet
RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # from the EIP-55 examples
TRANSFER_SELECTOR = function_signature_to_4byte_selector("transfer(address,uint256)")
APPROVE_SELECTOR = function_signature_to_4byte_selector("approve(address,uint256)")

LEGACY, EIP2930, EIP1559 = pb.EVM_TX_TYPE_LEGACY, pb.EVM_TX_TYPE_EIP2930, pb.EVM_TX_TYPE_EIP1559
TX_TYPES = (LEGACY, EIP2930, EIP1559)


def make_tx(tx_type: int = EIP1559, **fields: Any) -> pb.EvmTransaction:
    """A valid transaction of `tx_type` on Ethereum mainnet, with `fields` overriding."""
    base: dict[str, Any] = {"chain_id": 1, "type": tx_type, "nonce": 7, "to": TO}
    # Calldata costs intrinsic gas: 21000 covers a plain transfer only.
    base.update(value="1000", gas_limit=100_000 if fields.get("data") else 21000)
    if tx_type == EIP1559:
        base.update(max_fee_per_gas="30000000000", max_priority_fee_per_gas="1500000000")
    else:
        base.update(gas_price="20000000000")
    base.update(fields)
    access_list = base.pop("access_list", [])
    tx = pb.EvmTransaction(**base)
    for address, keys in access_list:
        tx.access_list.add(address=address, storage_keys=keys)
    return tx


def sign(tx: pb.EvmTransaction, key: LocalKey = KEY) -> tuple[PreparedTx, SignedTx]:
    prepared = ADAPTER.prepare(edge.transaction(tx), key.info)
    signatures = [key.sign(digest) for digest in prepared.digests]
    return prepared, ADAPTER.assemble(prepared, signatures)


def calldata(selector: bytes, address: str, amount: int) -> str:
    return "0x" + (selector + abi_encode(["address", "uint256"], [address, amount])).hex()


def eth_account_dict(tx: pb.EvmTransaction) -> dict[str, Any]:
    """The same transaction in eth-account's terms, built independently of the adapter."""
    out: dict[str, Any] = {
        "chainId": tx.chain_id,
        "nonce": tx.nonce,
        "gas": tx.gas_limit,
        "to": to_checksum_address(tx.to),
        "value": int(tx.value or "0"),
        "data": bytes.fromhex(tx.data[2:]),
    }
    access_list = [
        {"address": to_checksum_address(e.address), "storageKeys": list(e.storage_keys)}
        for e in tx.access_list
    ]
    if tx.type == LEGACY:
        out["gasPrice"] = int(tx.gas_price)
    elif tx.type == EIP2930:
        out.update(type=1, gasPrice=int(tx.gas_price), accessList=access_list)
    else:
        out.update(
            type=2,
            maxFeePerGas=int(tx.max_fee_per_gas),
            maxPriorityFeePerGas=int(tx.max_priority_fee_per_gas),
            accessList=access_list,
        )
    return out


def check_with_eth_account(
    tx: pb.EvmTransaction, prepared: PreparedTx, signed: SignedTx, address: str
) -> None:
    """Recover, decode and re-hash `signed` with eth-account; everything must agree."""
    raw = HexBytes(signed.raw_tx)
    assert Account.recover_transaction(raw) == address == signed.address
    assert signed.tx_id == "0x" + keccak(bytes(raw)).hex()
    expected = eth_account_dict(tx)
    if tx.type == LEGACY:
        decoded = Transaction.from_bytes(raw)
        fields = decoded.as_dict()
        assert fields["v"] - 35 - 2 * tx.chain_id in (0, 1)
        assert hash_of_signed_transaction(decoded) == prepared.digests[0]
        assert "0x" + decoded.hash().hex() == signed.tx_id
    else:
        typed = TypedTransaction.from_bytes(raw)
        fields = typed.as_dict()
        assert fields["type"] == expected["type"]
        assert fields["v"] in (0, 1)
        assert fields["chainId"] == tx.chain_id
        assert typed.hash() == prepared.digests[0]
        assert typed.encode() == bytes(raw)
        # eth-account reads storage keys back as integers.
        assert [
            (bytes(e["address"]), [k.to_bytes(32, "big") for k in e["storageKeys"]])
            for e in fields["accessList"]
        ] == [
            (bytes.fromhex(e["address"][2:]), [bytes.fromhex(k[2:]) for k in e["storageKeys"]])
            for e in expected["accessList"]
        ]
    for name in ("nonce", "gas", "value", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas"):
        assert fields.get(name) == expected.get(name), name
    assert bytes(fields["to"]) == bytes.fromhex(tx.to[2:])
    assert bytes(fields["data"]) == expected["data"]


# ---- published vector --------------------------------------------------------


def test_eip155_published_example() -> None:
    # Source: EIP-155 text, "Example" section (tests/vectors/evm_eip155.json).
    vector = json.loads((VECTORS / "evm_eip155.json").read_text())
    assert vector["source"].startswith("EIP-155")
    key_bytes = bytes.fromhex(vector["private_key"])
    key = LocalKey(key_bytes)
    tx = make_tx(
        LEGACY,
        chain_id=vector["chain_id"],
        nonce=vector["nonce"],
        gas_price=vector["gas_price"],
        gas_limit=vector["gas_limit"],
        to=vector["to"],
        value=vector["value"],
        data=vector["data"],
    )
    prepared, signed = sign(tx, key)
    assert prepared.unsigned.signing_payload().hex() == vector["signing_data"]
    assert prepared.digests == (bytes.fromhex(vector["signing_hash"]),)
    signature = key.sign(prepared.digests[0])
    assert (signature.r, signature.s) == (int(vector["r"]), int(vector["s"]))
    assert signature.recovery_id + 35 + 2 * vector["chain_id"] == vector["v"]
    assert signed.raw_tx == "0x" + vector["signed_tx"]
    check_with_eth_account(tx, prepared, signed, Account.from_key(key_bytes).address)


# ---- every type on every chain, checked by eth-account -----------------------

ACCESS_LIST = [
    ("0x" + "11" * 20, ["0x" + "00" * 32, "0x" + "ab" * 32]),
    (TOKEN, []),
]


@pytest.mark.parametrize("chain_id", sorted(CHAINS))
@pytest.mark.parametrize("tx_type", TX_TYPES)
def test_each_type_and_chain_agrees_with_eth_account(chain_id: int, tx_type: int) -> None:
    extra: dict[str, Any] = {} if tx_type == LEGACY else {"access_list": ACCESS_LIST}
    tx = make_tx(
        tx_type, chain_id=chain_id, nonce=42, gas_limit=60000, data="0xdeadbeef00", **extra
    )
    prepared, signed = sign(tx)
    check_with_eth_account(tx, prepared, signed, KEY_ADDRESS)
    # Both sides sign with RFC 6979 nonces and low S, so the bytes must match exactly.
    theirs = Account.sign_transaction(eth_account_dict(tx), SECRET)
    assert signed.raw_tx == "0x" + bytes(theirs.raw_transaction).hex()
    assert signed.tx_id == "0x" + bytes(theirs.hash).hex()
    assert (signed.chain, signed.network) == CHAINS[chain_id]
    assert (prepared.intent.chain, prepared.intent.network) == CHAINS[chain_id]


def test_addresses_one_account_per_chain_and_network() -> None:
    addresses = ADAPTER.addresses(KEY.info.public_key)
    assert [(a.chain, a.network) for a in addresses] == list(CHAINS.values())
    assert {a.kind for a in addresses} == {"account"}
    assert {a.address for a in addresses} == {KEY_ADDRESS}
    compressed = ADAPTER.addresses(
        bytes([2 + KEY.info.public_key[-1] % 2]) + KEY.info.public_key[1:33]
    )
    assert compressed == addresses


@pytest.mark.parametrize(
    "address",
    [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ],
)
def test_checksum_matches_eip55_examples(address: str) -> None:
    # Source: EIP-55 text, "Test Cases" section.
    assert checksum_address(bytes.fromhex(address[2:])) == address
    prepared = ADAPTER.prepare(edge.transaction(make_tx(to=address.lower())), KEY.info)
    assert prepared.intent.transfers == (Transfer(address, "native", 1000),)


# ---- intent ------------------------------------------------------------------


def test_intent_legacy_fee_and_native_transfer() -> None:
    prepared, signed = sign(make_tx(LEGACY, gas_limit=21000, gas_price="20000000000"))
    intent = prepared.intent
    assert intent.key_id == KEY.info.key_id
    assert intent.from_address == KEY_ADDRESS
    assert intent.transfers == (Transfer(TO, "native", 1000),)
    assert intent.fee == 21000 * 20_000_000_000
    assert intent.fee_details == (("gas_limit", 21000), ("gas_price", 20_000_000_000))
    assert intent.contract_call is None
    assert (signed.fee, signed.max_fee) == (0, intent.fee)
    assert signed.address == KEY_ADDRESS


def test_intent_eip1559_fee_is_the_maximum() -> None:
    tx = make_tx(EIP1559, gas_limit=50000, max_fee_per_gas="100", max_priority_fee_per_gas="2")
    intent = ADAPTER.prepare(edge.transaction(tx), KEY.info).intent
    assert intent.fee == 50000 * 100
    assert intent.fee_details == (
        ("gas_limit", 50000),
        ("max_fee_per_gas", 100),
        ("max_priority_fee_per_gas", 2),
    )


@pytest.mark.parametrize("value", ["", "0", "000"])
def test_zero_value_is_no_transfer(value: str) -> None:
    assert ADAPTER.prepare(edge.transaction(make_tx(value=value)), KEY.info).intent.transfers == ()


# Limits as high as the encoding allows: what the adapter can encode, checked by eth-account.
UNBOUNDED = EvmAdapter(
    ChainLimits(
        evm_max_value_ether=2**256,
        evm_max_fee_per_gas_gwei=2**256,
        ethereum_max_gas_limit=2**64,
    )
)


def test_largest_encodable_values_sign_under_unbounded_limits() -> None:
    top = str(2**256 - 1)
    tx = make_tx(value=top, max_fee_per_gas=top, max_priority_fee_per_gas=top, nonce=2**64 - 2)
    tx.gas_limit = 2**64 - 1
    prepared = UNBOUNDED.prepare(edge.transaction(tx), KEY.info)
    signed = UNBOUNDED.assemble(prepared, [KEY.sign(prepared.digests[0])])
    assert prepared.intent.transfers == (Transfer(TO, "native", 2**256 - 1),)
    check_with_eth_account(tx, prepared, signed, KEY_ADDRESS)


def test_largest_values_within_the_limits_are_accepted() -> None:
    value = DEFAULT_LIMITS.evm_max_value_ether * 10**18
    fee = DEFAULT_LIMITS.evm_max_fee_per_gas_gwei * 10**9
    tx = make_tx(value=str(value), max_fee_per_gas=str(fee), max_priority_fee_per_gas=str(fee))
    tx.gas_limit = DEFAULT_LIMITS.ethereum_max_gas_limit
    prepared, signed = sign(tx)
    assert prepared.intent.transfers == (Transfer(TO, "native", value),)
    check_with_eth_account(tx, prepared, signed, KEY_ADDRESS)


@pytest.mark.parametrize(
    ("tx_type", "fields", "field", "message"),
    [
        # Issue 10: gas_limit 2^64-1 with max_fee_per_gas 2^256-1 was signed.
        (EIP1559, {"gas_limit": 2**64 - 1}, "evm.gas_limit", "limits.ethereum_max_gas_limit"),
        (
            EIP1559,
            {"gas_limit": 2**24 + 1},
            "evm.gas_limit",
            "exceeds limits.ethereum_max_gas_limit = 16777216",
        ),
        (
            EIP1559,
            {"chain_id": 56, "gas_limit": 2**24 + 1},
            "evm.gas_limit",
            "limits.bsc_max_gas_limit",
        ),
        (
            EIP1559,
            {"max_fee_per_gas": str(2**256 - 1)},
            "evm.max_fee_per_gas",
            "limits.evm_max_fee_per_gas_gwei = 10,000",
        ),
        (
            EIP1559,
            {"max_fee_per_gas": str(10**13 + 1)},
            "evm.max_fee_per_gas",
            "limits.evm_max_fee_per_gas_gwei",
        ),
        (
            LEGACY,
            {"gas_price": str(10**13 + 1)},
            "evm.gas_price",
            "limits.evm_max_fee_per_gas_gwei",
        ),
        (
            EIP2930,
            {"gas_price": str(10**13 + 1)},
            "evm.gas_price",
            "limits.evm_max_fee_per_gas_gwei",
        ),
        (
            LEGACY,
            {"value": str(10**27 + 1)},
            "evm.value",
            "limits.evm_max_value_ether = 1,000,000,000",
        ),
        (LEGACY, {"value": str(2**256 - 1)}, "evm.value", "limits.evm_max_value_ether"),
        (
            LEGACY,
            {"data": "0x" + "ab" * 131_073},
            "evm.data",
            "131073 bytes exceed limits.evm_max_data_bytes = 131072",
        ),
        (
            EIP1559,
            {"access_list": [(TO, [])] * 257},
            "evm.access_list",
            "257 entries exceed limits.evm_max_access_list_addresses = 256",
        ),
        (
            EIP1559,
            {"access_list": [(TO, ["0x" + "00" * 32] * 2049)] * 2},
            "evm.access_list",
            "4098 storage keys exceed limits.evm_max_access_list_storage_keys = 4096",
        ),
    ],
)
def test_fields_beyond_the_limits_are_refused(
    tx_type: int, fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(edge.transaction(make_tx(tx_type, **fields)), KEY.info)
    assert caught.value.field == field
    assert message in caught.value.message


def intrinsic(data: bytes, access_list: list[tuple[str, list[str]]]) -> int:
    """Intrinsic gas written out from EIP-2028, EIP-2930 and EIP-7623, for the checks."""
    zeros = sum(1 for b in data if b == 0)
    standard = 21000 + 4 * zeros + 16 * (len(data) - zeros)
    standard += sum(2400 + 1900 * len(keys) for _, keys in access_list)
    return max(standard, 21000 + 10 * (zeros + 4 * (len(data) - zeros)))


@pytest.mark.parametrize(
    ("data", "access_list"),
    [
        (b"\x12\x34\x56\x78" + bytes(64), []),
        (b"\x12\x34\x56\x78" + b"\xff" * 1000, []),  # EIP-7623 floor dominates
        (b"", [(TO, ["0x" + "00" * 32] * 3), (RECIPIENT, [])]),
    ],
)
def test_gas_limit_must_cover_intrinsic_gas(
    data: bytes, access_list: list[tuple[str, list[str]]]
) -> None:
    # Issue 10: 154,202 storage keys (~293M gas) were signed with gas_limit 30M.
    needed = intrinsic(data, access_list)
    fields: dict[str, Any] = {"data": "0x" + data.hex(), "access_list": access_list}
    prepared, signed = sign(make_tx(EIP1559, gas_limit=needed, **fields))
    check_with_eth_account(
        make_tx(EIP1559, gas_limit=needed, **fields), prepared, signed, KEY_ADDRESS
    )
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(
            edge.transaction(make_tx(EIP1559, gas_limit=needed - 1, **fields)), KEY.info
        )
    assert caught.value.field == "evm.gas_limit"
    assert f"below the transaction's intrinsic gas {needed}" in caught.value.message


def test_erc20_transfer_decoded() -> None:
    data = calldata(TRANSFER_SELECTOR, RECIPIENT.lower(), 2500 * 10**6)
    assert data.startswith("0xa9059cbb")
    tx = make_tx(to=TOKEN.lower(), value="", data=data, gas_limit=65000)
    prepared, signed = sign(tx)
    intent = prepared.intent
    assert intent.transfers == (Transfer(RECIPIENT, TOKEN, 2500 * 10**6),)
    assert intent.contract_call == ContractCall(
        TOKEN, "transfer", (("to", RECIPIENT), ("amount", str(2500 * 10**6)))
    )
    check_with_eth_account(tx, prepared, signed, KEY_ADDRESS)


def test_erc20_transfer_with_native_value_reports_both() -> None:
    tx = make_tx(to=TOKEN, value="5", data=calldata(TRANSFER_SELECTOR, RECIPIENT, 9))
    transfers = ADAPTER.prepare(edge.transaction(tx), KEY.info).intent.transfers
    assert transfers == (Transfer(TOKEN, "native", 5), Transfer(RECIPIENT, TOKEN, 9))


def test_erc20_approve_decoded_without_transfer() -> None:
    data = calldata(APPROVE_SELECTOR, RECIPIENT, 2**256 - 1)
    assert data.startswith("0x095ea7b3")
    intent = ADAPTER.prepare(
        edge.transaction(make_tx(to=TOKEN, value="", data=data)), KEY.info
    ).intent
    assert intent.transfers == ()
    assert intent.contract_call == ContractCall(
        TOKEN, "approve", (("spender", RECIPIENT), ("amount", str(2**256 - 1)))
    )


def test_unknown_calldata_is_an_opaque_call() -> None:
    intent = ADAPTER.prepare(
        edge.transaction(make_tx(value="", data="0x12345678ff")), KEY.info
    ).intent
    assert intent.contract_call == ContractCall(TO, "0x12345678")
    assert intent.transfers == ()


# ---- assemble ------------------------------------------------------------------


def test_assemble_needs_exactly_one_signature() -> None:
    prepared = ADAPTER.prepare(edge.transaction(make_tx()), KEY.info)
    signature = KEY.sign(prepared.digests[0])
    with pytest.raises(ValueError, match="1 signature, got 0"):
        ADAPTER.assemble(prepared, [])
    with pytest.raises(ValueError, match="1 signature, got 2"):
        ADAPTER.assemble(prepared, [signature, signature])
    with pytest.raises(ValueError, match="recovery id"):
        ADAPTER.assemble(prepared, [RecoverableSignature(signature.r, signature.s, 2)])
    with pytest.raises(TypeError):
        ADAPTER.assemble(PreparedTx(prepared.intent, prepared.digests, object()), [signature])


# ---- bad input -------------------------------------------------------------------

CHECKSUM_FLIPPED = RECIPIENT[:-1] + RECIPIENT[-1].swapcase()
GOOD_TRANSFER = calldata(TRANSFER_SELECTOR, RECIPIENT, 1)
GOOD_APPROVE = calldata(APPROVE_SELECTOR, RECIPIENT, 1)
DIRTY_PADDING = "0xa9059cbb" + "00" * 11 + "01" + GOOD_TRANSFER[2 + 8 + 24 :]
OVER = str(2**256)

BAD_INPUT: list[tuple[int, dict[str, Any], str, str]] = [
    (LEGACY, {"chain_id": 5}, "evm.chain_id", "unknown chain id 5"),
    (LEGACY, {"chain_id": 0}, "evm.chain_id", "unknown chain id"),
    (pb.EVM_TX_TYPE_UNSPECIFIED, {}, "evm.type", "LEGACY, EIP2930 or EIP1559"),
    (9, {}, "evm.type", "LEGACY, EIP2930 or EIP1559"),
    (LEGACY, {"nonce": 2**64 - 1}, "evm.nonce", "EIP-2681"),
    (LEGACY, {"to": ""}, "evm.to", "contract creation"),
    (LEGACY, {"to": "0x1234"}, "evm.to", "20-byte hex address"),
    (LEGACY, {"to": TO[2:] + "00"}, "evm.to", "0x-prefixed"),
    (LEGACY, {"to": "0x" + "zz" * 20}, "evm.to", "20-byte hex address"),
    (LEGACY, {"to": " " + TO[1:]}, "evm.to", "0x-prefixed"),
    (LEGACY, {"to": CHECKSUM_FLIPPED}, "evm.to", "bad checksum"),
    (LEGACY, {"value": "-1"}, "evm.value", "negative"),
    (LEGACY, {"value": "+1"}, "evm.value", "'+' sign"),
    (LEGACY, {"value": "1.5"}, "evm.value", "digits 0-9 only"),
    (LEGACY, {"value": "0x10"}, "evm.value", "digits 0-9 only"),
    (LEGACY, {"value": " 1"}, "evm.value", "digits 0-9 only"),
    (LEGACY, {"value": "1_000"}, "evm.value", "digits 0-9 only"),
    (LEGACY, {"value": "\u0661\u0662"}, "evm.value", "digits 0-9 only"),
    (LEGACY, {"value": "\u00b2"}, "evm.value", "digits 0-9 only"),
    (LEGACY, {"value": OVER}, "evm.value", "overflows uint256"),
    (LEGACY, {"value": "9" * 5000}, "evm.value", "overflows uint256"),
    (LEGACY, {"gas_limit": 0}, "evm.gas_limit", "at least 21000"),
    (LEGACY, {"gas_limit": 20999}, "evm.gas_limit", "at least 21000"),
    (LEGACY, {"gas_price": ""}, "evm.gas_price", "required for legacy"),
    (EIP2930, {"gas_price": ""}, "evm.gas_price", "required for EIP-2930"),
    (LEGACY, {"gas_price": "-5"}, "evm.gas_price", "negative"),
    (EIP2930, {"gas_price": OVER}, "evm.gas_price", "overflows uint256"),
    (LEGACY, {"max_fee_per_gas": "1"}, "evm.max_fee_per_gas", "only for EIP-1559"),
    (
        EIP2930,
        {"max_priority_fee_per_gas": "1"},
        "evm.max_priority_fee_per_gas",
        "only for EIP-1559",
    ),
    (EIP1559, {"gas_price": "1"}, "evm.gas_price", "not used by EIP-1559"),
    (EIP1559, {"max_fee_per_gas": ""}, "evm.max_fee_per_gas", "required for EIP-1559"),
    (EIP1559, {"max_fee_per_gas": OVER}, "evm.max_fee_per_gas", "overflows uint256"),
    (EIP1559, {"max_priority_fee_per_gas": ""}, "evm.max_priority_fee_per_gas", "required"),
    (EIP1559, {"max_priority_fee_per_gas": "-1"}, "evm.max_priority_fee_per_gas", "negative"),
    (
        EIP1559,
        {"max_fee_per_gas": "10", "max_priority_fee_per_gas": "11"},
        "evm.max_priority_fee_per_gas",
        "must not exceed max_fee_per_gas",
    ),
    (LEGACY, {"data": "abcd"}, "evm.data", "0x-prefixed"),
    (LEGACY, {"data": "0x123"}, "evm.data", "odd number"),
    (LEGACY, {"data": "0xzz"}, "evm.data", "not hex digits"),
    (LEGACY, {"data": "0x 1"}, "evm.data", "not hex digits"),
    (LEGACY, {"data": "0x010203"}, "evm.data", "shorter than a 4-byte"),
    (LEGACY, {"data": GOOD_TRANSFER[:-2]}, "evm.data", "transfer calldata must be 68 bytes"),
    (LEGACY, {"data": GOOD_TRANSFER + "00"}, "evm.data", "transfer calldata must be 68 bytes"),
    (LEGACY, {"data": GOOD_APPROVE[:10]}, "evm.data", "approve calldata must be 68 bytes"),
    (LEGACY, {"data": DIRTY_PADDING}, "evm.data", "non-zero padding"),
    (LEGACY, {"access_list": [(TO, [])]}, "evm.access_list", "legacy"),
    (
        EIP1559,
        {"access_list": [(TO, []), ("0x12", [])]},
        "evm.access_list[1].address",
        "20-byte hex address",
    ),
    (
        EIP2930,
        {"access_list": [(CHECKSUM_FLIPPED, [])]},
        "evm.access_list[0].address",
        "bad checksum",
    ),
    (
        EIP1559,
        {"access_list": [(TO, ["0x" + "00" * 32, "0x" + "00" * 31])]},
        "evm.access_list[0].storage_keys[1]",
        "must be 32 bytes",
    ),
    (
        EIP2930,
        {"access_list": [(TO, ["0x" + "gg" * 32])]},
        "evm.access_list[0].storage_keys[0]",
        "not hex digits",
    ),
]


@pytest.mark.parametrize(("tx_type", "fields", "field", "message"), BAD_INPUT)
def test_bad_input(tx_type: int, fields: dict[str, Any], field: str, message: str) -> None:
    if "data" in fields:
        fields = {"gas_limit": 100000, **fields}
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(edge.transaction(make_tx(tx_type, **fields)), KEY.info)
    assert caught.value.field == field
    assert message in caught.value.message


@pytest.mark.parametrize("to", [TO.upper().replace("0X", "0x"), RECIPIENT.lower(), RECIPIENT])
def test_unchecksummed_cases_accepted(to: str) -> None:
    ADAPTER.prepare(edge.transaction(make_tx(to=to)), KEY.info)


def test_bad_checksum_message_does_not_hand_out_the_right_one() -> None:
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(edge.transaction(make_tx(to=CHECKSUM_FLIPPED)), KEY.info)
    assert RECIPIENT.lower() not in str(caught.value).lower()


def test_huge_field_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidField) as caught:
        ADAPTER.prepare(edge.transaction(make_tx(value="-" + "1" * 100_000)), KEY.info)
    assert len(str(caught.value)) < 200


def test_empty_hex_data_is_no_call() -> None:
    intent = ADAPTER.prepare(edge.transaction(make_tx(data="0x")), KEY.info).intent
    assert intent.contract_call is None


# ---- property: anything valid signs and recovers -----------------------------------

UINT256 = st.integers(0, 2**256 - 1)
RAW_ADDRESS = st.binary(min_size=20, max_size=20)


@st.composite
def address_text(draw: st.DrawFn) -> str:
    raw = draw(RAW_ADDRESS)
    style = draw(st.sampled_from(["lower", "upper", "checksum"]))
    if style == "checksum":
        return to_checksum_address(raw)
    return "0x" + (raw.hex() if style == "lower" else raw.hex().upper())


@st.composite
def valid_tx(draw: st.DrawFn) -> pb.EvmTransaction:
    tx_type = draw(st.sampled_from(TX_TYPES))
    data = draw(
        st.one_of(
            st.just(b""),
            st.binary(min_size=4, max_size=200).filter(
                lambda d: d[:4] not in (TRANSFER_SELECTOR, APPROVE_SELECTOR)
            ),
            st.builds(
                lambda a, n: bytes.fromhex(calldata(TRANSFER_SELECTOR, a, n)[2:]),
                RAW_ADDRESS.map(to_checksum_address),
                UINT256,
            ),
        )
    )
    fields: dict[str, Any] = {
        "chain_id": draw(st.sampled_from(sorted(CHAINS))),
        "nonce": draw(st.integers(0, 2**64 - 2)),
        "to": draw(address_text()),
        "value": str(draw(st.integers(0, 10**27))) if draw(st.booleans()) else "",
        "data": "0x" + data.hex() if data or draw(st.booleans()) else "",
    }
    if tx_type == EIP1559:
        max_fee = draw(st.integers(0, 10**13))
        fields["max_fee_per_gas"] = str(max_fee)
        fields["max_priority_fee_per_gas"] = str(draw(st.integers(0, max_fee)))
    else:
        fields["gas_price"] = str(draw(st.integers(0, 10**13)))
    access_list: list[tuple[str, list[str]]] = []
    if tx_type != LEGACY:
        keys = st.lists(
            st.binary(min_size=32, max_size=32).map(lambda k: "0x" + k.hex()), max_size=3
        )
        access_list = draw(st.lists(st.tuples(address_text(), keys), max_size=3))
        fields["access_list"] = access_list
    fields["gas_limit"] = draw(st.integers(intrinsic(data, access_list), 2**24))
    return make_tx(tx_type, **fields)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tx=valid_tx(), secret=st.integers(1, N - 1))
def test_property_valid_fields_sign_and_recover(tx: pb.EvmTransaction, secret: int) -> None:
    secret_bytes = secret.to_bytes(32, "big")
    address = Account.from_key(secret_bytes).address
    prepared, signed = sign(tx, LocalKey(secret_bytes))
    check_with_eth_account(tx, prepared, signed, address)
    assert prepared.intent.from_address == address


STRING_FIELDS = ("to", "value", "data", "gas_price", "max_fee_per_gas", "max_priority_fee_per_gas")


@settings(max_examples=300, deadline=None)
@given(
    tx_type=st.sampled_from(TX_TYPES),
    name=st.sampled_from(STRING_FIELDS),
    text=st.one_of(st.text(max_size=80), st.from_regex(r"0x[0-9a-fA-F]{0,80}", fullmatch=True)),
)
def test_property_arbitrary_text_fails_only_as_invalid_field(
    tx_type: int, name: str, text: str
) -> None:
    # Any other exception escaping prepare() fails the test by itself.
    error: InvalidField | None = None
    try:
        ADAPTER.prepare(edge.transaction(make_tx(tx_type, **{name: text})), KEY.info)
    except InvalidField as caught:
        error = caught
    if error is not None:
        assert error.field.startswith("evm.")
        assert error.message
