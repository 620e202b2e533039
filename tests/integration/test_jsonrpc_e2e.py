"""The Ethereum JSON-RPC remote signer end to end, driven by web3.py as a client would.

A real in-process server (SoftHSM token, its own store) with [jsonrpc] enabled
on its own port; web3.py's HTTPProvider presents a dev client certificate.
Every signature is checked by eth-account (tests/second_impl.py). The policy
written for these tests: Sepolia payments of 5 ETH or more are denied, of
1 ETH or more wait for one approver with a TOTP code, others are allowed;
Ether Mail typed data and personal messages are allowed, other typed data is
denied.
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pyotp
import pytest
import requests
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from web3 import Web3
from web3.providers import HTTPProvider

from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.edge.auth import Authorizer
from custos.signer.edge.config import JsonRpcConfig
from custos.signer.edge.errors import ConfigError
from custos.signer.edge.jsonrpc import (
    APPROVAL_REQUIRED,
    FAILED_PRECONDITION,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    PERMISSION_DENIED,
    POLICY_DENIED,
    JsonRpcServer,
    request_id_for,
)
from custos.signer.edge.requests import payload_digest
from custos.signer.store.base import Store
from custos.signer.tools.devsetup import subject_string
from custos.signer.usecases.pipeline import SigningPipeline
from tests import builders
from tests import typed_data as td
from tests.conftest import DevEnv, RunningServer, ServerProcess, server_with_policy
from tests.second_impl import evm_message_signer, evm_sender, evm_typed_data_signer
from tests.support import enroll_totp

pytestmark = pytest.mark.integration

ETH = 10**18
SEPOLIA = 11155111
BLOCKED_AMOUNT = 5 * ETH
MAX_BODY = 4096

POLICY = f"""\
version: 1
description: issue 12 JSON-RPC signer
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:  # one officer creates and disables the test's keys alone (development)
  create_key: 0
  disable_key: 0
identity_groups:
  approvers: ["{subject_string("approver")}"]
rules:
  - id: no-huge-payments
    match:
      chains: [ethereum]
      networks: [sepolia]
      assets: [native]
      amount: {{min: "{BLOCKED_AMOUNT}"}}
    action: deny
    reason: payments of 5 ETH or more are never signed
  - id: large-payments
    match:
      chains: [ethereum]
      networks: [sepolia]
      assets: [native]
      amount: {{min: "{ETH}"}}
    action: require_approval
    approval: {{approvals: 1, group: approvers, totp: true}}
  - id: ether-mail
    match:
      message_signing: true
      typed_data: {{domain_names: [Ether Mail], primary_types: [Mail]}}
    action: allow
  - id: no-other-typed-data
    match: {{message_signing: true, message_kinds: [typed_data]}}
    action: deny
    reason: only Ether Mail typed data
  - id: other-messages
    match: {{message_signing: true}}
    action: allow
  - id: payments
    match: {{}}
    action: allow
"""


class Rpc:
    """web3.py against the JSON-RPC signer, presenting `identity`'s client certificate."""

    def __init__(self, env: DevEnv, port: int, identity: str) -> None:
        profile = env.profile(identity)
        self.url = f"https://127.0.0.1:{port}/"
        self.ca = str(profile.ca_cert)
        self.cert = (str(profile.cert), str(profile.key))
        self.w3 = Web3(
            HTTPProvider(
                self.url, request_kwargs={"cert": self.cert, "verify": self.ca, "timeout": 60}
            )
        )

    def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        """The raw JSON-RPC response: {"result": ...} or {"error": {code, message, data}}."""
        return dict(self.w3.provider.make_request(method, params))  # type: ignore[arg-type]

    def post(self, body: bytes) -> requests.Response:
        return requests.post(
            self.url,
            data=body,
            headers={"Content-Type": "application/json"},
            cert=self.cert,
            verify=self.ca,
            timeout=60,
        )


