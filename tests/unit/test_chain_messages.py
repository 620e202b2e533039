"""Message adapters: the EIP-712 spec's example, second implementations, permits, bad input.

Second implementations (tests.second_impl): eth-account (encode_typed_data,
encode_defunct, recover_message), tronpy (TronWeb's signMessageV2 hash and
recovery), python-bitcointx (VerifyMessage; BIP137 P2WPKH by key recovery).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.base import InvalidField, PreparedTx, SignedTx
from custos.signer.chains.eip712 import parse_typed_data
from custos.signer.chains.limits import ChainLimits, WorkBudget
from custos.signer.chains.registry import make_adapters
from custos.signer.edge import requests as edge
from tests import typed_data as td
from tests.second_impl import (
    bitcoin_message_verifies,
    evm_message_signer,
    evm_typed_data_signer,
    tron_message_signer,
    typed_data_digest,
)
from tests.support import LocalKey

ADAPTERS = make_adapters()
SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY = LocalKey(SECRET)
ADDRESS = Account.from_key(SECRET).address
TOKEN = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"  # USDC on Sepolia
SPENDER = "0x3333333333333333333333333333333333333333"
SEPOLIA = 11155111
FIELD = "evm_typed_data.typed_data"


def prepare(item: pb.SignItem, limits: ChainLimits | None = None) -> PreparedTx:
    kind = item.WhichOneof("tx")
    assert kind is not None
    adapters = ADAPTERS if limits is None else make_adapters(limits)
    return adapters[kind].prepare(
        edge.transaction(getattr(item, kind)), KEY.info, WorkBudget(10**9)
    )


def sign(item: pb.SignItem) -> tuple[PreparedTx, SignedTx]:
    prepared = prepare(item)
    kind = item.WhichOneof("tx")
    assert kind is not None
    signed = ADAPTERS[kind].assemble(prepared, [KEY.sign(d) for d in prepared.digests])
    return prepared, signed


def refused(item: pb.SignItem, limits: ChainLimits | None = None) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        prepare(item, limits)
    return caught.value


# ---- EIP-712 --------------------------------------------------------------------


def test_mail_example_gives_the_specifications_hashes() -> None:
    doc = parse_typed_data(json.dumps(td.MAIL), FIELD, 65536, 16)
    assert doc.domain_separator.hex() == td.MAIL_DOMAIN_SEPARATOR
    assert doc.message_hash.hex() == td.MAIL_HASH_STRUCT
    assert doc.digest.hex() == td.MAIL_DIGEST
    # eth-account agrees, \x19\x01 prefix included.
    assert typed_data_digest(json.dumps(td.MAIL)).hex() == td.MAIL_DIGEST


def test_mail_signature_recovers_with_eth_account() -> None:
    item = td.typed_item("k", td.MAIL, 1)
    prepared, signed = sign(item)
    assert prepared.digests[0].hex() == td.MAIL_DIGEST
    assert signed.tx_id == "0x" + td.MAIL_DIGEST
    assert evm_typed_data_signer(item.evm_typed_data.typed_data, signed.raw_tx) == ADDRESS
    assert signed.address == ADDRESS
    message = prepared.intent.message
    assert message is not None
    assert (message.kind, message.domain_name, message.chain_id, message.primary_type) == (
        "typed_data",
        "Ether Mail",
        1,
        "Mail",
    )
    assert message.verifying_contract == "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
    assert prepared.intent.transfers == ()
    assert prepared.intent.fee == 0


RICH: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "salt", "type": "bytes32"},
        ],
        "Order": [
            {"name": "maker", "type": "address"},
            {"name": "flags", "type": "bool[2]"},
            {"name": "delta", "type": "int64"},
            {"name": "blob", "type": "bytes"},
            {"name": "tag", "type": "bytes4"},
            {"name": "legs", "type": "Leg[]"},
            {"name": "grid", "type": "uint8[][]"},
            {"name": "note", "type": "string"},
        ],
        "Leg": [
            {"name": "asset", "type": "address"},
            {"name": "amount", "type": "uint256"},
            {"name": "parent", "type": "Leg[]"},
        ],
    },
    "primaryType": "Order",
    "domain": {"name": "Rich", "chainId": 56, "salt": "0x" + "ab" * 32},
    "message": {
        "maker": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "flags": [True, False],
        "delta": -12345,
        "blob": "0xdeadbeef",
        "tag": "0x01020304",
        "legs": [
            {"asset": TOKEN, "amount": "0x10", "parent": []},
            {
                "asset": SPENDER,
                "amount": "1000",
                "parent": [{"asset": TOKEN, "amount": 2**255, "parent": []}],
            },
        ],
        "grid": [[1, 2], [], [255]],
        "note": "héllo ✓",
    },
}


def test_arrays_nested_and_recursive_structs_agree_with_eth_account() -> None:
    item = td.typed_item("k", RICH, 56)
    prepared, signed = sign(item)
    assert prepared.digests[0] == typed_data_digest(item.evm_typed_data.typed_data)
    assert evm_typed_data_signer(item.evm_typed_data.typed_data, signed.raw_tx) == ADDRESS
    assert (prepared.intent.chain, prepared.intent.network) == ("bsc", "mainnet")


_UINTS = st.sampled_from([8, 16, 64, 160, 256])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=_UINTS,
    data=st.data(),
    name=st.text(max_size=20),
    blob=st.binary(max_size=40),
    flags=st.lists(st.booleans(), max_size=4),
)
def test_random_documents_agree_with_eth_account(
    bits: int, data: st.DataObject, name: str, blob: bytes, flags: list[bool]
) -> None:
    number = data.draw(st.integers(0, 2**bits - 1))
    signed_number = data.draw(st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    doc = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}],
            "T": [
                {"name": "u", "type": f"uint{bits}"},
                {"name": "i", "type": f"int{bits}"},
                {"name": "s", "type": "string"},
                {"name": "b", "type": "bytes"},
                {"name": "f", "type": "bool[]"},
            ],
        },
        "primaryType": "T",
        "domain": {"name": name},
        "message": {"u": number, "i": signed_number, "s": name, "b": "0x" + blob.hex(), "f": flags},
    }
    text = json.dumps(doc)
    assert parse_typed_data(text, FIELD, 65536, 16).digest == typed_data_digest(text)


# ---- the other kinds ------------------------------------------------------------


@pytest.mark.parametrize("message", [b"hello", "Ünïcode ✓".encode(), bytes(range(256))])
def test_personal_sign_recovers_with_eth_account(message: bytes) -> None:
    prepared, signed = sign(td.personal_item("k", message, 97))
    assert evm_message_signer(message, signed.raw_tx) == ADDRESS
    assert (prepared.intent.chain, prepared.intent.network) == ("bsc", "testnet")
    assert prepared.intent.message is not None
    assert prepared.intent.message.kind == "personal_sign"


@pytest.mark.parametrize("network", ["mainnet", "nile"])
def test_tron_message_verifies_as_tronweb_v2(network: str) -> None:
    message = b"Sign in to TronLink"
    prepared, signed = sign(td.tron_item("k", message, network))
    signer = tron_message_signer(message, signed.raw_tx)
    assert signer == signed.address == prepared.intent.from_address
    assert signer.startswith("T")
    assert prepared.intent.network == network


@pytest.mark.parametrize("address_type", ["p2pkh", "p2wpkh"])
@pytest.mark.parametrize("network", ["mainnet", "testnet", "regtest"])
def test_bitcoin_message_verifies_with_python_bitcointx(address_type: str, network: str) -> None:
    message = b"I own this address"
    _, signed = sign(td.bitcoin_item("k", message, address_type, network))
    assert bitcoin_message_verifies(signed.address, network, message, signed.raw_tx)
    assert not bitcoin_message_verifies(signed.address, network, message + b"!", signed.raw_tx)


# ---- permits ----------------------------------------------------------------------


def _grants(prepared: PreparedTx) -> list[tuple[str, str, str, str]]:
    message = prepared.intent.message
    assert message is not None
    return [(g.contract, g.method, *(v for _, v in g.args)) for g in message.grants]


def test_eip2612_permit_is_decoded_into_a_grant() -> None:
    item = td.typed_item("k", td.eip2612_permit(TOKEN, ADDRESS, SPENDER, 600, SEPOLIA), SEPOLIA)
    prepared, signed = sign(item)
    assert _grants(prepared) == [(TOKEN, "permit", SPENDER, "600")]
    assert evm_typed_data_signer(item.evm_typed_data.typed_data, signed.raw_tx) == ADDRESS


def test_permit2_single_and_batch_are_decoded() -> None:
    other = "0x779877A7B0D9E8603169DdbD7836e478b4624789"
    single = td.typed_item("k", td.permit2_single(TOKEN, SPENDER, 5, SEPOLIA), SEPOLIA)
    assert _grants(sign(single)[0]) == [(TOKEN, "permit", SPENDER, "5")]
    batch = td.typed_item(
        "k", td.permit2_batch([(TOKEN, 7), (other, 2**160 - 1)], SPENDER, SEPOLIA), SEPOLIA
    )
    prepared, signed = sign(batch)
    assert _grants(prepared) == [
        (TOKEN, "permit", SPENDER, "7"),
        (other, "permit", SPENDER, str(2**160 - 1)),
    ]
    assert evm_typed_data_signer(batch.evm_typed_data.typed_data, signed.raw_tx) == ADDRESS


def test_dai_permit_allowed_grants_everything() -> None:
    doc = td.eip2612_permit(TOKEN, ADDRESS, SPENDER, 0, 1, name="Dai Stablecoin")
    doc["types"]["Permit"] = [
        {"name": "holder", "type": "address"},
        {"name": "spender", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "expiry", "type": "uint256"},
        {"name": "allowed", "type": "bool"},
    ]
    doc["message"] = {
        "holder": ADDRESS,
        "spender": SPENDER,
        "nonce": 0,
        "expiry": 0,
        "allowed": True,
    }
    assert _grants(prepare(td.typed_item("k", doc, 1))) == [
        (TOKEN, "permit", SPENDER, str(2**256 - 1))
    ]


def test_a_permit_of_another_shape_is_refused_not_signed_undecoded() -> None:
    doc = td.eip2612_permit(TOKEN, ADDRESS, SPENDER, 1, SEPOLIA)
    doc["types"]["Permit"][2]["name"] = "amount"
    doc["message"]["amount"] = doc["message"].pop("value")
    error = refused(td.typed_item("k", doc, SEPOLIA))
    assert error.field == f"{FIELD}.types.Permit"


def test_a_grant_without_domain_chain_id_is_refused() -> None:
    doc = td.eip2612_permit(TOKEN, ADDRESS, SPENDER, 1, SEPOLIA)
    del doc["domain"]["chainId"]
    doc["types"]["EIP712Domain"] = [
        f for f in doc["types"]["EIP712Domain"] if f["name"] != "chainId"
    ]
    assert refused(td.typed_item("k", doc, SEPOLIA)).field == f"{FIELD}.domain.chainId"


# ---- chain ids ----------------------------------------------------------------------


def test_domain_chain_id_must_be_known_and_match_the_item() -> None:
    unknown = refused(td.typed_item("k", td.mail(chainId=137), 1))
    assert unknown.field == f"{FIELD}.domain.chainId"
    assert "unknown EVM chain id 137" in unknown.message
    # Sepolia (a testnet) in the domain, Ethereum mainnet on the item.
    other = refused(td.typed_item("k", td.mail(chainId=SEPOLIA), 1))
    assert other.field == f"{FIELD}.domain.chainId"
    assert refused(td.typed_item("k", td.MAIL, 5)).field == "evm_typed_data.chain_id"
    assert refused(td.personal_item("k", b"x", 0)).field == "evm_message.chain_id"


# ---- malformed typed data --------------------------------------------------------


def _mutated(path: tuple[Any, ...], value: Any) -> str:
    doc = copy.deepcopy(td.MAIL)
    target: Any = doc
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc)


_DELETE = object()

MALFORMED = [
    (("message", "to", "wallet"), "0x1234", "message.to.wallet"),
    (
        ("message", "to", "wallet"),
        "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbb",
        "message.to.wallet",
    ),
    (("message", "to", "wallet"), _DELETE, "message.to.wallet"),
    (("message", "to", "extra"), "not signed", "message.to.extra"),
    (("message", "contents"), 5, "message.contents"),
    (("message", "from"), "Cow", "message.from"),
    (("domain", "chainId"), "one", "domain.chainId"),
    (("domain", "chainId"), True, "domain.chainId"),
    (("domain", "chainId"), 1.5, "domain.chainId"),
    (("domain", "chainId"), -1, "domain.chainId"),
    (("domain", "salt"), "0x00", "domain.salt"),
    (("types", "Mail", 2, "type"), "Strin", "types.Mail[2].type"),
    (("types", "Mail", 2, "type"), "uint257", "types.Mail[2].type"),
    (("types", "Mail", 2, "name"), "from", "types.Mail[2].name"),
    (("types", "Mail", 0), {"name": "from"}, "types.Mail[0]"),
    (("types", "EIP712Domain", 0, "type"), "bytes", "types.EIP712Domain[0]"),
    (("types", "EIP712Domain"), _DELETE, "types.EIP712Domain"),
    (("primaryType",), "Letter", "primaryType"),
    (("primaryType",), "EIP712Domain", "primaryType"),
    (("extra",), 1, "extra"),
]


@pytest.mark.parametrize(("path", "value", "field"), MALFORMED)
def test_typed_data_that_does_not_match_its_types_is_refused_naming_the_field(
    path: tuple[Any, ...], value: Any, field: str
) -> None:
    error = refused(td.typed_item("k", _mutated(path, value), 1))
    assert error.field == f"{FIELD}.{field}", error


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"types": {}, "types": {}}',  # duplicate members: a wallet may show the other one
        '{"primaryType": NaN}',
    ],
)
def test_text_that_is_not_a_typed_data_object_is_refused(text: str) -> None:
    error = refused(td.typed_item("k", text, 1))
    assert error.field.startswith(FIELD)


# ---- bounds -----------------------------------------------------------------------


def test_sizes_are_bounded_and_named_by_their_config_key() -> None:
    limits = ChainLimits(message_max_bytes=10, typed_data_max_depth=3)
    for item, field in (
        (td.personal_item("k", b"x" * 11), "evm_message.message"),
        (td.tron_item("k", b"x" * 11), "tron_message.message"),
        (td.bitcoin_item("k", b"x" * 11), "bitcoin_message.message"),
    ):
        error = refused(item, limits)
        assert error.field == field
        assert "11 bytes exceed limits.message_max_bytes = 10" in error.message
    big = refused(td.typed_item("k", td.MAIL, 1), ChainLimits(typed_data_max_bytes=100))
    assert big.field == FIELD
    assert "limits.typed_data_max_bytes = 100" in big.message
    deep = refused(td.typed_item("k", td.MAIL, 1), limits)
    assert deep.field == FIELD
    assert "limits.typed_data_max_depth = 3" in deep.message
    # Brackets inside strings do not count; a megabyte of nesting fails before json.loads.
    nested = '{"types": "[[[[[[[[[["}'
    assert refused(td.typed_item("k", nested, 1), limits).field == f"{FIELD}.types"
    assert "typed_data_max_depth" in refused(td.typed_item("k", "[" * 60000, 1)).message


def test_empty_messages_and_unknown_networks_are_refused() -> None:
    assert refused(td.personal_item("k", b"")).field == "evm_message.message"
    assert refused(td.tron_item("k", b"x", "testnet")).field == "tron_message.network"
    assert refused(td.bitcoin_item("k", b"x", network="main")).field == "bitcoin_message.network"
    assert (
        refused(td.bitcoin_item("k", b"x", address_type="p2sh")).field
        == "bitcoin_message.address_type"
    )


def test_work_is_charged_to_the_batch_budget() -> None:
    adapter = ADAPTERS["evm_typed_data"]
    item = td.typed_item("k", td.MAIL, 1)
    with pytest.raises(InvalidField, match="max_batch_work_units"):
        adapter.prepare(edge.transaction(item.evm_typed_data), KEY.info, WorkBudget(100_000))


# ---- byte-for-byte against other signers (RFC 6979 nonces on both sides) -------------

COW = LocalKey(bytes.fromhex("c85ef7d79691fe79573b1a7064c19c1a9819ebdbd1faaab1a8ec92344438aaf4"))


def _sign_with(key: LocalKey, item: pb.SignItem) -> SignedTx:
    kind = item.WhichOneof("tx")
    assert kind is not None
    prepared = ADAPTERS[kind].prepare(edge.transaction(getattr(item, kind)), key.info)
    return ADAPTERS[kind].assemble(prepared, [key.sign(d) for d in prepared.digests])


def test_mail_signature_is_the_specifications() -> None:
    # EIP-712's Example.js signs Mail with keccak256("cow") and prints v, r, s.
    from eth_hash.auto import keccak

    assert (
        keccak(b"cow").hex() == "c85ef7d79691fe79573b1a7064c19c1a9819ebdbd1faaab1a8ec92344438aaf4"
    )
    signed = _sign_with(COW, td.typed_item("k", td.MAIL, 1))
    assert signed.address == "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"  # the example's "Cow"
    raw = bytes.fromhex(signed.raw_tx[2:])
    assert raw[:32].hex() == "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
    assert raw[32:64].hex() == "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
    assert raw[64] == 28


def test_signatures_equal_those_of_eth_account_tronpy_and_python_bitcointx() -> None:
    from bitcointx import ChainParams
    from bitcointx.core.key import CKey
    from bitcointx.signmessage import BitcoinMessage, SignMessage
    from eth_account.messages import encode_defunct, encode_typed_data
    from tronpy.keys import PrivateKey as TronKey

    message = b"same bytes, same nonce"
    personal = _sign_with(KEY, td.personal_item("k", message))
    theirs = Account.sign_message(encode_defunct(primitive=message), SECRET).signature
    assert personal.raw_tx == "0x" + bytes(theirs).hex()
    typed = _sign_with(KEY, td.typed_item("k", RICH, 56))
    theirs = Account.sign_message(encode_typed_data(full_message=RICH), SECRET).signature
    assert typed.raw_tx == "0x" + bytes(theirs).hex()
    tron = _sign_with(KEY, td.tron_item("k", message))
    assert tron.raw_tx == "0x" + TronKey(SECRET).sign_msg(message).tronweb_hex()
    bitcoin = _sign_with(KEY, td.bitcoin_item("k", message, "p2pkh", "mainnet"))
    with ChainParams("bitcoin"):
        expected = SignMessage(CKey(SECRET), BitcoinMessage(message)).decode()
    assert bitcoin.raw_tx == expected


@pytest.mark.parametrize("name", ["\ud800", "x" * 5000, "a.b", ""])
def test_member_names_in_errors_are_escaped_and_short(name: str) -> None:
    doc = td.mail()
    doc["message"]["to"][name] = 1
    error = refused(td.typed_item("k", json.dumps(doc), 1))
    assert error.field.startswith(f"{FIELD}.message.to.")
    str(error).encode("utf-8")  # reaches the caller as a gRPC status message
    assert len(str(error)) < 300
    doc = td.mail()
    doc["types"][name] = []
    assert refused(td.typed_item("k", json.dumps(doc), 1)).field.startswith(f"{FIELD}.types.")


def test_domain_fields_out_of_order_are_refused() -> None:
    # eth-account hashes EIP-712's order whatever is declared; a wallet hashing the
    # declared order would get another digest: refused so that there is one.
    doc = td.mail()
    doc["types"]["EIP712Domain"].reverse()
    assert typed_data_digest(json.dumps(doc)).hex() == td.MAIL_DIGEST
    error = refused(td.typed_item("k", doc, 1))
    assert error.field == f"{FIELD}.types.EIP712Domain[1]"
    assert "order" in error.message
