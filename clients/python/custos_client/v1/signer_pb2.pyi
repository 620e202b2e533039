from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvmTxType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVM_TX_TYPE_UNSPECIFIED: _ClassVar[EvmTxType]
    EVM_TX_TYPE_LEGACY: _ClassVar[EvmTxType]
    EVM_TX_TYPE_EIP2930: _ClassVar[EvmTxType]
    EVM_TX_TYPE_EIP1559: _ClassVar[EvmTxType]

class BatchStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_STATUS_UNSPECIFIED: _ClassVar[BatchStatus]
    BATCH_STATUS_SIGNED: _ClassVar[BatchStatus]
    BATCH_STATUS_PENDING_APPROVAL: _ClassVar[BatchStatus]
    BATCH_STATUS_REJECTED: _ClassVar[BatchStatus]
    BATCH_STATUS_EXPIRED: _ClassVar[BatchStatus]
EVM_TX_TYPE_UNSPECIFIED: EvmTxType
EVM_TX_TYPE_LEGACY: EvmTxType
EVM_TX_TYPE_EIP2930: EvmTxType
EVM_TX_TYPE_EIP1559: EvmTxType
BATCH_STATUS_UNSPECIFIED: BatchStatus
BATCH_STATUS_SIGNED: BatchStatus
BATCH_STATUS_PENDING_APPROVAL: BatchStatus
BATCH_STATUS_REJECTED: BatchStatus
BATCH_STATUS_EXPIRED: BatchStatus

class SignBatchRequest(_message.Message):
    __slots__ = ("request_id", "items")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    items: _containers.RepeatedCompositeFieldContainer[SignItem]
    def __init__(self, request_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[SignItem, _Mapping]]] = ...) -> None: ...

class SignItem(_message.Message):
    __slots__ = ("key_id", "hd", "bitcoin", "evm", "tron", "evm_message", "evm_typed_data", "tron_message", "bitcoin_message", "bitcoin_psbt")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    HD_FIELD_NUMBER: _ClassVar[int]
    BITCOIN_FIELD_NUMBER: _ClassVar[int]
    EVM_FIELD_NUMBER: _ClassVar[int]
    TRON_FIELD_NUMBER: _ClassVar[int]
    EVM_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EVM_TYPED_DATA_FIELD_NUMBER: _ClassVar[int]
    TRON_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BITCOIN_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BITCOIN_PSBT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    hd: HdKeyRef
    bitcoin: BitcoinTransaction
    evm: EvmTransaction
    tron: TronTransaction
    evm_message: EvmPersonalMessage
    evm_typed_data: EvmTypedData
    tron_message: TronMessage
    bitcoin_message: BitcoinMessage
    bitcoin_psbt: BitcoinPsbt
    def __init__(self, key_id: _Optional[str] = ..., hd: _Optional[_Union[HdKeyRef, _Mapping]] = ..., bitcoin: _Optional[_Union[BitcoinTransaction, _Mapping]] = ..., evm: _Optional[_Union[EvmTransaction, _Mapping]] = ..., tron: _Optional[_Union[TronTransaction, _Mapping]] = ..., evm_message: _Optional[_Union[EvmPersonalMessage, _Mapping]] = ..., evm_typed_data: _Optional[_Union[EvmTypedData, _Mapping]] = ..., tron_message: _Optional[_Union[TronMessage, _Mapping]] = ..., bitcoin_message: _Optional[_Union[BitcoinMessage, _Mapping]] = ..., bitcoin_psbt: _Optional[_Union[BitcoinPsbt, _Mapping]] = ...) -> None: ...

class HdKeyRef(_message.Message):
    __slots__ = ("wallet_id", "account", "change", "index", "purpose")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    account: int
    change: int
    index: int
    purpose: int
    def __init__(self, wallet_id: _Optional[str] = ..., account: _Optional[int] = ..., change: _Optional[int] = ..., index: _Optional[int] = ..., purpose: _Optional[int] = ...) -> None: ...