@pytest.fixture(scope="module")
def rpc_server(
    dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    jsonrpc = JsonRpcConfig(
        enabled=True, listen="127.0.0.1:0", max_body_bytes=MAX_BODY, max_batch_requests=4
    )
    directory = tmp_path_factory.mktemp("jsonrpc")
    with server_with_policy(dev_env, directory, POLICY, jsonrpc=jsonrpc) as running:
        instance = running.server
        assert instance.jsonrpc_port not in (0, instance.port)  # type: ignore[attr-defined]
        yield running


def _rpc(server: RunningServer, identity: str = "payments") -> Rpc:
    return Rpc(server.env, server.server.jsonrpc_port, identity)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def test_key(rpc_server: RunningServer) -> keys_pb2.Key:
    """A testnet key: transactions on Sepolia."""
    return rpc_server.create_key(f"rpc-t-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def main_key(rpc_server: RunningServer) -> keys_pb2.Key:
    """A mainnet key: messages (judged as Ethereum mainnet) and the Mail typed data (chain 1)."""
    return rpc_server.create_key(f"rpc-m-{uuid.uuid4().hex[:10]}", keys_pb2.NETWORK_CLASS_MAINNET)


def _sender(key: keys_pb2.Key) -> str:
    """The key's EVM address (the same on every EVM network of its class)."""
    return next(a.address for a in key.addresses if a.chain == "ethereum")


def _tx(key: keys_pb2.Key, wei: int, n: int, **fields: Any) -> dict[str, Any]:
    """An eth_signTransaction object of `wei` with nonce `n`; `fields` override (None: omit)."""
    tx: dict[str, Any] = {
        "from": _sender(key),
        "to": builders.EVM_DEST,
        "value": hex(wei),
        "gas": hex(60_000),
        "maxFeePerGas": hex(30 * 10**9),
        "maxPriorityFeePerGas": hex(10**9),
        "nonce": hex(n),
        "chainId": hex(SEPOLIA),
    }
    tx.update(fields)
    return {k: v for k, v in tx.items() if v is not None}


def _decoded(raw: str) -> dict[str, Any]:
    """A signed typed transaction's fields, as eth-account decodes them."""
    return dict(TypedTransaction.from_bytes(HexBytes(raw)).as_dict())


def _error(response: dict[str, Any]) -> dict[str, Any]:
    assert "error" in response, response
    assert "result" not in response
    return dict(response["error"])


def test_accounts_are_the_callers_granted_keys(
    rpc_server: RunningServer, test_key: keys_pb2.Key, main_key: keys_pb2.Key
) -> None:
    limited_key = rpc_server.create_key(f"limited-{uuid.uuid4().hex[:8]}")
    accounts = _rpc(rpc_server).w3.eth.accounts
    assert {_sender(test_key), _sender(main_key), _sender(limited_key)} <= set(accounts)
    # "limited" is granted only limited-* keys: it sees and may use only those.
    limited = _rpc(rpc_server, "limited")
    assert limited.w3.eth.accounts == [_sender(limited_key)]
    error = _error(limited.call("eth_signTransaction", [_tx(test_key, 1000, 0)]))
    assert error["code"] == PERMISSION_DENIED
    assert "params[0].from" in error["message"]
    assert "not one of this identity's accounts" in error["message"]


@pytest.mark.parametrize(
    ("fields", "type_byte"),
    [
        ({}, 2),
        (
            {"maxFeePerGas": None, "maxPriorityFeePerGas": None, "gasPrice": hex(5 * 10**9)},
            None,
        ),
        (
            {
                "maxFeePerGas": None,
                "maxPriorityFeePerGas": None,
                "gasPrice": hex(5 * 10**9),
                "accessList": [
                    {"address": builders.EVM_DEST, "storageKeys": ["0x" + "00" * 31 + "01"]}
                ],
            },
            1,
        ),
    ],
    ids=["eip1559", "legacy", "eip2930"],
)
def test_sign_transaction_recovers_the_sender_and_is_idempotent(
    rpc_server: RunningServer,
    test_key: keys_pb2.Key,
    fields: dict[str, Any],
    type_byte: int | None,
) -> None:
    rpc = _rpc(rpc_server)
    nonce = 10 + (type_byte or 0)
    call = _tx(test_key, 1000, nonce, **fields)
    raw = rpc.call("eth_signTransaction", [call])["result"]
    assert evm_sender(raw) == _sender(test_key)
    payload = bytes.fromhex(raw.removeprefix("0x"))
    if type_byte is None:
        assert payload[0] >= 0xC0  # an RLP list: a legacy transaction
    else:
        assert payload[0] == type_byte
    if type_byte == 2:
        decoded = _decoded(raw)
        assert decoded["chainId"] == SEPOLIA
        assert decoded["nonce"] == nonce
        assert decoded["value"] == 1000
        assert decoded["gas"] == 60_000
        assert Web3.to_checksum_address(decoded["to"]) == builders.EVM_DEST
    # The same call again is the same request: the same signed bytes, replayed.
    assert rpc.call("eth_signTransaction", [call])["result"] == raw


def test_messages_and_typed_data_recover_with_eth_account(
    rpc_server: RunningServer, main_key: keys_pb2.Key
) -> None:
    rpc = _rpc(rpc_server)
    address = _sender(main_key)
    text = "Log in to example.org\nNonce: 7"
    # eth_sign through web3.py's own method (it sends [address, 0x data]).
    signature = rpc.w3.eth.sign(address, text=text)
    assert evm_message_signer(text.encode(), signature.hex()) == address
    # personal_sign: [data, address]; 0x hex is bytes, other text is its UTF-8.
    for data in ("0x" + b"\x00\xffbinary".hex(), "plain text"):
        result = rpc.call("personal_sign", [data, address])["result"]
        message = bytes.fromhex(data[2:]) if data.startswith("0x") else data.encode()
        assert evm_message_signer(message, result) == address
    # eth_signTypedData through web3.py (an object), _v4 with JSON text as MetaMask sends.
    typed = rpc.w3.eth.sign_typed_data(address, td.MAIL)
    assert evm_typed_data_signer(json.dumps(td.MAIL), typed.hex()) == address
    v4 = rpc.call("eth_signTypedData_v4", [address, json.dumps(td.MAIL)])["result"]
    assert evm_typed_data_signer(json.dumps(td.MAIL), v4) == address


def test_policy_denials_are_json_rpc_errors_with_the_rule(
    rpc_server: RunningServer, test_key: keys_pb2.Key, main_key: keys_pb2.Key
) -> None:
    rpc = _rpc(rpc_server)
    error = _error(rpc.call("eth_signTransaction", [_tx(test_key, 6 * ETH, 20)]))
    assert error["code"] == POLICY_DENIED
    assert error["message"] == "denied by policy: payments of 5 ETH or more are never signed"
    assert error["data"]["rule"] == "no-huge-payments"
    other = copy.deepcopy(td.MAIL)
    other["domain"]["name"] = "Other App"
    error = _error(rpc.call("eth_signTypedData_v4", [_sender(main_key), other]))
    assert error["code"] == POLICY_DENIED
    assert error["data"]["rule"] == "no-other-typed-data"


def test_held_call_answers_the_approval_id_then_the_signature_once_approved(
    rpc_server: RunningServer, test_key: keys_pb2.Key
) -> None:
    rpc = _rpc(rpc_server)
    call = _tx(test_key, 2 * ETH, 30)
    error = _error(rpc.call("eth_signTransaction", [call]))
    assert error["code"] == APPROVAL_REQUIRED
    approval_id = error["data"]["approval_id"]
    assert approval_id
    assert approval_id in error["message"]
    assert error["data"]["rules"] == ["large-payments"]
    # The request id is the caller's and the payload's: the same as SignBatch would see.
    item = pb.SignItem(key_id=test_key.key_id)
    item.evm.CopyFrom(
        pb.EvmTransaction(
            chain_id=SEPOLIA,
            type=pb.EVM_TX_TYPE_EIP1559,
            nonce=30,
            to=builders.EVM_DEST,
            value=str(2 * ETH),
            gas_limit=60_000,
            max_fee_per_gas=str(30 * 10**9),
            max_priority_fee_per_gas=str(10**9),
        )
    )
    digest = payload_digest(pb.SignBatchRequest(items=[item]))
    assert error["data"]["request_id"] == request_id_for(subject_string("payments"), digest)
    # Asked again before approval: still held, the same approval.
    again = _error(rpc.call("eth_signTransaction", [call]))
    assert (again["code"], again["data"]["approval_id"]) == (APPROVAL_REQUIRED, approval_id)

    uri = enroll_totp(rpc_server.channel, "approver")
    approvals = policy_pb2_grpc.ApprovalsStub(rpc_server.channel("approver"))
    pending = next(
        b
        for b in approvals.ListPending(policy_pb2.ListPendingRequest()).batches
        if b.approval_id == approval_id
    )
    while 30 - time.time() % 30 < 3:  # a code well inside its step
        time.sleep(0.25)
    decided = approvals.Approve(
        policy_pb2.DecideRequest(
            approval_id=approval_id,
            request_digest=pending.request_digest,
            totp_code=pyotp.parse_uri(uri).now(),
        )
    )
    assert decided.state == "signed"
    raw = rpc.call("eth_signTransaction", [call])["result"]
    assert evm_sender(raw) == _sender(test_key)
    assert _decoded(raw)["value"] == 2 * ETH


def test_no_client_certificate_is_refused_in_tls(rpc_server: RunningServer) -> None:
    rpc = _rpc(rpc_server)
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": []}
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.post(rpc.url, json=body, verify=rpc.ca, timeout=30)
    # Also at the socket: the handshake fails, or the first read does (TLS 1.3
    # sends the refusal after the client's Finished); never an HTTP answer.
    port = rpc_server.server.jsonrpc_port  # type: ignore[attr-defined]
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _post_without_certificate(port, rpc.ca)


def _post_without_certificate(port: int, ca: str) -> bytes:
    context = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        answer = tls.recv(100)
        if not answer:
            raise ConnectionError("closed without an answer")
        return answer


def test_disabled_keys_are_no_accounts_and_do_not_sign(rpc_server: RunningServer) -> None:
    key = rpc_server.create_key(f"rpc-d-{uuid.uuid4().hex[:10]}")
    rpc = _rpc(rpc_server)
    assert _sender(key) in rpc.w3.eth.accounts
    rpc_server.keys().DisableKey(keys_pb2.SetKeyStateRequest(key_id=key.key_id))
    assert _sender(key) not in rpc.w3.eth.accounts
    error = _error(rpc.call("eth_signTransaction", [_tx(key, 1000, 0)]))
    assert error["code"] == FAILED_PRECONDITION
    assert error["message"] == f"params[0].from: key {key.key_id!r} is disabled"


def test_a_port_in_use_names_jsonrpc_listen(rpc_server: RunningServer) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = JsonRpcConfig(enabled=True, listen=f"127.0.0.1:{busy.getsockname()[1]}")
        with pytest.raises(ConfigError, match=r"jsonrpc\.listen: cannot listen on 127\.0\.0\.1:"):
            JsonRpcServer(
                config,
                rpc_server.env.config().tls,
                Authorizer([]),
                cast(SigningPipeline, None),  # not called: the bind fails first
                cast(Store, None),
            )


def test_unknown_subject_is_refused(rpc_server: RunningServer) -> None:
    """A certificate from the CA whose subject is no configured identity: 403, -32001."""
    reply = _rpc(rpc_server, "stranger").post(
        b'{"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": []}'
    )
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == -32001
    assert "not a known identity" in reply.json()["error"]["message"]


def test_roles_other_than_service_are_refused(rpc_server: RunningServer) -> None:
    reply = _rpc(rpc_server, "approver").post(
        b'{"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": []}'
    )
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == PERMISSION_DENIED


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"not json", PARSE_ERROR, "parse error"),
        (b"[" * 2000 + b"]" * 2000, PARSE_ERROR, "nested deeper than 100 levels"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": ', PARSE_ERROR, "parse error"),
        (b"[]", INVALID_REQUEST, "an empty batch array"),
        (b"42", INVALID_REQUEST, "a call must be a JSON object"),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "eth_accounts"}', INVALID_REQUEST, "jsonrpc"),
        (b'{"jsonrpc": "2.0", "id": 1}', INVALID_REQUEST, "method: must be a string"),
        (b'{"jsonrpc": "2.0", "id": true, "method": "eth_accounts"}', INVALID_REQUEST, "id:"),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "eth_accounts", "params": "x"}',
            INVALID_REQUEST,
            "params: must be an array or object",
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction", "params": []}',
            METHOD_NOT_FOUND,
            "eth_sendTransaction",
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "eth_sign", "params": ["0x12"]}',
            INVALID_PARAMS,
            "params: takes 2 values [address, data], not 1",
        ),
        (b"[1, 2, 3, 4, 5]", INVALID_REQUEST, "exceeds the limit of 4"),
    ],
)
def test_what_is_not_json_rpc_gets_the_json_rpc_error(
    rpc_server: RunningServer, body: bytes, code: int, message: str
) -> None:
    reply = _rpc(rpc_server).post(body)
    assert reply.status_code == 200
    error = reply.json()["error"]
    assert error["code"] == code
    assert message in error["message"]


