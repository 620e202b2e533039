"""The JSON-RPC signer's pure parts: the tx object mapping, the error table, [jsonrpc] config.

End to end (HTTPS, mTLS, the pipeline, web3.py) is tests/integration/test_jsonrpc_e2e.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from custos.hsm.errors import HsmUnavailable
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.edge import errors
from custos.signer.edge.auth import Identity
from custos.signer.edge.config import load_config
from custos.signer.edge.errors import ConfigError
from custos.signer.edge.jsonrpc import (
    INVALID_PARAMS,
    MAX_JSON_DEPTH,
    PARSE_ERROR,
    PERMISSION_DENIED,
    POLICY_DENIED,
    UNAVAILABLE,
    JsonRpcSigner,
    RpcError,
    _deeper_than,
    evm_transaction,
    request_id_for,
    rpc_error_of,
)
from custos.signer.store.base import Store
from custos.signer.usecases.pipeline import REQUEST_ID, SigningPipeline
from tests.unit.test_config import VALID

SENDER = "0x" + "11" * 20
DEST = "0x" + "22" * 20


def _tx(**fields: Any) -> dict[str, Any]:
    tx: dict[str, Any] = {
        "from": SENDER,
        "to": DEST,
        "gas": "0x5208",
        "nonce": "0x7",
        "chainId": "0xaa36a7",
        "value": "0xde0b6b3a7640000",
        "maxFeePerGas": "0x6fc23ac00",
        "maxPriorityFeePerGas": "0x3b9aca00",
    }
    tx.update(fields)
    return {k: v for k, v in tx.items() if v is not None}


def test_eip1559_object_maps_to_the_evm_item() -> None:
    sender, evm = evm_transaction(_tx(data="0xa9059cbb"))
    assert sender == SENDER
    assert evm == pb.EvmTransaction(
        chain_id=11155111,
        type=pb.EVM_TX_TYPE_EIP1559,
        nonce=7,
        to=DEST,
        value=str(10**18),
        data="0xa9059cbb",
        gas_limit=21000,
        max_fee_per_gas=str(30 * 10**9),
        max_priority_fee_per_gas=str(10**9),
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, pb.EVM_TX_TYPE_EIP1559),
        ({"maxFeePerGas": None, "maxPriorityFeePerGas": None, "gasPrice": "0x1"}, 1),
        (
            {
                "maxFeePerGas": None,
                "maxPriorityFeePerGas": None,
                "gasPrice": "0x1",
                "accessList": [{"address": DEST, "storageKeys": []}],
            },
            pb.EVM_TX_TYPE_EIP2930,
        ),
        (
            {"type": "0x1", "maxFeePerGas": None, "maxPriorityFeePerGas": None, "gasPrice": 1},
            pb.EVM_TX_TYPE_EIP2930,
        ),
    ],
)
def test_type_from_the_fields_present(fields: dict[str, Any], expected: int) -> None:
    assert evm_transaction(_tx(**fields))[1].type == expected


def test_input_and_gas_limit_aliases() -> None:
    _, evm = evm_transaction(_tx(gas=None, gasLimit="0x10", input="0xab"))
    assert (evm.gas_limit, evm.data) == (16, "0xab")
    _, evm = evm_transaction(_tx(data="0xab", input="0xab"))
    assert evm.data == "0xab"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"from": None}, "params[0].from: required"),
        ({"from": "0x12"}, "params[0].from: must be a 0x address"),
        ({"nonce": None}, "params[0].nonce: required"),
        ({"chainId": None}, "params[0].chainId: required"),
        ({"gas": None}, "params[0].gas: required"),
        ({"nonce": "0x" + "f" * 17}, "params[0].nonce: out of range"),
        ({"value": -1}, "params[0].value: out of range"),
        ({"value": True}, "params[0].value: must be a 0x hex quantity"),
        ({"value": "1000"}, "params[0].value: must be a 0x hex quantity"),
        ({"value": "0x" + "f" * 65}, "params[0].value: must be a 0x hex quantity"),
        ({"data": "0xabc"}, "params[0].data: must be 0x-prefixed hex of whole bytes"),
        ({"data": "0xab", "input": "0xcd"}, "params[0].input: differs from data"),
        ({"gasLimit": "0x1"}, "params[0].gasLimit: differs from gas"),
        ({"gasPrice": "0x1"}, "params[0].gasPrice: not allowed in an EIP-1559"),
        ({"maxPriorityFeePerGas": None}, "params[0].maxPriorityFeePerGas: required"),
        ({"type": "0x3"}, "params[0].type: only 0x0"),
        ({"type": "0x0"}, "params[0].maxFeePerGas: not allowed in a type 0"),
        ({"blobVersionedHashes": []}, "params[0].blobVersionedHashes: not supported"),
        ({"authorizationList": []}, "params[0].authorizationList: not supported"),
        ({"accessList": {}}, "params[0].accessList: must be an array"),
        ({"accessList": [{"address": DEST, "x": 1}]}, "params[0].accessList[0]: must be"),
        ({"to": 5}, "params[0].to: must be a 0x address"),
    ],
)
def test_bad_objects_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(RpcError) as info:
        evm_transaction(_tx(**fields))
    assert info.value.code == INVALID_PARAMS
    assert info.value.message.startswith(message), info.value.message


def test_not_an_object() -> None:
    with pytest.raises(RpcError, match=r"params\[0\]: must be a transaction object"):
        evm_transaction(["0x1"])


def test_the_most_specific_error_decides_the_code_and_details_ride_along() -> None:
    denied = rpc_error_of(
        errors.PolicyDenied("items[0]: denied by policy: no", {"rule": "r", "item": "0"})
    )
    assert (denied.code, denied.message, denied.data) == (
        POLICY_DENIED,
        "denied by policy: no",
        {"rule": "r"},
    )
    assert (
        rpc_error_of(errors.PermissionDenied("no grant")).code == PERMISSION_DENIED != POLICY_DENIED
    )


def test_an_hsm_outage_is_told_without_the_hsms_words() -> None:
    error = rpc_error_of(HsmUnavailable("CKR_DEVICE_ERROR in slot 3"))
    assert error.code == UNAVAILABLE
    assert "CKR" not in error.message
    assert "retry later" in error.message


def test_field_paths_are_renamed_to_the_callers() -> None:
    error = rpc_error_of(
        errors.InvalidRequest("items[0].evm.max_fee_per_gas: too high"),
        {"items[0].evm.max_fee_per_gas": "params[0].maxFeePerGas", "items[0].evm.": "params[0]."},
    )
    assert error.message == "params[0].maxFeePerGas: too high"


def test_request_id_is_stable_valid_and_per_caller() -> None:
    first = request_id_for("CN=a", b"\x01" * 32)
    assert first == request_id_for("CN=a", b"\x01" * 32)
    assert REQUEST_ID.fullmatch(first)
    assert first != request_id_for("CN=b", b"\x01" * 32)
    assert first != request_id_for("CN=a", b"\x02" * 32)


def _config(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "custos.toml"
    path.write_text(VALID + "\n[jsonrpc]\n" + section)
    return path


def test_jsonrpc_is_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "custos.toml"
    path.write_text(VALID)
    assert load_config(path).jsonrpc.enabled is False
    enabled = load_config(_config(tmp_path, 'enabled = true\nlisten = "[::1]:0"\n')).jsonrpc
    assert (enabled.enabled, enabled.listen) == (True, "[::1]:0")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('listen = "9000"', "jsonrpc.listen"),
        ('listen = "host:99999"', "jsonrpc.listen"),
        ("max_body_bytes = 10", "jsonrpc.max_body_bytes"),
        ("max_batch_requests = 0", "jsonrpc.max_batch_requests"),
        ("threads = 0", "jsonrpc.threads"),
        ("port = 1", "jsonrpc.port"),
    ],
)
def test_bad_jsonrpc_config_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(_config(tmp_path, line + "\n"))


@pytest.mark.parametrize(
    ("body", "deep"),
    [
        (b"[" * 101 + b"]" * 101, True),
        (b"[" * 100 + b"]" * 100, False),
        (b'{"a": "' + b"[" * 500 + b'"}', False),  # brackets in a string do not nest
        (b'{"a": "\\"' + b"[" * 500 + b'"}', False),  # nor after an escaped quote
        (b"[" * 60 + b"]" * 60 + b"{" * 60, False),
        (b"[" * 60 + b"{" * 60, True),
    ],
)
def test_nesting_depth_is_bounded_before_parsing(body: bytes, deep: bool) -> None:
    assert _deeper_than(body, MAX_JSON_DEPTH) is deep
    if deep:
        reply = JsonRpcSigner(cast(SigningPipeline, None), cast(Store, None), 4).handle(
            Identity("CN=x", frozenset({"service"})), body
        )
        assert reply == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": PARSE_ERROR,
                "message": "parse error: JSON nested deeper than 100 levels",
            },
        }
