"""The edge of signing: SignBatch requests decoded from protobuf into frozen values.

The servicers (signer/edge/services.py, signer/edge/jsonrpc.py) decode each request here,
once; the pipeline, the approval desk and the chain adapters see only the
values of signer/chains/items.py. Decoding is total and judges nothing, so
every error still comes from the step that finds it, naming the field, in the
order the pipeline checks (request id, grants, keys, then each item).

Protobuf bytes stay only as the stored forms: a held batch is kept as its
request's deterministic encoding, decoded here again when the approval desk
takes it up, and `payload_digest` (idempotency) is over that encoding.
"""

from __future__ import annotations

import hashlib

from google.protobuf.message import DecodeError, Message

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains import items
from custos.signer.edge.errors import InvalidRequest


def payload_digest(request: pb.SignBatchRequest) -> bytes:
    """SHA-256 of the items in deterministic protobuf encoding: what idempotency compares."""
    items_only = pb.SignBatchRequest(items=request.items)
    return hashlib.sha256(items_only.SerializeToString(deterministic=True)).digest()


def sign_batch(request: pb.SignBatchRequest) -> items.SignBatch:
    """A received request as the pipeline takes it."""
    return items.SignBatch(
        request_id=request.request_id,
        items=tuple(sign_item(item) for item in request.items),
        encoded=request.SerializeToString(deterministic=True),
        payload_digest=payload_digest(request),
    )


def stored_batch(encoded: bytes) -> items.SignBatch:
    """A held batch from its stored bytes; InvalidRequest when they do not decode."""
    try:
        request = pb.SignBatchRequest.FromString(encoded)
    except DecodeError:
        raise InvalidRequest("the stored request does not decode") from None
    return items.SignBatch(
        request_id=request.request_id,
        items=tuple(sign_item(item) for item in request.items),
        encoded=encoded,
        payload_digest=payload_digest(request),
    )


def sign_item(item: pb.SignItem) -> items.SignItem:
    kind = item.WhichOneof("tx")
    hd = None
    if item.HasField("hd"):
        ref = item.hd
        hd = items.HdKeyRef(ref.wallet_id, ref.account, ref.change, ref.index, ref.purpose)
    return items.SignItem(item.key_id, transaction(getattr(item, kind)) if kind else None, hd)


def transaction(message: Message) -> items.Transaction:
    """One message of the SignItem `tx` oneof as its domain value."""
    if isinstance(message, pb.EvmTransaction):
        return _evm(message)
    if isinstance(message, pb.BitcoinTransaction):
        return _bitcoin(message)
    if isinstance(message, pb.TronTransaction):
        return _tron(message)
    if isinstance(message, pb.BitcoinPsbt):
        return items.BitcoinPsbt(message.network, message.psbt, message.finalize)
    if isinstance(message, pb.EvmPersonalMessage):
        return items.EvmPersonalMessage(message.chain_id, message.message, message.ByteSize())
    if isinstance(message, pb.EvmTypedData):
        return items.EvmTypedData(message.chain_id, message.typed_data, message.ByteSize())
    if isinstance(message, pb.TronMessage):
        return items.TronMessage(message.network, message.message, message.ByteSize())
    if isinstance(message, pb.BitcoinMessage):
        return items.BitcoinMessage(
            message.network, message.address_type, message.message, message.ByteSize()
        )
    raise TypeError(f"not a SignItem transaction message: {type(message).__name__}")


def _bitcoin(tx: pb.BitcoinTransaction) -> items.BitcoinTransaction:
    return items.BitcoinTransaction(
        network=tx.network,
        version=tx.version,
        lock_time=tx.lock_time,
        inputs=tuple(
            items.BitcoinInput(
                txid=i.txid,
                vout=i.vout,
                value=i.value,
                script_type=i.script_type,
                sequence=i.sequence if i.HasField("sequence") else None,
                prev_tx=i.prev_tx,
            )
            for i in tx.inputs
        ),
        outputs=tuple(items.BitcoinOutput(o.address, o.value) for o in tx.outputs),
        wire_size=tx.ByteSize(),
    )


_EVM_TX_TYPES = {
    pb.EVM_TX_TYPE_LEGACY: items.EvmTxType.LEGACY,
    pb.EVM_TX_TYPE_EIP2930: items.EvmTxType.EIP2930,
    pb.EVM_TX_TYPE_EIP1559: items.EvmTxType.EIP1559,
}


def _evm(tx: pb.EvmTransaction) -> items.EvmTransaction:
    return items.EvmTransaction(
        chain_id=tx.chain_id,
        # An open proto3 enum may carry any number; the adapter refuses UNSPECIFIED.
        type=_EVM_TX_TYPES.get(tx.type, items.EvmTxType.UNSPECIFIED),
        nonce=tx.nonce,
        to=tx.to,
        value=tx.value,
        data=tx.data,
        gas_limit=tx.gas_limit,
        gas_price=tx.gas_price,
        max_fee_per_gas=tx.max_fee_per_gas,
        max_priority_fee_per_gas=tx.max_priority_fee_per_gas,
        access_list=tuple(
            items.EvmAccessListEntry(e.address, tuple(e.storage_keys)) for e in tx.access_list
        ),
        wire_size=tx.ByteSize(),
    )


def _tron_contract(tx: pb.TronTransaction) -> items.TronContract | None:
    which = tx.WhichOneof("contract")
    if which == "trx_transfer":
        trx = tx.trx_transfer
        return items.TronTrxTransfer(trx.to, trx.amount)
    if which == "trc20_transfer":
        trc20 = tx.trc20_transfer
        return items.TronTrc20Transfer(trc20.contract, trc20.to, trc20.amount)
    if which == "freeze_balance_v2":
        freeze = tx.freeze_balance_v2
        return items.TronFreezeBalanceV2(freeze.amount, freeze.resource)
    if which == "unfreeze_balance_v2":
        unfreeze = tx.unfreeze_balance_v2
        return items.TronUnfreezeBalanceV2(unfreeze.amount, unfreeze.resource)
    if which == "delegate_resource":
        d = tx.delegate_resource
        return items.TronDelegateResource(d.receiver, d.amount, d.resource, d.lock, d.lock_period)
    if which == "undelegate_resource":
        u = tx.undelegate_resource
        return items.TronUnDelegateResource(u.receiver, u.amount, u.resource)
    if which == "withdraw_expire_unfreeze":
        return items.TronWithdrawExpireUnfreeze()
    if which == "vote_witness":
        votes = tx.vote_witness.votes
        return items.TronVoteWitness(tuple(items.TronVote(v.witness, v.count) for v in votes))
    return None


def _tron(tx: pb.TronTransaction) -> items.TronTransaction:
    return items.TronTransaction(
        network=tx.network,
        contract=_tron_contract(tx),
        ref_block_bytes=tx.ref_block_bytes,
        ref_block_hash=tx.ref_block_hash,
        expiration=tx.expiration,
        timestamp=tx.timestamp,
        fee_limit=tx.fee_limit,
        wire_size=tx.ByteSize(),
    )
