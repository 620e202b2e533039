"""An Ethereum JSON-RPC remote signer: Web3Signer's eth1 signing API over HTTPS with mTLS.

Tools that sign through a remote signer (ethers, web3.py, Foundry, rollup
batchers) call `eth_accounts`, `eth_signTransaction`, `eth_sign`,
`personal_sign` and `eth_signTypedData_v4` (and its unsuffixed alias). Each
call becomes a one-item SignBatch run by the same SigningPipeline as the gRPC
API, with the caller's own Identity: key grants, policy, approvals, budgets,
audit and idempotency are the pipeline's, not this module's.

Who calls: the TLS layer requires a client certificate issued by the gRPC
server's CA; its RFC 4514 subject names the identity exactly as for gRPC
(Authorizer.identify), and only service identities may call.

Idempotency: the request id of a call is derived from the caller and the
digest of the item, so sending the same call again (for example after the
approvers approved a held one) finds the same batch: it answers the stored
signature, or that the batch is still held. The same payload is therefore
signed once; a different nonce or message is a new request.

Bounds: the body size (jsonrpc.max_body_bytes, refused with HTTP 413 before it
is read), the number of calls in a JSON-RPC batch array, the worker threads
and the connections waiting for one, and an idle timeout per connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.evm import CHAINS, key_address
from custos.signer.edge import logs, requests
from custos.signer.edge.auth import Authorizer, Identity
from custos.signer.edge.config import JsonRpcConfig, TlsConfig
from custos.signer.edge.errors import (
    ERROR_KINDS,
    INTERNAL,
    BudgetExceeded,
    ConfigError,
    CustosError,
    FailedPrecondition,
    InProgress,
    PermissionDenied,
    PolicyDenied,
    Unauthenticated,
    Unavailable,
    kind_of,
    public_message,
)
from custos.signer.edge.requests import payload_digest
from custos.signer.store.base import KeyState, Store
from custos.signer.usecases.pipeline import SigningPipeline

log = logging.getLogger("custos.jsonrpc")

# JSON-RPC 2.0's own codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Server-defined codes (-32000 to -32099), one per outcome a caller acts on
# differently; those of errors come from their row in signer.edge.errors.ERROR_KINDS.
SERVER_ERROR = -32000
UNAUTHENTICATED = ERROR_KINDS[Unauthenticated].jsonrpc_code
PERMISSION_DENIED = ERROR_KINDS[PermissionDenied].jsonrpc_code
POLICY_DENIED = ERROR_KINDS[PolicyDenied].jsonrpc_code
APPROVAL_REQUIRED = -32004  # data.approval_id: approvers decide, then send the same call
OVER_LIMIT = ERROR_KINDS[BudgetExceeded].jsonrpc_code
UNAVAILABLE = ERROR_KINDS[Unavailable].jsonrpc_code  # retry later: nothing was signed
IN_PROGRESS = ERROR_KINDS[InProgress].jsonrpc_code  # another attempt is signing this payload
FAILED_PRECONDITION = ERROR_KINDS[FailedPrecondition].jsonrpc_code
REJECTED = -32011  # the approvers rejected this payload
EXPIRED = -32012  # the approval window ran out for this payload

# Deeper than any call needs (typed data is bounded by limits.typed_data_max_depth <= 64).
MAX_JSON_DEPTH = 100
# A client has this long to complete the TLS handshake (at most the idle timeout).
HANDSHAKE_SECONDS = 10.0
# The gRPC method whose roles a JSON-RPC signing call needs (signer/edge/auth.py RPC_ROLES).
SIGN_RPC = "/custos.v1.Signer/SignBatch"
# eth_sign and personal_sign name no chain; the message is judged as one for
# Ethereum on the key's network class (a personal_sign signature is valid on every
# EVM chain; the class is what the key may sign for).
MESSAGE_CHAIN_OF_CLASS = {"mainnet": 1, "testnet": 11155111}

_HEX = re.compile(r"0x[0-9a-fA-F]*")
_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TX_FIELDS = frozenset(
    {
        "from",
        "to",
        "gas",
        "gasLimit",
        "gasPrice",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "value",
        "data",
        "input",
        "nonce",
        "chainId",
        "type",
        "accessList",
    }
)
# The pipeline names an item's fields as in SignBatch; a JSON-RPC caller sent them
# under these names (longest prefix first).
_TX_FIELD_NAMES = {
    "items[0].key_id": "params[0].from",
    "items[0].evm.chain_id": "params[0].chainId",
    "items[0].evm.gas_limit": "params[0].gas",
    "items[0].evm.gas_price": "params[0].gasPrice",
    "items[0].evm.max_fee_per_gas": "params[0].maxFeePerGas",
    "items[0].evm.max_priority_fee_per_gas": "params[0].maxPriorityFeePerGas",
    "items[0].evm.access_list": "params[0].accessList",
    "items[0].evm.": "params[0].",
    "items[0].": "params[0].",
}


class RpcError(Exception):
    """A JSON-RPC error object: code, message (shown as is) and optional data."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data:
            error["data"] = self.data
        return error


