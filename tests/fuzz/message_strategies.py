"""Hypothesis strategies for the message item kinds (signer/chains/messages.py).

Typed data is fuzzed structure-aware: a valid document (the EIP-712 Mail
example or a permit) with one member replaced by a hostile JSON value, a
hostile type string, or deleted; plus JSON text of any shape, and deep or
duplicate-member text.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from custos.proto.custos.v1 import signer_pb2 as pb
from tests import typed_data as td

TOKEN = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"
SPENDER = "0x3333333333333333333333333333333333333333"
_CHAIN_IDS = st.sampled_from([1, 56, 97, 17000, 11155111, 0, 5, 137, 2**64 - 1])
_NETWORKS = st.sampled_from(
    ["mainnet", "testnet", "signet", "regtest", "shasta", "nile", "", "Mainnet", "x" * 300]
)
_LEAF: SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(-(2**300), 2**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["0x", "0x00", "0x" + "ab" * 32, "0x" + "11" * 20, "-1", "1e3", "0x-1"])
)
JSON_VALUES: SearchStrategy[Any] = st.recursive(
    _LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
_TYPE_NAMES = st.sampled_from(
    [
        "uint256", "uint0", "uint257", "int8", "bytes32", "bytes0", "bytes33", "bytes",
        "string", "bool", "address", "Person", "Person[]", "Person[2]", "Mail", "Mail[]",
        "uint8[][3]", "EIP712Domain", "Nope", "uint256[0]", "string[01]", "", " uint256",
    ]
) | st.text(max_size=12)  # fmt: skip


def _documents() -> SearchStrategy[dict[str, Any]]:
    return st.sampled_from(
        [
            td.MAIL,
            td.eip2612_permit(TOKEN, SPENDER, SPENDER, 10, 11155111),
            td.permit2_single(TOKEN, SPENDER, 5, 1),
            td.permit2_batch([(TOKEN, 1), (SPENDER, 2)], SPENDER, 56),
        ]
    )


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@st.composite
def mutated_typed_data(draw: st.DrawFn) -> str:
    doc = copy.deepcopy(draw(_documents()))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.integers(0, 3))
        if action == 0:
            del parent[path[-1]]
        elif action == 1 and path[-1] == "type":
            parent[path[-1]] = draw(_TYPE_NAMES)
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    return json.dumps(doc)


TYPED_DATA_TEXT: SearchStrategy[str] = st.one_of(
    mutated_typed_data(),
    JSON_VALUES.map(json.dumps),
    st.text(max_size=200),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
    st.just('{"types": {}, "types": {}, "primaryType": "Mail"}'),
)


@st.composite
def valid_typed_data(draw: st.DrawFn) -> pb.EvmTypedData:
    doc = td.mail(name=draw(st.text(max_size=20)))
    doc["message"]["contents"] = draw(st.text(max_size=50))
    return pb.EvmTypedData(chain_id=1, typed_data=json.dumps(doc))


def evm_typed_data() -> SearchStrategy[pb.EvmTypedData]:
    return st.builds(pb.EvmTypedData, chain_id=_CHAIN_IDS, typed_data=TYPED_DATA_TEXT)


def evm_message() -> SearchStrategy[pb.EvmPersonalMessage]:
    return st.builds(pb.EvmPersonalMessage, chain_id=_CHAIN_IDS, message=st.binary(max_size=300))


def tron_message() -> SearchStrategy[pb.TronMessage]:
    return st.builds(pb.TronMessage, network=_NETWORKS, message=st.binary(max_size=300))


def bitcoin_message() -> SearchStrategy[pb.BitcoinMessage]:
    return st.builds(
        pb.BitcoinMessage,
        network=_NETWORKS,
        address_type=st.sampled_from(["p2pkh", "p2wpkh", "p2sh", "", "P2PKH"]),
        message=st.binary(max_size=300),
    )


SEEDS: dict[str, list[Any]] = {
    "evm_message": [pb.EvmPersonalMessage(chain_id=1, message=b"hello")],
    "evm_typed_data": [
        td.typed_item("k", td.MAIL, 1).evm_typed_data,
        td.typed_item("k", td.permit2_batch([(TOKEN, 1)], SPENDER, 56), 56).evm_typed_data,
    ],
    "tron_message": [pb.TronMessage(network="nile", message=b"hello")],
    "bitcoin_message": [pb.BitcoinMessage(network="signet", address_type="p2wpkh", message=b"hi")],
}
STRUCTURED: dict[str, SearchStrategy[Any]] = {
    "evm_message": evm_message(),
    "evm_typed_data": evm_typed_data(),
    "tron_message": tron_message(),
    "bitcoin_message": bitcoin_message(),
}
VALID: dict[str, SearchStrategy[Any] | None] = {
    "evm_message": None,
    "evm_typed_data": valid_typed_data(),
    "tron_message": None,
    "bitcoin_message": None,
}
MESSAGE_TYPES: dict[str, Any] = {
    "evm_message": pb.EvmPersonalMessage,
    "evm_typed_data": pb.EvmTypedData,
    "tron_message": pb.TronMessage,
    "bitcoin_message": pb.BitcoinMessage,
}