def test_invalid_params_name_the_json_rpc_field(
    rpc_server: RunningServer, test_key: keys_pb2.Key
) -> None:
    rpc = _rpc(rpc_server)
    cases = [
        (_tx(test_key, 1, 40, nonce=None), "params[0].nonce: required"),
        (_tx(test_key, 1, 40, value="12"), "params[0].value: must be a 0x hex quantity"),
        (_tx(test_key, 1, 40, to=None), "params[0].to: required: contract creation"),
        (_tx(test_key, 1, 40, gas=hex(2**40)), "params[0].gas:"),
        (_tx(test_key, 1, 40, gasPrice="0x1"), "params[0].gasPrice: not allowed"),
        (_tx(test_key, 1, 40, blobVersionedHashes=[]), "params[0].blobVersionedHashes"),
        (_tx(test_key, 1, 40, chainId=hex(1)), "params[0].chainId:"),
    ]
    for tx, message in cases:
        error = _error(rpc.call("eth_signTransaction", [tx]))
        assert error["code"] == INVALID_PARAMS, (message, error)
        assert error["message"].startswith(message), (message, error)


def test_batches_answer_each_call_and_skip_notifications(
    rpc_server: RunningServer, main_key: keys_pb2.Key
) -> None:
    address = _sender(main_key)
    body = json.dumps(
        [
            {"jsonrpc": "2.0", "id": "a", "method": "personal_sign", "params": ["0x01", address]},
            {"jsonrpc": "2.0", "method": "personal_sign", "params": ["0x02", address]},
            {"jsonrpc": "2.0", "id": 7, "method": "nope", "params": []},
        ]
    ).encode()
    answers = _rpc(rpc_server).post(body).json()
    assert [a["id"] for a in answers] == ["a", 7]
    assert evm_message_signer(b"\x01", answers[0]["result"]) == address
    assert answers[1]["error"]["code"] == METHOD_NOT_FOUND