def rpc_error_of(exc: BaseException, fields: Mapping[str, str] | None = None) -> RpcError:
    """The JSON-RPC error for an error; `fields` renames SignBatch field paths."""
    # A call is a one-item batch: "items[0]: " says nothing to a JSON-RPC caller.
    message = public_message(exc).removeprefix("items[0]: ")
    for prefix, name in sorted((fields or {}).items(), key=lambda kv: -len(kv[0])):
        if message.startswith(prefix):
            message = name + message[len(prefix) :]
            break
    details: Mapping[str, str] = getattr(exc, "details", None) or {}
    data = {k: v for k, v in details.items() if k != "item"}
    return RpcError(kind_of(exc).jsonrpc_code, message, data or None)


# -- parameter parsing --------------------------------------------------------


def _invalid(field: str, problem: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"{field}: {problem}")


def _quantity(field: str, value: object, bits: int = 256) -> int:
    """A JSON-RPC QUANTITY (0x hex); a JSON integer is taken too (some clients send them)."""
    if isinstance(value, bool):
        raise _invalid(field, "must be a 0x hex quantity")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _QUANTITY.fullmatch(value):
        number = int(value, 16)
    else:
        raise _invalid(field, "must be a 0x hex quantity")
    if not 0 <= number < 2**bits:
        raise _invalid(field, f"out of range (0 to 2^{bits} - 1)")
    return number


def _data(field: str, value: object) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) % 2:
        raise _invalid(field, "must be 0x-prefixed hex of whole bytes")
    return bytes.fromhex(value[2:])


def _address(field: str, value: object) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise _invalid(field, "must be a 0x address of 20 bytes")
    return value


def _params(params: object, names: tuple[str, ...]) -> list[object]:
    if not isinstance(params, list):
        raise _invalid("params", f"must be an array [{', '.join(names)}]")
    if len(params) != len(names):
        raise _invalid(
            "params", f"takes {len(names)} values [{', '.join(names)}], not {len(params)}"
        )
    return params


def evm_transaction(tx: object) -> tuple[str, pb.EvmTransaction]:
    """The sender and the SignBatch EVM item of an eth_signTransaction object.

    The type is the `type` field when given, else inferred from the fields
    present (EIP-1559 fees, an access list, or a legacy gas price). Fields this
    signer does not sign (blobs, authorization lists, anything unknown) are
    refused by name rather than ignored: what the caller sent is what is signed.
    """
    if not isinstance(tx, dict):
        raise _invalid("params[0]", "must be a transaction object")
    unknown = sorted(set(tx) - _TX_FIELDS)
    if unknown:
        raise _invalid(f"params[0].{unknown[0]}", "not supported by this signer")
    if "from" not in tx:
        raise _invalid("params[0].from", "required")
    sender = _address("params[0].from", tx["from"])
    for name in ("nonce", "chainId"):
        if tx.get(name) is None:
            raise _invalid(f"params[0].{name}", "required")
    if "gas" in tx and "gasLimit" in tx and tx["gas"] != tx["gasLimit"]:
        raise _invalid("params[0].gasLimit", "differs from gas")
    gas = tx.get("gas", tx.get("gasLimit"))
    if gas is None:
        raise _invalid("params[0].gas", "required")
    data = tx.get("data", tx.get("input"))
    if "data" in tx and "input" in tx and tx["data"] != tx["input"]:
        raise _invalid("params[0].input", "differs from data")
    out = pb.EvmTransaction(
        chain_id=_quantity("params[0].chainId", tx["chainId"], 64),
        nonce=_quantity("params[0].nonce", tx["nonce"], 64),
        gas_limit=_quantity("params[0].gas", gas, 64),
    )
    field = "params[0].data" if "data" in tx else "params[0].input"
    if data is not None:
        out.data = "0x" + _data(field, data).hex()
    to = tx.get("to")
    if to is not None:  # absent or null is a contract creation, which the item refuses
        out.to = _address("params[0].to", to)
    if tx.get("value") is not None:
        out.value = str(_quantity("params[0].value", tx["value"]))
    access_list = tx.get("accessList")
    _fees(tx, out, access_list is not None)
    if access_list is not None:
        out.access_list.extend(_access_list(access_list))
    return sender, out