class BitcoinTransaction(_message.Message):
    __slots__ = ("network", "version", "lock_time", "inputs", "outputs")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOCK_TIME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    network: str
    version: int
    lock_time: int
    inputs: _containers.RepeatedCompositeFieldContainer[BitcoinInput]
    outputs: _containers.RepeatedCompositeFieldContainer[BitcoinOutput]
    def __init__(self, network: _Optional[str] = ..., version: _Optional[int] = ..., lock_time: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[BitcoinInput, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[BitcoinOutput, _Mapping]]] = ...) -> None: ...

class BitcoinInput(_message.Message):
    __slots__ = ("txid", "vout", "value", "script_type", "sequence", "prev_tx")
    TXID_FIELD_NUMBER: _ClassVar[int]
    VOUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PREV_TX_FIELD_NUMBER: _ClassVar[int]
    txid: str
    vout: int
    value: int
    script_type: str
    sequence: int
    prev_tx: bytes
    def __init__(self, txid: _Optional[str] = ..., vout: _Optional[int] = ..., value: _Optional[int] = ..., script_type: _Optional[str] = ..., sequence: _Optional[int] = ..., prev_tx: _Optional[bytes] = ...) -> None: ...

class BitcoinOutput(_message.Message):
    __slots__ = ("address", "value")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    address: str
    value: int
    def __init__(self, address: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class EvmAccessListEntry(_message.Message):
    __slots__ = ("address", "storage_keys")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_KEYS_FIELD_NUMBER: _ClassVar[int]
    address: str
    storage_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, address: _Optional[str] = ..., storage_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class EvmTransaction(_message.Message):
    __slots__ = ("chain_id", "type", "nonce", "to", "value", "data", "gas_limit", "gas_price", "max_fee_per_gas", "max_priority_fee_per_gas", "access_list")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    GAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    GAS_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_FEE_PER_GAS_FIELD_NUMBER: _ClassVar[int]
    MAX_PRIORITY_FEE_PER_GAS_FIELD_NUMBER: _ClassVar[int]
    ACCESS_LIST_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    type: EvmTxType
    nonce: int
    to: str
    value: str
    data: str
    gas_limit: int
    gas_price: str
    max_fee_per_gas: str
    max_priority_fee_per_gas: str
    access_list: _containers.RepeatedCompositeFieldContainer[EvmAccessListEntry]
    def __init__(self, chain_id: _Optional[int] = ..., type: _Optional[_Union[EvmTxType, str]] = ..., nonce: _Optional[int] = ..., to: _Optional[str] = ..., value: _Optional[str] = ..., data: _Optional[str] = ..., gas_limit: _Optional[int] = ..., gas_price: _Optional[str] = ..., max_fee_per_gas: _Optional[str] = ..., max_priority_fee_per_gas: _Optional[str] = ..., access_list: _Optional[_Iterable[_Union[EvmAccessListEntry, _Mapping]]] = ...) -> None: ...

class TronTransaction(_message.Message):
    __slots__ = ("network", "trx_transfer", "trc20_transfer", "freeze_balance_v2", "unfreeze_balance_v2", "delegate_resource", "undelegate_resource", "withdraw_expire_unfreeze", "vote_witness", "ref_block_bytes", "ref_block_hash", "expiration", "timestamp", "fee_limit")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    TRX_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    TRC20_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    FREEZE_BALANCE_V2_FIELD_NUMBER: _ClassVar[int]
    UNFREEZE_BALANCE_V2_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    UNDELEGATE_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_EXPIRE_UNFREEZE_FIELD_NUMBER: _ClassVar[int]
    VOTE_WITNESS_FIELD_NUMBER: _ClassVar[int]
    REF_BLOCK_BYTES_FIELD_NUMBER: _ClassVar[int]
    REF_BLOCK_HASH_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    FEE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    network: str
    trx_transfer: TronTrxTransfer
    trc20_transfer: TronTrc20Transfer
    freeze_balance_v2: TronFreezeBalanceV2
    unfreeze_balance_v2: TronUnfreezeBalanceV2
    delegate_resource: TronDelegateResource
    undelegate_resource: TronUnDelegateResource
    withdraw_expire_unfreeze: TronWithdrawExpireUnfreeze
    vote_witness: TronVoteWitness
    ref_block_bytes: str
    ref_block_hash: str
    expiration: int
    timestamp: int
    fee_limit: int
    def __init__(self, network: _Optional[str] = ..., trx_transfer: _Optional[_Union[TronTrxTransfer, _Mapping]] = ..., trc20_transfer: _Optional[_Union[TronTrc20Transfer, _Mapping]] = ..., freeze_balance_v2: _Optional[_Union[TronFreezeBalanceV2, _Mapping]] = ..., unfreeze_balance_v2: _Optional[_Union[TronUnfreezeBalanceV2, _Mapping]] = ..., delegate_resource: _Optional[_Union[TronDelegateResource, _Mapping]] = ..., undelegate_resource: _Optional[_Union[TronUnDelegateResource, _Mapping]] = ..., withdraw_expire_unfreeze: _Optional[_Union[TronWithdrawExpireUnfreeze, _Mapping]] = ..., vote_witness: _Optional[_Union[TronVoteWitness, _Mapping]] = ..., ref_block_bytes: _Optional[str] = ..., ref_block_hash: _Optional[str] = ..., expiration: _Optional[int] = ..., timestamp: _Optional[int] = ..., fee_limit: _Optional[int] = ...) -> None: ...

class TronTrxTransfer(_message.Message):
    __slots__ = ("to", "amount")
    TO_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    to: str
    amount: int
    def __init__(self, to: _Optional[str] = ..., amount: _Optional[int] = ...) -> None: ...

class TronTrc20Transfer(_message.Message):
    __slots__ = ("contract", "to", "amount")
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    contract: str
    to: str
    amount: str
    def __init__(self, contract: _Optional[str] = ..., to: _Optional[str] = ..., amount: _Optional[str] = ...) -> None: ...

class TronFreezeBalanceV2(_message.Message):
    __slots__ = ("amount", "resource")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    amount: int
    resource: str
    def __init__(self, amount: _Optional[int] = ..., resource: _Optional[str] = ...) -> None: ...

class TronUnfreezeBalanceV2(_message.Message):
    __slots__ = ("amount", "resource")
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    amount: int
    resource: str
    def __init__(self, amount: _Optional[int] = ..., resource: _Optional[str] = ...) -> None: ...

class TronDelegateResource(_message.Message):
    __slots__ = ("receiver", "amount", "resource", "lock", "lock_period")
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    LOCK_PERIOD_FIELD_NUMBER: _ClassVar[int]
    receiver: str
    amount: int
    resource: str
    lock: bool
    lock_period: int
    def __init__(self, receiver: _Optional[str] = ..., amount: _Optional[int] = ..., resource: _Optional[str] = ..., lock: _Optional[bool] = ..., lock_period: _Optional[int] = ...) -> None: ...

class TronUnDelegateResource(_message.Message):
    __slots__ = ("receiver", "amount", "resource")
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    receiver: str
    amount: int
    resource: str
    def __init__(self, receiver: _Optional[str] = ..., amount: _Optional[int] = ..., resource: _Optional[str] = ...) -> None: ...

class TronWithdrawExpireUnfreeze(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TronVoteWitness(_message.Message):
    __slots__ = ("votes",)
    VOTES_FIELD_NUMBER: _ClassVar[int]
    votes: _containers.RepeatedCompositeFieldContainer[TronVote]
    def __init__(self, votes: _Optional[_Iterable[_Union[TronVote, _Mapping]]] = ...) -> None: ...

class TronVote(_message.Message):
    __slots__ = ("witness", "count")
    WITNESS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    witness: str
    count: int
    def __init__(self, witness: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class EvmPersonalMessage(_message.Message):
    __slots__ = ("chain_id", "message")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    message: bytes
    def __init__(self, chain_id: _Optional[int] = ..., message: _Optional[bytes] = ...) -> None: ...

class EvmTypedData(_message.Message):
    __slots__ = ("chain_id", "typed_data")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    TYPED_DATA_FIELD_NUMBER: _ClassVar[int]
    chain_id: int
    typed_data: str
    def __init__(self, chain_id: _Optional[int] = ..., typed_data: _Optional[str] = ...) -> None: ...

class TronMessage(_message.Message):
    __slots__ = ("network", "message")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    network: str
    message: bytes
    def __init__(self, network: _Optional[str] = ..., message: _Optional[bytes] = ...) -> None: ...

class BitcoinMessage(_message.Message):
    __slots__ = ("network", "address_type", "message")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    network: str
    address_type: str
    message: bytes
    def __init__(self, network: _Optional[str] = ..., address_type: _Optional[str] = ..., message: _Optional[bytes] = ...) -> None: ...

class BitcoinPsbt(_message.Message):
    __slots__ = ("network", "psbt", "finalize")
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PSBT_FIELD_NUMBER: _ClassVar[int]
    FINALIZE_FIELD_NUMBER: _ClassVar[int]
    network: str
    psbt: bytes
    finalize: bool
    def __init__(self, network: _Optional[str] = ..., psbt: _Optional[bytes] = ..., finalize: _Optional[bool] = ...) -> None: ...

class SignedSignature(_message.Message):
    __slots__ = ("digest", "signature")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    signature: str
    def __init__(self, digest: _Optional[str] = ..., signature: _Optional[str] = ...) -> None: ...

class SignedItem(_message.Message):
    __slots__ = ("chain", "network", "key_id", "address", "tx_id", "raw_tx", "signatures", "fee", "max_fee")
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    RAW_TX_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    MAX_FEE_FIELD_NUMBER: _ClassVar[int]
    chain: str
    network: str
    key_id: str
    address: str
    tx_id: str
    raw_tx: str
    signatures: _containers.RepeatedCompositeFieldContainer[SignedSignature]
    fee: int
    max_fee: str
    def __init__(self, chain: _Optional[str] = ..., network: _Optional[str] = ..., key_id: _Optional[str] = ..., address: _Optional[str] = ..., tx_id: _Optional[str] = ..., raw_tx: _Optional[str] = ..., signatures: _Optional[_Iterable[_Union[SignedSignature, _Mapping]]] = ..., fee: _Optional[int] = ..., max_fee: _Optional[str] = ...) -> None: ...

class SignBatchResponse(_message.Message):
    __slots__ = ("request_id", "status", "items", "replayed", "approval_id", "policy_version", "rules")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: BatchStatus
    items: _containers.RepeatedCompositeFieldContainer[SignedItem]
    replayed: bool
    approval_id: str
    policy_version: str
    rules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[_Union[BatchStatus, str]] = ..., items: _Optional[_Iterable[_Union[SignedItem, _Mapping]]] = ..., replayed: _Optional[bool] = ..., approval_id: _Optional[str] = ..., policy_version: _Optional[str] = ..., rules: _Optional[_Iterable[str]] = ...) -> None: ...

class GetBatchRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class SignPsbtRequest(_message.Message):
    __slots__ = ("request_id", "key_id", "network", "psbt", "finalize")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PSBT_FIELD_NUMBER: _ClassVar[int]
    FINALIZE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    key_id: str
    network: str
    psbt: bytes
    finalize: bool
    def __init__(self, request_id: _Optional[str] = ..., key_id: _Optional[str] = ..., network: _Optional[str] = ..., psbt: _Optional[bytes] = ..., finalize: _Optional[bool] = ...) -> None: ...

class SignPsbtResponse(_message.Message):
    __slots__ = ("batch", "psbt")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PSBT_FIELD_NUMBER: _ClassVar[int]
    batch: SignBatchResponse
    psbt: bytes
    def __init__(self, batch: _Optional[_Union[SignBatchResponse, _Mapping]] = ..., psbt: _Optional[bytes] = ...) -> None: ...
