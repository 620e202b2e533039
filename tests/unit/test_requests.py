"""The edge's decoding: every SignItem message becomes its frozen value, field for field.

Each message is built with every field set to a value other than its default,
and compared with its decoded value through the proto descriptors, so a field
added to signer.proto without its twin in signer/chains/items.py fails here.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import Any

import pytest
from google.protobuf.message import Message

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains import items
from custos.signer.edge import requests
from custos.signer.edge.errors import InvalidRequest

# Fields of the domain values that the proto messages do not have.
_EDGE_ONLY = {"wire_size"}

_TRON_CONTRACTS = {
    "trx_transfer": pb.TronTrxTransfer(to="T1", amount=5),
    "trc20_transfer": pb.TronTrc20Transfer(contract="T2", to="T3", amount="6"),
    "freeze_balance_v2": pb.TronFreezeBalanceV2(amount=7, resource="ENERGY"),
    "unfreeze_balance_v2": pb.TronUnfreezeBalanceV2(amount=8, resource="BANDWIDTH"),
    "delegate_resource": pb.TronDelegateResource(
        receiver="T4", amount=9, resource="ENERGY", lock=True, lock_period=10
    ),
    "undelegate_resource": pb.TronUnDelegateResource(receiver="T5", amount=11, resource="ENERGY"),
    "withdraw_expire_unfreeze": pb.TronWithdrawExpireUnfreeze(),
    "vote_witness": pb.TronVoteWitness(
        votes=[pb.TronVote(witness="T6", count=12), pb.TronVote(witness="T7", count=13)]
    ),
}


def _tron(contract: str) -> pb.TronTransaction:
    tx = pb.TronTransaction(
        network="nile",
        ref_block_bytes="1a2b",
        ref_block_hash="0011223344556677",
        expiration=14,
        timestamp=15,
        fee_limit=16,
    )
    getattr(tx, contract).CopyFrom(_TRON_CONTRACTS[contract])
    return tx


MESSAGES: list[Message] = [
    pb.BitcoinTransaction(
        network="testnet",
        version=2,
        lock_time=3,
        inputs=[
            pb.BitcoinInput(
                txid="ab" * 32, vout=1, value=4, script_type="p2wpkh", sequence=5, prev_tx=b"\x06"
            ),
            pb.BitcoinInput(txid="cd" * 32, vout=2, value=7, script_type="p2pkh", prev_tx=b"\x08"),
        ],
        outputs=[pb.BitcoinOutput(address="tb1q", value=9)],
    ),
    pb.BitcoinPsbt(network="signet", psbt=b"psbt\xff", finalize=True),
    pb.EvmTransaction(
        chain_id=17000,
        type=pb.EVM_TX_TYPE_EIP2930,
        nonce=1,
        to="0x35",
        value="2",
        data="0x03",
        gas_limit=4,
        gas_price="5",
        max_fee_per_gas="6",
        max_priority_fee_per_gas="7",
        access_list=[pb.EvmAccessListEntry(address="0x08", storage_keys=["0x09", "0x0a"])],
    ),
    *(_tron(contract) for contract in _TRON_CONTRACTS),
    pb.EvmPersonalMessage(chain_id=1, message=b"hi"),
    pb.EvmTypedData(chain_id=56, typed_data="{}"),
    pb.TronMessage(network="shasta", message=b"\x00"),
    pb.BitcoinMessage(network="regtest", address_type="p2pkh", message=b"m"),
]


def _same(message: Message, value: Any, path: str) -> None:
    """`value` holds exactly what `message` does, field by field."""
    fields = {f.name for f in dataclasses.fields(value)} - _EDGE_ONLY
    names = set()
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.name == "contract":
            names.add(oneof.name)
            if message.WhichOneof(oneof.name) == field.name:
                assert value.contract.field == field.name, path
                _same(getattr(message, field.name), value.contract, f"{path}.{field.name}")
            continue
        names.add(field.name)
        got = getattr(value, field.name)
        sent = getattr(message, field.name)
        where = f"{path}.{field.name}"
        if field.is_repeated:
            assert isinstance(got, tuple), where
            assert len(got) == len(sent), where
            for i, (one_sent, one_got) in enumerate(zip(sent, got, strict=True)):
                if isinstance(one_sent, Message):
                    _same(one_sent, one_got, f"{where}[{i}]")
                else:
                    assert one_got == one_sent, where
        elif field.has_presence and oneof is not None and not message.HasField(field.name):
            assert got is None, where  # `optional`: unset stays distinguishable
        elif isinstance(got, enum.Enum):
            assert got.value == sent, where
        else:
            assert got == sent, where
    assert names == fields, f"{path}: the domain value and the message differ in fields"


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_field_is_decoded(message: Message) -> None:
    value = requests.transaction(message)
    assert type(value).__name__ == type(message).__name__
    _same(message, value, type(value).kind)
    assert getattr(value, "wire_size", message.ByteSize()) == message.ByteSize()


def test_an_unset_sequence_and_an_unset_contract_decode_to_none() -> None:
    value = requests.transaction(pb.BitcoinTransaction(inputs=[pb.BitcoinInput()]))
    assert isinstance(value, items.BitcoinTransaction)
    assert value.inputs[0].sequence is None
    tron = requests.transaction(pb.TronTransaction(network="nile"))
    assert isinstance(tron, items.TronTransaction)
    assert tron.contract is None
    assert requests.sign_item(pb.SignItem(key_id="k")) == items.SignItem("k", None)


def test_each_kind_is_the_name_of_its_field_in_the_sign_item_oneof() -> None:
    oneof = pb.SignItem.DESCRIPTOR.oneofs_by_name["tx"]
    kinds = {type(requests.transaction(m)).kind for m in MESSAGES}
    assert kinds == {field.name for field in oneof.fields}
    for field in oneof.fields:
        item = pb.SignItem(key_id="k")
        getattr(item, field.name).SetInParent()
        decoded = requests.sign_item(item).tx
        assert decoded is not None
        assert decoded.kind == field.name


def test_the_stored_forms_are_the_deterministic_encoding() -> None:
    request = pb.SignBatchRequest(
        request_id="r", items=[pb.SignItem(key_id="k", evm=pb.EvmTransaction(chain_id=1))]
    )
    batch = requests.sign_batch(request)
    assert batch.encoded == request.SerializeToString(deterministic=True)
    # Idempotency compares the items only: the same items under another id match.
    items_only = pb.SignBatchRequest(items=request.items).SerializeToString(deterministic=True)
    assert batch.payload_digest == hashlib.sha256(items_only).digest()
    assert requests.stored_batch(batch.encoded) == batch
    with pytest.raises(InvalidRequest, match="the stored request does not decode"):
        requests.stored_batch(b"\xff\xff")