def _fees(tx: dict[str, Any], out: pb.EvmTransaction, has_access_list: bool) -> None:
    """The type and fee fields: `type` when given, else what the fee fields present say."""
    fees_1559 = [n for n in ("maxFeePerGas", "maxPriorityFeePerGas") if tx.get(n) is not None]
    if tx.get("type") is not None:
        tx_type = _quantity("params[0].type", tx["type"], 8)
    else:
        tx_type = 2 if fees_1559 else 1 if has_access_list else 0
    if tx_type == 2:
        out.type = pb.EVM_TX_TYPE_EIP1559
        if tx.get("gasPrice") is not None:
            raise _invalid(
                "params[0].gasPrice", "not allowed in an EIP-1559 (type 0x2) transaction"
            )
        for name in ("maxFeePerGas", "maxPriorityFeePerGas"):
            if tx.get(name) is None:
                raise _invalid(
                    f"params[0].{name}", "required for an EIP-1559 (type 0x2) transaction"
                )
        out.max_fee_per_gas = str(_quantity("params[0].maxFeePerGas", tx["maxFeePerGas"]))
        out.max_priority_fee_per_gas = str(
            _quantity("params[0].maxPriorityFeePerGas", tx["maxPriorityFeePerGas"])
        )
    elif tx_type in (0, 1):
        out.type = pb.EVM_TX_TYPE_LEGACY if tx_type == 0 else pb.EVM_TX_TYPE_EIP2930
        if fees_1559:
            raise _invalid(
                f"params[0].{fees_1559[0]}", f"not allowed in a type {tx_type} transaction"
            )
        if tx.get("gasPrice") is None:
            raise _invalid("params[0].gasPrice", f"required for a type {tx_type} transaction")
        out.gas_price = str(_quantity("params[0].gasPrice", tx["gasPrice"]))
        if tx_type == 0 and has_access_list:
            raise _invalid("params[0].accessList", "not allowed in a legacy (type 0x0) transaction")
    else:
        raise _invalid(
            "params[0].type", "only 0x0 (legacy), 0x1 (EIP-2930) and 0x2 (EIP-1559) are supported"
        )


