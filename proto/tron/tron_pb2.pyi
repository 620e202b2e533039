from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResourceCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BANDWIDTH: _ClassVar[ResourceCode]
    ENERGY: _ClassVar[ResourceCode]
    TRON_POWER: _ClassVar[ResourceCode]
BANDWIDTH: ResourceCode
ENERGY: ResourceCode
TRON_POWER: ResourceCode

class Any(_message.Message):
    __slots__ = ("type_url", "value")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    value: bytes
    def __init__(self, type_url: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class TransferContract(_message.Message):
    __slots__ = ("owner_address", "to_address", "amount")
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TO_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    owner_address: bytes
    to_address: bytes
    amount: int
    def __init__(self, owner_address: _Optional[bytes] = ..., to_address: _Optional[bytes] = ..., amount: _Optional[int] = ...) -> None: ...

class TriggerSmartContract(_message.Message):
    __slots__ = ("owner_address", "contract_address", "call_value", "data", "call_token_value", "token_id")
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CALL_VALUE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CALL_TOKEN_VALUE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    owner_address: bytes
    contract_address: bytes
    call_value: int
    data: bytes
    call_token_value: int
    token_id: int
    def __init__(self, owner_address: _Optional[bytes] = ..., contract_address: _Optional[bytes] = ..., call_value: _Optional[int] = ..., data: _Optional[bytes] = ..., call_token_value: _Optional[int] = ..., token_id: _Optional[int] = ...) -> None: ...

class FreezeBalanceV2Contract(_message.Message):
    __slots__ = ("owner_address", "frozen_balance", "resource")
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FROZEN_BALANCE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    owner_address: bytes
    frozen_balance: int
    resource: ResourceCode
    def __init__(self, owner_address: _Optional[bytes] = ..., frozen_balance: _Optional[int] = ..., resource: _Optional[_Union[ResourceCode, str]] = ...) -> None: ...

class UnfreezeBalanceV2Contract(_message.Message):
    __slots__ = ("owner_address", "unfreeze_balance", "resource")
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UNFREEZE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    owner_address: bytes
    unfreeze_balance: int
    resource: ResourceCode
    def __init__(self, owner_address: _Optional[bytes] = ..., unfreeze_balance: _Optional[int] = ..., resource: _Optional[_Union[ResourceCode, str]] = ...) -> None: ...

class WithdrawExpireUnfreezeContract(_message.Message):
    __slots__ = ("owner_address",)
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    owner_address: bytes
    def __init__(self, owner_address: _Optional[bytes] = ...) -> None: ...

class DelegateResourceContract(_message.Message):
    __slots__ = ("owner_address", "resource", "balance", "receiver_address", "lock", "lock_period")
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    LOCK_PERIOD_FIELD_NUMBER: _ClassVar[int]
    owner_address: bytes
    resource: ResourceCode
    balance: int
    receiver_address: bytes
    lock: bool
    lock_period: int
    def __init__(self, owner_address: _Optional[bytes] = ..., resource: _Optional[_Union[ResourceCode, str]] = ..., balance: _Optional[int] = ..., receiver_address: _Optional[bytes] = ..., lock: _Optional[bool] = ..., lock_period: _Optional[int] = ...) -> None: ...

class UnDelegateResourceContract(_message.Message):
    __slots__ = ("owner_address", "resource", "balance", "receiver_address")
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    owner_address: bytes
    resource: ResourceCode
    balance: int
    receiver_address: bytes
    def __init__(self, owner_address: _Optional[bytes] = ..., resource: _Optional[_Union[ResourceCode, str]] = ..., balance: _Optional[int] = ..., receiver_address: _Optional[bytes] = ...) -> None: ...

class VoteWitnessContract(_message.Message):
    __slots__ = ("owner_address", "votes", "support")
    class Vote(_message.Message):
        __slots__ = ("vote_address", "vote_count")
        VOTE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
        VOTE_COUNT_FIELD_NUMBER: _ClassVar[int]
        vote_address: bytes
        vote_count: int
        def __init__(self, vote_address: _Optional[bytes] = ..., vote_count: _Optional[int] = ...) -> None: ...
    OWNER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    owner_address: bytes
    votes: _containers.RepeatedCompositeFieldContainer[VoteWitnessContract.Vote]
    support: bool
    def __init__(self, owner_address: _Optional[bytes] = ..., votes: _Optional[_Iterable[_Union[VoteWitnessContract.Vote, _Mapping]]] = ..., support: _Optional[bool] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("raw_data", "signature")
    class Contract(_message.Message):
        __slots__ = ("type", "parameter", "provider", "ContractName", "Permission_id")
        class ContractType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            AccountCreateContract: _ClassVar[Transaction.Contract.ContractType]
            TransferContract: _ClassVar[Transaction.Contract.ContractType]
            VoteWitnessContract: _ClassVar[Transaction.Contract.ContractType]
            TriggerSmartContract: _ClassVar[Transaction.Contract.ContractType]
            FreezeBalanceV2Contract: _ClassVar[Transaction.Contract.ContractType]
            UnfreezeBalanceV2Contract: _ClassVar[Transaction.Contract.ContractType]
            WithdrawExpireUnfreezeContract: _ClassVar[Transaction.Contract.ContractType]
            DelegateResourceContract: _ClassVar[Transaction.Contract.ContractType]
            UnDelegateResourceContract: _ClassVar[Transaction.Contract.ContractType]
        AccountCreateContract: Transaction.Contract.ContractType
        TransferContract: Transaction.Contract.ContractType
        VoteWitnessContract: Transaction.Contract.ContractType
        TriggerSmartContract: Transaction.Contract.ContractType
        FreezeBalanceV2Contract: Transaction.Contract.ContractType
        UnfreezeBalanceV2Contract: Transaction.Contract.ContractType
        WithdrawExpireUnfreezeContract: Transaction.Contract.ContractType
        DelegateResourceContract: Transaction.Contract.ContractType
        UnDelegateResourceContract: Transaction.Contract.ContractType
        TYPE_FIELD_NUMBER: _ClassVar[int]
        PARAMETER_FIELD_NUMBER: _ClassVar[int]
        PROVIDER_FIELD_NUMBER: _ClassVar[int]
        CONTRACTNAME_FIELD_NUMBER: _ClassVar[int]
        PERMISSION_ID_FIELD_NUMBER: _ClassVar[int]
        type: Transaction.Contract.ContractType
        parameter: Any
        provider: bytes
        ContractName: bytes
        Permission_id: int
        def __init__(self, type: _Optional[_Union[Transaction.Contract.ContractType, str]] = ..., parameter: _Optional[_Union[Any, _Mapping]] = ..., provider: _Optional[bytes] = ..., ContractName: _Optional[bytes] = ..., Permission_id: _Optional[int] = ...) -> None: ...
    class raw(_message.Message):
        __slots__ = ("ref_block_bytes", "ref_block_num", "ref_block_hash", "expiration", "data", "contract", "timestamp", "fee_limit")
        REF_BLOCK_BYTES_FIELD_NUMBER: _ClassVar[int]
        REF_BLOCK_NUM_FIELD_NUMBER: _ClassVar[int]
        REF_BLOCK_HASH_FIELD_NUMBER: _ClassVar[int]
        EXPIRATION_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        CONTRACT_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        FEE_LIMIT_FIELD_NUMBER: _ClassVar[int]
        ref_block_bytes: bytes
        ref_block_num: int
        ref_block_hash: bytes
        expiration: int
        data: bytes
        contract: _containers.RepeatedCompositeFieldContainer[Transaction.Contract]
        timestamp: int
        fee_limit: int
        def __init__(self, ref_block_bytes: _Optional[bytes] = ..., ref_block_num: _Optional[int] = ..., ref_block_hash: _Optional[bytes] = ..., expiration: _Optional[int] = ..., data: _Optional[bytes] = ..., contract: _Optional[_Iterable[_Union[Transaction.Contract, _Mapping]]] = ..., timestamp: _Optional[int] = ..., fee_limit: _Optional[int] = ...) -> None: ...
    RAW_DATA_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    raw_data: Transaction.raw
    signature: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, raw_data: _Optional[_Union[Transaction.raw, _Mapping]] = ..., signature: _Optional[_Iterable[bytes]] = ...) -> None: ...
