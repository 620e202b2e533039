"""JSON-RPC bodies, random and shaped like calls, through JsonRpcSigner.handle.

Every body gets a well-formed JSON-RPC answer (or none, for notifications only)
whose errors carry one of the documented codes, never the internal error; any
call that reaches the pipeline is one item under a valid, derived request id
and a key the caller was granted. The pipeline and store are fakes (the parsing
and mapping are under test here; tests/integration/test_jsonrpc_e2e.py runs the
real ones).
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.evm import key_address
from custos.signer.chains.items import SignBatch
from custos.signer.edge.auth import Identity
from custos.signer.edge.errors import ERROR_KINDS
from custos.signer.edge.jsonrpc import MAX_JSON_DEPTH, JsonRpcSigner, request_id_for
from custos.signer.store.base import KeyRecord, KeyState, Store
from custos.signer.usecases.pipeline import REQUEST_ID, SigningPipeline
from tests.fuzz.conftest import PARSED, REQUEST_FUZZ
from tests.support import LocalKey

pytestmark = pytest.mark.fuzz

KEY = LocalKey(b"\x01" * 32, "granted")
ADDRESS = key_address(KEY.info.public_key)
CALLER = Identity("CN=svc", frozenset({"service"}), ("granted",))
KNOWN_CODES = {
    -32700,
    -32600,
    -32601,
    -32602,
    -32002,
    *(kind.jsonrpc_code for kind in ERROR_KINDS.values()),
}


class _Store:
    def list_keys(self) -> list[KeyRecord]:
        return [KeyRecord("granted", KEY.info.public_key, KeyState.ENABLED, "CN=o", 0, "testnet")]


class _Pipeline:
    def __init__(self) -> None:
        self.requests: list[SignBatch] = []

    def sign_batch(self, caller: Identity, request: SignBatch) -> pb.SignBatchResponse:
        self.requests.append(request)
        item = pb.SignedItem(raw_tx="0x00")
        return pb.SignBatchResponse(request_id=request.request_id, status=1, items=[item])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just(ADDRESS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
hexes = st.integers(0, 2**70).map(hex)
TX_FIELDS = (
    "gas",
    "gasLimit",
    "gasPrice",
    "maxFeePerGas",
    "maxPriorityFeePerGas",
    "value",
    "nonce",
    "chainId",
    "type",
)
BASE_TX = {
    "from": ADDRESS,
    "to": "0x" + "35" * 20,
    "gas": "0x5208",
    "nonce": "0x0",
    "chainId": "0xaa36a7",
    "maxFeePerGas": "0x1",
    "maxPriorityFeePerGas": "0x1",
}
tx_fields = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(TX_FIELDS, hexes | json_values)
    | {
        "from": st.just(ADDRESS) | json_values,
        "to": st.just("0x" + "35" * 20) | json_values,
        "data": st.binary(max_size=8).map(lambda b: "0x" + b.hex()) | json_values,
        "accessList": json_values,
        "unknown": json_values,
    },
)
# Mostly valid objects with a few fields changed or dropped, and objects of random fields.
tx_objects = (
    st.builds(
        lambda changes, drop: {k: v for k, v in (BASE_TX | changes).items() if k not in drop},
        tx_fields,
        st.sets(st.sampled_from(sorted(BASE_TX)), max_size=2),
    )
    | tx_fields
)
hex_data = st.binary(max_size=8).map(lambda b: "0x" + b.hex())
valid_calls = st.one_of(
    st.tuples(st.just("eth_signTransaction"), st.tuples(tx_objects).map(list)),
    st.tuples(st.just("eth_sign"), st.tuples(st.just(ADDRESS), hex_data | json_values).map(list)),
    st.tuples(
        st.just("personal_sign"),
        st.tuples(hex_data | st.text(max_size=8) | json_values, st.just(ADDRESS)).map(list),
    ),
    st.tuples(
        st.sampled_from(["eth_signTypedData_v4", "eth_signTypedData"]),
        st.tuples(st.just(ADDRESS), json_values).map(list),
    ),
    st.tuples(st.just("eth_accounts"), st.just([])),
).map(lambda mp: {"jsonrpc": "2.0", "id": 1, "method": mp[0], "params": mp[1]})
params = (
    st.tuples(tx_objects).map(list)
    | st.lists(
        st.just(ADDRESS) | st.binary(max_size=8).map(lambda b: "0x" + b.hex()) | json_values,
        max_size=3,
    )
    | json_values
)
calls = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | json_values},
    optional={
        "id": st.integers() | st.text(max_size=5) | json_values,
        "method": st.sampled_from(JsonRpcSigner.METHODS) | st.text(max_size=10) | json_values,
        "params": params,
        "extra": json_values,
    },
)
bodies = (
    valid_calls.map(json.dumps)
    | calls.map(json.dumps)
    | st.lists(valid_calls | calls, max_size=5).map(json.dumps)
    | json_values.map(json.dumps)
    | st.binary(max_size=64).map(lambda b: b.decode("latin-1"))
).map(lambda text: text.encode("utf-8", "surrogatepass"))


def _check(answer: Any) -> None:
    assert isinstance(answer, dict)
    assert answer["jsonrpc"] == "2.0"
    assert ("result" in answer) != ("error" in answer)
    if "error" in answer:
        error = answer["error"]
        assert error["code"] in KNOWN_CODES, error
        assert isinstance(error["message"], str)
        assert error["message"]


@REQUEST_FUZZ
@given(bodies)
def test_every_body_gets_a_json_rpc_answer_and_only_granted_single_items_are_signed(
    body: bytes,
) -> None:
    pipeline = _Pipeline()
    signer = JsonRpcSigner(cast(SigningPipeline, pipeline), cast(Store, _Store()), 4)
    answer = signer.handle(CALLER, body)
    PARSED["jsonrpc"] += 1
    if isinstance(answer, list):
        assert answer
        for one in answer:
            _check(one)
    elif answer is not None:
        _check(answer)
    for request in pipeline.requests:
        PARSED["jsonrpc -> pipeline"] += 1
        assert len(request.items) == 1
        assert request.items[0].key_id == "granted"
        assert REQUEST_ID.fullmatch(request.request_id)
        assert request.request_id == request_id_for(CALLER.subject, request.payload_digest)
    assert MAX_JSON_DEPTH >= 64  # typed data may nest to limits.typed_data_max_depth