def _access_list(value: object) -> list[pb.EvmAccessListEntry]:
    if not isinstance(value, list):
        raise _invalid("params[0].accessList", "must be an array")
    entries = []
    for index, entry in enumerate(value):
        path = f"params[0].accessList[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"address", "storageKeys"}:
            raise _invalid(path, "must be an object {address, storageKeys}")
        keys = entry.get("storageKeys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise _invalid(f"{path}.storageKeys", "must be an array of 0x hex strings")
        entries.append(
            pb.EvmAccessListEntry(
                address=_address(f"{path}.address", entry.get("address")), storage_keys=keys
            )
        )
    return entries


def _message(field: str, value: object) -> bytes:
    """personal_sign's message: 0x hex is its bytes; other text is its UTF-8 (as MetaMask)."""
    if not isinstance(value, str):
        raise _invalid(field, "must be a string (0x hex, or text)")
    if _HEX.fullmatch(value) and len(value) % 2 == 0:
        return bytes.fromhex(value[2:])
    return value.encode("utf-8")


def _typed_data(field: str, value: object) -> tuple[str, int | None]:
    """The typed data as JSON text, and its domain's chain id when it names a known one."""
    if isinstance(value, str):
        text = value
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            raise _invalid(field, "not valid JSON") from None
    elif isinstance(value, dict):
        text, parsed = json.dumps(value, separators=(",", ":")), value
    else:
        raise _invalid(field, "must be an object {types, primaryType, domain, message}")
    domain = parsed.get("domain") if isinstance(parsed, dict) else None
    chain = domain.get("chainId") if isinstance(domain, dict) else None
    chain_id: int | None = None
    if isinstance(chain, int) and not isinstance(chain, bool):
        chain_id = chain
    elif isinstance(chain, str):
        try:
            chain_id = int(chain, 16) if chain.lower().startswith("0x") else int(chain)
        except ValueError:
            chain_id = None  # the item's own parser names the field
    return text, chain_id


# -- dispatch -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Account:
    key_id: str
    address: str  # EIP-55
    network_class: str
    enabled: bool


class JsonRpcSigner:
    """Turns JSON-RPC calls of one identity into one-item batches through the pipeline."""

    METHODS = (
        "eth_accounts",
        "eth_signTransaction",
        "eth_sign",
        "personal_sign",
        "eth_signTypedData_v4",
        "eth_signTypedData",
    )

    def __init__(self, pipeline: SigningPipeline, store: Store, max_batch_requests: int) -> None:
        self._pipeline = pipeline
        self._store = store
        self._max_batch = max_batch_requests
        # Public keys never change: each key's address is computed once.
        self._addresses: dict[str, str] = {}
        self._handlers: dict[str, Callable[[Identity, object], object]] = {
            "eth_accounts": self._accounts,
            "eth_signTransaction": self._sign_transaction,
            "eth_sign": self._eth_sign,
            "personal_sign": self._personal_sign,
            "eth_signTypedData_v4": self._sign_typed_data,
            "eth_signTypedData": self._sign_typed_data,
        }

    def handle(self, caller: Identity, body: bytes) -> dict[str, Any] | list[Any] | None:
        """The response document for a request body; None when every call was a notification."""
        if _deeper_than(body, MAX_JSON_DEPTH):
            message = f"parse error: JSON nested deeper than {MAX_JSON_DEPTH} levels"
            return _response(None, error=RpcError(PARSE_ERROR, message))
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return _response(None, error=RpcError(PARSE_ERROR, "parse error: the body is not JSON"))
        if isinstance(document, list):
            if not document:
                return _response(None, error=RpcError(INVALID_REQUEST, "an empty batch array"))
            if len(document) > self._max_batch:
                return _response(
                    None,
                    error=RpcError(
                        INVALID_REQUEST,
                        f"a batch of {len(document)} calls exceeds the limit of "
                        f"{self._max_batch} (jsonrpc.max_batch_requests)",
                    ),
                )
            answers = [self._call(caller, call) for call in document]
            replies = [a for a in answers if a is not None]
            return replies or None
        return self._call(caller, document)

    def _call(self, caller: Identity, call: object) -> dict[str, Any] | None:
        if not isinstance(call, dict):
            return _response(None, error=RpcError(INVALID_REQUEST, "a call must be a JSON object"))
        call_id = call.get("id")
        if isinstance(call_id, bool) or not isinstance(call_id, (str, int, type(None))):
            return _response(
                None, error=RpcError(INVALID_REQUEST, "id: must be a string or integer")
            )
        if call.get("jsonrpc") != "2.0":
            return _response(call_id, error=RpcError(INVALID_REQUEST, 'jsonrpc: must be "2.0"'))
        method = call.get("method")
        if not isinstance(method, str):
            return _response(call_id, error=RpcError(INVALID_REQUEST, "method: must be a string"))
        unknown = sorted(set(call) - {"jsonrpc", "method", "params", "id"})
        if unknown:
            return _response(
                call_id, error=RpcError(INVALID_REQUEST, f"{unknown[0]}: unknown member")
            )
        params = call.get("params", [])
        if not isinstance(params, (list, dict)):
            return _response(
                call_id, error=RpcError(INVALID_REQUEST, "params: must be an array or object")
            )
        notification = "id" not in call
        handler = self._handlers.get(method)
        try:
            if handler is None:
                raise RpcError(
                    METHOD_NOT_FOUND,
                    f"method {method[:64]!r} not found; this signer offers "
                    + ", ".join(self.METHODS),
                )
            result = handler(caller, params)
        except RpcError as exc:
            return None if notification else _response(call_id, error=exc)
        except Exception as exc:
            kind = kind_of(exc)
            if kind is INTERNAL:
                log.exception("json-rpc %s failed", method)
                error = RpcError(INTERNAL_ERROR, "internal error; see the server's log")
            else:
                if kind.public_message is not None:  # an outage: its own words for our log
                    log.warning("json-rpc %s unavailable: %s", method, exc)
                error = rpc_error_of(exc)
            return None if notification else _response(call_id, error=error)
        return None if notification else _response(call_id, result=result)

    # -- methods ----------------------------------------------------------------

    def _granted(self, caller: Identity) -> dict[str, _Account]:
        """Address (lower case) -> the caller's granted key with that address.

        An enabled key wins over a disabled one with the same address; a call
        naming a disabled key's address reaches the pipeline, which says so.
        """
        accounts: dict[str, _Account] = {}
        for key in self._store.list_keys():
            if not caller.may_use_key(key.key_id):
                continue
            address = self._addresses.get(key.key_id)
            if address is None:
                address = self._addresses[key.key_id] = key_address(key.public_key)
            enabled = key.state is KeyState.ENABLED
            if enabled or address.lower() not in accounts:
                accounts[address.lower()] = _Account(
                    key.key_id, address, key.network_class, enabled
                )
        return accounts

    def _accounts(self, caller: Identity, params: object) -> list[str]:
        if params not in ([], {}):
            raise _invalid("params", "eth_accounts takes no parameters")
        return [a.address for a in self._granted(caller).values() if a.enabled]

    def _key_of(self, caller: Identity, field: str, address: str) -> _Account:
        found = self._granted(caller).get(address.lower())
        if found is None:
            raise RpcError(
                PERMISSION_DENIED,
                f"{field}: {address} is not one of this identity's accounts (see eth_accounts)",
            )
        return found

    def _sign_transaction(self, caller: Identity, params: object) -> str:
        (tx,) = _params(params, ("transaction",))
        sender, evm = evm_transaction(tx)
        key_id = self._key_of(caller, "params[0].from", sender).key_id
        return self._sign(caller, pb.SignItem(key_id=key_id, evm=evm), _TX_FIELD_NAMES)

    def _eth_sign(self, caller: Identity, params: object) -> str:
        address, data = _params(params, ("address", "data"))
        return self._sign_message(
            caller,
            _address("params[0]", address),
            "params[0]",
            _data("params[1]", data),
            "params[1]",
        )

    def _personal_sign(self, caller: Identity, params: object) -> str:
        data, address = _params(params, ("data", "address"))
        return self._sign_message(
            caller,
            _address("params[1]", address),
            "params[1]",
            _message("params[0]", data),
            "params[0]",
        )

    def _sign_message(
        self, caller: Identity, address: str, address_field: str, message: bytes, field: str
    ) -> str:
        account = self._key_of(caller, address_field, address)
        item = pb.SignItem(
            key_id=account.key_id,
            evm_message=pb.EvmPersonalMessage(
                chain_id=MESSAGE_CHAIN_OF_CLASS.get(account.network_class, 1), message=message
            ),
        )
        names = {"items[0].key_id": address_field, "items[0].evm_message.message": field}
        return self._sign(caller, item, names)

    def _sign_typed_data(self, caller: Identity, params: object) -> str:
        address, document = _params(params, ("address", "typedData"))
        address = _address("params[0]", address)
        text, domain_chain = _typed_data("params[1]", document)
        account = self._key_of(caller, "params[0]", address)
        # A domain naming an unknown chain id is refused by the item's own check.
        chain_id = domain_chain if domain_chain in CHAINS else None
        item = pb.SignItem(
            key_id=account.key_id,
            evm_typed_data=pb.EvmTypedData(
                chain_id=chain_id or MESSAGE_CHAIN_OF_CLASS.get(account.network_class, 1),
                typed_data=text,
            ),
        )
        names = {
            "items[0].key_id": "params[0]",
            "items[0].evm_typed_data.typed_data": "params[1]",
            "items[0].evm_typed_data.chain_id": "params[1].domain.chainId",
        }
        return self._sign(caller, item, names)

    def _sign(self, caller: Identity, item: pb.SignItem, fields: Mapping[str, str]) -> str:
        """Run one item through the pipeline under a request id derived from the payload."""
        request = pb.SignBatchRequest(items=[item])
        request.request_id = request_id_for(caller.subject, payload_digest(request))
        try:
            response = self._pipeline.sign_batch(caller, requests.sign_batch(request))
        except Exception as exc:
            if kind_of(exc) is INTERNAL:
                raise
            raise rpc_error_of(exc, fields) from None
        if response.status == pb.BATCH_STATUS_SIGNED:
            return str(response.items[0].raw_tx)
        data: dict[str, Any] = {
            "approval_id": response.approval_id,
            "request_id": response.request_id,
        }
        if response.status == pb.BATCH_STATUS_PENDING_APPROVAL:
            if response.rules:
                data["rules"] = list(response.rules)
            raise RpcError(
                APPROVAL_REQUIRED,
                f"held for approval {response.approval_id}: once approved, send the same "
                "call again to receive the signature",
                data,
            )
        if response.status == pb.BATCH_STATUS_REJECTED:
            raise RpcError(REJECTED, f"approval {response.approval_id} was rejected", data)
        if response.status == pb.BATCH_STATUS_EXPIRED:
            raise RpcError(EXPIRED, f"approval {response.approval_id} expired unapproved", data)
        raise RpcError(SERVER_ERROR, "the batch ended in an unknown state; nothing was returned")


def _deeper_than(body: bytes, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` (strings skipped).

    The parser's own guard is the interpreter's recursion limit, which a process
    may have raised far enough for a deep body to exhaust the C stack.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # the common case, without a scan
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def request_id_for(subject: str, digest: bytes) -> str:
    """The stable request id of a JSON-RPC call: the same caller and payload, the same id."""
    return (
        "rpc-" + hashlib.sha256(b"custos-jsonrpc\0" + subject.encode() + b"\0" + digest).hexdigest()
    )


def _response(
    call_id: object, *, result: object = None, error: RpcError | None = None
) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "id": call_id, "error": error.to_json()}
    return {"jsonrpc": "2.0", "id": call_id, "result": result}


# -- HTTPS --------------------------------------------------------------------------


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """Server TLS that requires a client certificate from the gRPC server's CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
        context.load_verify_locations(cafile=str(tls.ca_cert))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"jsonrpc: cannot load the TLS files named in [tls]: {exc}") from exc
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as HTTP clients' sessions expect
    server: _HttpsServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("json-rpc %s: " + format, self.client_address[0], *args)

    def _send(self, status: HTTPStatus, document: object, close: bool = False) -> None:
        body = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        if document is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # A kept-alive connection holds a worker while idle: let it go when others wait.
        if close or self.server.crowded():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: HTTPStatus, code: int, message: str) -> None:
        # Refused before the body is read: the connection cannot be reused.
        self._send(status, _response(None, error=RpcError(code, message)), close=True)

    def do_GET(self) -> None:
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, INVALID_REQUEST, "JSON-RPC calls are POSTed")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding"):
            self._refuse(
                HTTPStatus.LENGTH_REQUIRED, INVALID_REQUEST, "send the body with a Content-Length"
            )
            return
        length_text = self.headers.get("Content-Length", "")
        if not length_text.isdigit():
            self._refuse(HTTPStatus.LENGTH_REQUIRED, INVALID_REQUEST, "Content-Length required")
            return
        length, limit = int(length_text), self.server.max_body_bytes
        if length > limit:
            self._refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                INVALID_REQUEST,
                f"a body of {length} bytes exceeds the limit of {limit} (jsonrpc.max_body_bytes)",
            )
            return
        try:
            caller = self.server.identify(self.connection)
        except CustosError as exc:
            self._send(HTTPStatus.FORBIDDEN, _response(None, error=rpc_error_of(exc)), close=True)
            return
        try:
            body = self.rfile.read(length)
        except OSError:  # a timeout or a reset: no request to answer
            self.close_connection = True
            return
        if len(body) < length:
            self.close_connection = True
            return
        # A fresh context per request, as at the gRPC edge: a worker thread serves many.
        logs.context.set({"method": "jsonrpc", "caller": caller.subject})
        answer = self.server.signer.handle(caller, body)
        if answer is None:
            self._send(HTTPStatus.NO_CONTENT, None)
        else:
            self._send(HTTPStatus.OK, answer)


class _HttpsServer(HTTPServer):
    """HTTPServer whose connections are served by a bounded pool of threads.

    The TLS handshake runs in the worker (with the idle timeout), not in the
    accepting thread, so a slow or silent client cannot stop others connecting;
    connections beyond the workers and their queue are closed at once.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext,
        config: JsonRpcConfig,
        authorizer: Authorizer,
        signer: JsonRpcSigner,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.context = context
        self.authorizer = authorizer
        self.signer = signer
        self.max_body_bytes = config.max_body_bytes
        self.idle_timeout = config.idle_timeout_seconds
        self._workers = ThreadPoolExecutor(config.threads, thread_name_prefix="custos-jsonrpc")
        self._threads = config.threads
        self._slots = threading.BoundedSemaphore(config.threads * 2)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def identify(self, connection: socket.socket) -> Identity:
        assert isinstance(connection, ssl.SSLSocket)
        der = connection.getpeercert(binary_form=True)
        pem = ssl.DER_cert_to_PEM_cert(der).encode() if der else None
        identity = self.authorizer.identify(pem)
        self.authorizer.authorize(identity, SIGN_RPC)
        return identity

    def crowded(self) -> bool:
        """More connections than workers: some are waiting for a worker."""
        with self._lock:
            return len(self._open) > self._threads

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("json-rpc: all workers busy; closing a new connection")
            self.shutdown_request(request)
            return
        with self._lock:
            self._open.add(request)
        self._workers.submit(self._serve, request, client_address)

    def _serve(self, raw: socket.socket, client_address: Any) -> None:
        connection: socket.socket = raw
        try:
            raw.settimeout(min(self.idle_timeout, HANDSHAKE_SECONDS))
            try:
                connection = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                # No client certificate, one from another CA, or not TLS at all.
                log.info("json-rpc: TLS handshake refused from %s: %s", client_address[0], exc)
                return
            connection.settimeout(self.idle_timeout)
            with self._lock:  # the TLS socket now owns the connection: stop() shuts it
                self._open.discard(raw)
                self._open.add(connection)
            self.finish_request(connection, client_address)
        except Exception:
            log.exception("json-rpc: connection from %s failed", client_address[0])
        finally:
            with self._lock:
                self._open.discard(raw)
                self._open.discard(connection)
            self.shutdown_request(connection)
            self._slots.release()

    def close_connections(self) -> None:
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._workers.shutdown(wait=True, cancel_futures=True)


class JsonRpcServer:
    """The HTTPS listener of the JSON-RPC signer, on its own port."""

    def __init__(
        self,
        config: JsonRpcConfig,
        tls: TlsConfig,
        authorizer: Authorizer,
        pipeline: SigningPipeline,
        store: Store,
    ) -> None:
        context = tls_context(tls)
        signer = JsonRpcSigner(pipeline, store, config.max_batch_requests)
        try:
            self._http = _HttpsServer(
                _split_listen(config.listen), context, config, authorizer, signer
            )
        except OSError as exc:
            raise ConfigError(
                f"jsonrpc.listen: cannot listen on {config.listen}: {exc.strerror}; "
                "stop what uses it or choose another jsonrpc.listen"
            ) from exc
        self.port: int = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.5,), name="custos-jsonrpc-accept", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._http.shutdown()
        self._http.server_close()
        self._http.close_connections()
