"""Bad input gets the right status and a message naming the problem; nothing is stored."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
import pytest

from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import RunningServer

pytestmark = pytest.mark.integration

# EIP-55's first example, 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed, with one letter's case flipped.
EIP55_EXAMPLE_WITH_ONE_CASE_FLIPPED = "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

Mutation = Callable[[keys_pb2.Key], list[pb.SignItem]]


@pytest.fixture(scope="module")
def key(server: RunningServer) -> keys_pb2.Key:
    return server.create_key(f"bad-{uuid.uuid4().hex[:8]}")


def _evm(key: keys_pb2.Key, **fields: object) -> list[pb.SignItem]:
    item = builders.evm_item(key)
    for name, value in fields.items():
        setattr(item.evm, name, value)
    return [builders.bitcoin_item(key), item]  # the bad item is second: index 1


def _btc_output(key: keys_pb2.Key, address: str, value: int = 1000) -> list[pb.SignItem]:
    item = builders.bitcoin_item(key)
    item.bitcoin.outputs[0].address = address
    item.bitcoin.outputs[0].value = value
    return [item]


CASES: list[tuple[str, Mutation, grpc.StatusCode, str]] = [
    (
        "no tx",
        lambda k: [pb.SignItem(key_id=k.key_id)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].tx",
    ),
    (
        "wrong chain id",
        lambda k: _evm(k, chain_id=424242),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.chain_id",
    ),
    (
        "btc network",
        lambda k: [_set(builders.bitcoin_item(k), "network", "moonnet")],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.network",
    ),
    (
        "bad evm address",
        lambda k: _evm(k, to="0x1234"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.to",
    ),
    (
        "bad evm checksum",
        lambda k: _evm(k, to=EIP55_EXAMPLE_WITH_ONE_CASE_FLIPPED),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.to",
    ),
    (
        "bad btc checksum",
        lambda k: _btc_output(k, builders.BTC_TESTNET_DEST[:-1] + "y"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.outputs[0].address",
    ),
    (
        "btc mainnet addr on testnet",
        lambda k: _btc_output(k, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.outputs[0].address",
    ),
    (
        "negative evm value",
        lambda k: _evm(k, value="-1"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.value",
    ),
    (
        "overflowing evm value",
        lambda k: _evm(k, value=str(2**256)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.value",
    ),
    (
        "negative btc value",
        lambda k: _btc_output(k, builders.BTC_TESTNET_DEST, -5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.outputs[0].value",
    ),
    (
        "btc over supply",
        lambda k: _btc_output(k, builders.BTC_TESTNET_DEST, 21_000_001 * 10**8),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.outputs[0].value",
    ),
    (
        "negative tron amount",
        lambda k: [_tron_amount(k, -1)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].tron.trx_transfer.amount",
    ),
    (
        "garbage calldata",
        lambda k: _evm(k, data="0xzz"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.data",
    ),
    (
        "garbage txid",
        lambda k: [_set_input(builders.bitcoin_item(k), "txid", "\x00\xff" * 32)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.inputs[0].txid",
    ),
    # Issue 9: Bitcoin inputs are proven by their previous transactions.
    (
        "btc input without prev_tx",
        lambda k: [_set_input(builders.bitcoin_item(k), "prev_tx", b"")],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.inputs[0].prev_tx",
    ),
    (
        "btc prev_tx of another transaction",
        lambda k: [_swap_prev_tx(builders.bitcoin_item(k))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.inputs[0].prev_tx",
    ),
    (
        "btc understated p2pkh value",
        lambda k: [_set_input(builders.bitcoin_item(k, script_types=("p2pkh",)), "value", 40_000)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.inputs[0].value",
    ),
    (
        "btc lock time a year ahead",
        lambda k: [_set(builders.bitcoin_item(k), "lock_time", int(time.time()) + 366 * 86_400)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.lock_time",
    ),
    # Issue 10: every item's size and work are bounded.
    (
        "evm gas limit 2^64-1",
        lambda k: _evm(k, gas_limit=2**64 - 1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.gas_limit",
    ),
    (
        "evm max fee 2^256-1",
        lambda k: _evm(k, max_fee_per_gas=str(2**256 - 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.max_fee_per_gas",
    ),
    (
        "evm access list beyond its gas",
        lambda k: [builders.bitcoin_item(k), _access_list(builders.evm_item(k), 100)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.gas_limit",
    ),
    (
        "evm access list over the limit",
        lambda k: [builders.bitcoin_item(k), _access_list(builders.evm_item(k), 5000)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[1].evm.access_list",
    ),
    (
        "tron expiration a week ahead",
        lambda k: [_tron_times(k, int(time.time() * 1000) + 7 * 86_400_000)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].tron.expiration",
    ),
    (
        "unknown key",
        lambda k: [builders.evm_item(_key("nope-nope"))],
        grpc.StatusCode.NOT_FOUND,
        "items[0].key_id",
    ),
    (
        "malformed key id",
        lambda k: [builders.evm_item(_key("Bad Key!"))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].key_id",
    ),
]


def _key(key_id: str) -> keys_pb2.Key:
    return keys_pb2.Key(key_id=key_id)


def _set(item: pb.SignItem, field: str, value: object) -> pb.SignItem:
    setattr(getattr(item, item.WhichOneof("tx") or ""), field, value)
    return item


def _set_input(item: pb.SignItem, field: str, value: object) -> pb.SignItem:
    setattr(item.bitcoin.inputs[0], field, value)
    return item


def _swap_prev_tx(item: pb.SignItem) -> pb.SignItem:
    first, second = item.bitcoin.inputs[0], item.bitcoin.inputs[1]
    first.prev_tx = second.prev_tx
    return item


def _access_list(item: pb.SignItem, keys: int) -> pb.SignItem:
    # 60,000 gas pays for about 20 storage keys (1,900 gas each).
    item.evm.access_list.add(address=builders.EVM_DEST, storage_keys=["0x" + "11" * 32] * keys)
    return item


def _tron_times(key: keys_pb2.Key, expiration: int) -> pb.SignItem:
    item = builders.tron_item(key)
    item.tron.timestamp = expiration - 60_000
    item.tron.expiration = expiration
    return item


def _tron_amount(key: keys_pb2.Key, amount: int) -> pb.SignItem:
    item = builders.tron_item(key)
    item.tron.trx_transfer.amount = amount
    return item


def _audit_mentions(server: RunningServer, request_id: str) -> list[str]:
    records = server.server.store.audit_records(0, 1_000_000)  # type: ignore[attr-defined]
    return [r.event.kind for r in records if r.event.fields.get("request_id") == request_id]


@pytest.mark.parametrize(("name", "mutate", "code", "names"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    server: RunningServer,
    key: keys_pb2.Key,
    name: str,
    mutate: Mutation,
    code: grpc.StatusCode,
    names: str,
) -> None:
    rid = f"bad-{uuid.uuid4().hex}"
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignBatch(pb.SignBatchRequest(request_id=rid, items=mutate(key)))
    assert info.value.code() == code, info.value.details()
    assert names in info.value.details()
    # Nothing stored: no batch record, no authorization in the audit log.
    with pytest.raises(grpc.RpcError) as missing:
        server.signer().GetBatch(pb.GetBatchRequest(request_id=rid))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "sign.authorized" not in _audit_mentions(server, rid)


def test_oversized_and_empty_batches(server: RunningServer, key: keys_pb2.Key) -> None:
    limit = server.env.config().server.max_batch_items
    items = [builders.evm_item(key, nonce=i) for i in range(limit + 1)]
    for batch, text in ((items, f"exceed the limit of {limit}"), ([], "at least one item")):
        with pytest.raises(grpc.RpcError) as info:
            server.signer().SignBatch(pb.SignBatchRequest(request_id="r-big", items=batch))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert text in info.value.details()


@pytest.mark.parametrize("request_id", ["", " spaces ", "x" * 200, "ünïcode"])
def test_bad_request_ids(server: RunningServer, key: keys_pb2.Key, request_id: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignBatch(
            pb.SignBatchRequest(request_id=request_id, items=[builders.evm_item(key)])
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in info.value.details()


def test_garbage_bytes_are_invalid_argument(server: RunningServer) -> None:
    channel = server.channel("payments")
    raw = channel.unary_unary("/custos.v1.Signer/SignBatch")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff\xff garbage \x00\x01")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in info.value.details()


def test_disabled_key_refuses_then_enabled_signs(server: RunningServer) -> None:
    key = server.create_key(f"toggle-{uuid.uuid4().hex[:8]}")
    officer = server.keys()
    officer.DisableKey(keys_pb2.SetKeyStateRequest(key_id=key.key_id))
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignBatch(
            pb.SignBatchRequest(request_id=f"d-{uuid.uuid4().hex}", items=[builders.evm_item(key)])
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "disabled" in info.value.details()
    assert key.key_id in info.value.details()
    officer.EnableKey(keys_pb2.SetKeyStateRequest(key_id=key.key_id))
    response = server.signer().SignBatch(
        pb.SignBatchRequest(request_id=f"e-{uuid.uuid4().hex}", items=[builders.evm_item(key)])
    )
    assert len(response.items) == 1


def test_key_not_granted_is_permission_denied(server: RunningServer, key: keys_pb2.Key) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.signer("limited").SignBatch(
            pb.SignBatchRequest(request_id="x-1", items=[builders.evm_item(key)])
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "items[0].key_id" in info.value.details()


def test_batch_preparation_work_is_bounded(server: RunningServer, key: keys_pb2.Key) -> None:
    # Issue 10: legacy sighash work grows with the square of the inputs; a large
    # request of such items held the interpreter for minutes before policy ran.
    heavy = builders.bitcoin_item(key, "heavy", script_types=("p2pkh",) * 300)
    rid = f"heavy-{uuid.uuid4().hex}"
    items = [heavy] * 80  # ~9 million units each, 400 million per batch
    with pytest.raises(grpc.RpcError) as info:
        server.signer().SignBatch(pb.SignBatchRequest(request_id=rid, items=items))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limits.max_batch_work_units" in info.value.details()
    index = int(info.value.details().split("]")[0].removeprefix("items["))
    # Refused at the item that crossed the budget, not after preparing all 80.
    assert 20 <= index < 79
    assert "sign.authorized" not in _audit_mentions(server, rid)