def test_oversize_body_is_refused_before_it_is_read(
    rpc_server: RunningServer, main_key: keys_pb2.Key
) -> None:
    message = "0x" + "ab" * MAX_BODY
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "personal_sign",
            "params": [message, _sender(main_key)],
        }
    ).encode()
    reply = _rpc(rpc_server).post(body)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == INVALID_REQUEST
    assert f"exceeds the limit of {MAX_BODY}" in reply.json()["error"]["message"]
    # Nothing was asked of the pipeline: no batch under the call's request id.
    item = pb.SignItem(
        key_id=main_key.key_id,
        evm_message=pb.EvmPersonalMessage(chain_id=1, message=bytes.fromhex(message[2:])),
    )
    request_id = request_id_for(
        subject_string("payments"), payload_digest(pb.SignBatchRequest(items=[item]))
    )
    store = rpc_server.server.store  # type: ignore[attr-defined]
    assert store.get_batch(subject_string("payments"), request_id) is None


def _logged_port(process: ServerProcess) -> int | None:
    for line in process.log_text().splitlines():
        if line.startswith("{"):
            message = json.loads(line).get("msg", "")
            if message.startswith("json-rpc signer listening on port "):
                return int(message.rsplit(" ", 1)[1])
    return None


def test_served_by_custos_serve_from_its_config_on_a_logged_port(
    own_server: ServerProcess,
) -> None:
    """`custos serve` with [jsonrpc] in its TOML: its port in the log, eth_accounts over it."""
    with own_server.env.config_path.open("a") as handle:
        handle.write('\n[jsonrpc]\nenabled = true\nlisten = "127.0.0.1:0"\n')
    own_server.start()
    deadline = time.monotonic() + 30
    while (port := _logged_port(own_server)) is None:
        assert time.monotonic() < deadline, own_server.log_text()[-2000:]
        time.sleep(0.1)
    assert port not in (0, own_server.port)
    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="rpc-served", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    rpc = Rpc(own_server.env, port, "payments")
    assert rpc.w3.eth.accounts == [_sender(key)]
    signature = rpc.w3.eth.sign(_sender(key), text="served")
    assert evm_message_signer(b"served", signature.hex()) == _sender(key)
