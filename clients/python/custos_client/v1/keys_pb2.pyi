from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_ENABLED: _ClassVar[KeyState]
    KEY_STATE_DISABLED: _ClassVar[KeyState]
    KEY_STATE_RETIRED: _ClassVar[KeyState]

class NetworkClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_CLASS_UNSPECIFIED: _ClassVar[NetworkClass]
    NETWORK_CLASS_MAINNET: _ClassVar[NetworkClass]
    NETWORK_CLASS_TESTNET: _ClassVar[NetworkClass]

class KeyOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_ORIGIN_UNSPECIFIED: _ClassVar[KeyOrigin]
    KEY_ORIGIN_GENERATED: _ClassVar[KeyOrigin]
    KEY_ORIGIN_IMPORTED: _ClassVar[KeyOrigin]

class CeremonyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CEREMONY_KIND_UNSPECIFIED: _ClassVar[CeremonyKind]
    CEREMONY_KIND_CREATE_KEY: _ClassVar[CeremonyKind]
    CEREMONY_KIND_DISABLE_KEY: _ClassVar[CeremonyKind]
    CEREMONY_KIND_ENABLE_KEY: _ClassVar[CeremonyKind]
    CEREMONY_KIND_RETIRE_KEY: _ClassVar[CeremonyKind]
    CEREMONY_KIND_IMPORT_KEY: _ClassVar[CeremonyKind]
    CEREMONY_KIND_BACKUP_KEY_INIT: _ClassVar[CeremonyKind]
    CEREMONY_KIND_BACKUP: _ClassVar[CeremonyKind]
    CEREMONY_KIND_EXPORT_KEY: _ClassVar[CeremonyKind]
    CEREMONY_KIND_IMPORT_KEY_INIT: _ClassVar[CeremonyKind]
    CEREMONY_KIND_CREATE_WALLET: _ClassVar[CeremonyKind]
    CEREMONY_KIND_IMPORT_WALLET: _ClassVar[CeremonyKind]
    CEREMONY_KIND_EXPORT_WALLET: _ClassVar[CeremonyKind]
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_ENABLED: KeyState
KEY_STATE_DISABLED: KeyState
KEY_STATE_RETIRED: KeyState
NETWORK_CLASS_UNSPECIFIED: NetworkClass
NETWORK_CLASS_MAINNET: NetworkClass
NETWORK_CLASS_TESTNET: NetworkClass
KEY_ORIGIN_UNSPECIFIED: KeyOrigin
KEY_ORIGIN_GENERATED: KeyOrigin
KEY_ORIGIN_IMPORTED: KeyOrigin
CEREMONY_KIND_UNSPECIFIED: CeremonyKind
CEREMONY_KIND_CREATE_KEY: CeremonyKind
CEREMONY_KIND_DISABLE_KEY: CeremonyKind
CEREMONY_KIND_ENABLE_KEY: CeremonyKind
CEREMONY_KIND_RETIRE_KEY: CeremonyKind
CEREMONY_KIND_IMPORT_KEY: CeremonyKind
CEREMONY_KIND_BACKUP_KEY_INIT: CeremonyKind
CEREMONY_KIND_BACKUP: CeremonyKind
CEREMONY_KIND_EXPORT_KEY: CeremonyKind
CEREMONY_KIND_IMPORT_KEY_INIT: CeremonyKind
CEREMONY_KIND_CREATE_WALLET: CeremonyKind
CEREMONY_KIND_IMPORT_WALLET: CeremonyKind
CEREMONY_KIND_EXPORT_WALLET: CeremonyKind

class Address(_message.Message):
    __slots__ = ("chain", "network", "kind", "address")
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    chain: str
    network: str
    kind: str
    address: str
    def __init__(self, chain: _Optional[str] = ..., network: _Optional[str] = ..., kind: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("key_id", "algorithm", "public_key", "state", "created_by", "created_at_unix", "addresses", "network_class", "origin")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_CLASS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    algorithm: str
    public_key: str
    state: KeyState
    created_by: str
    created_at_unix: int
    addresses: _containers.RepeatedCompositeFieldContainer[Address]
    network_class: NetworkClass
    origin: KeyOrigin
    def __init__(self, key_id: _Optional[str] = ..., algorithm: _Optional[str] = ..., public_key: _Optional[str] = ..., state: _Optional[_Union[KeyState, str]] = ..., created_by: _Optional[str] = ..., created_at_unix: _Optional[int] = ..., addresses: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., network_class: _Optional[_Union[NetworkClass, str]] = ..., origin: _Optional[_Union[KeyOrigin, str]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("key_id", "network_class")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_CLASS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    network_class: NetworkClass
    def __init__(self, key_id: _Optional[str] = ..., network_class: _Optional[_Union[NetworkClass, str]] = ...) -> None: ...

class ImportKeyRequest(_message.Message):
    __slots__ = ("key_id", "network_class", "wrapped_key", "public_key", "import_key_fingerprint", "source", "path")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_CLASS_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_KEY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    network_class: NetworkClass
    wrapped_key: bytes
    public_key: bytes
    import_key_fingerprint: str
    source: str
    path: str
    def __init__(self, key_id: _Optional[str] = ..., network_class: _Optional[_Union[NetworkClass, str]] = ..., wrapped_key: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., import_key_fingerprint: _Optional[str] = ..., source: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ImportWrappingKey(_message.Message):
    __slots__ = ("public_key_der", "fingerprint", "algorithm")
    PUBLIC_KEY_DER_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    public_key_der: bytes
    fingerprint: str
    algorithm: str
    def __init__(self, public_key_der: _Optional[bytes] = ..., fingerprint: _Optional[str] = ..., algorithm: _Optional[str] = ...) -> None: ...

class CreateImportKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetImportKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ...) -> None: ...

class SetKeyStateRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class ImportedWallet(_message.Message):
    __slots__ = ("wrapped_seed", "master_public_key", "import_key_fingerprint")
    WRAPPED_SEED_FIELD_NUMBER: _ClassVar[int]
    MASTER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    IMPORT_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    wrapped_seed: bytes
    master_public_key: bytes
    import_key_fingerprint: str
    def __init__(self, wrapped_seed: _Optional[bytes] = ..., master_public_key: _Optional[bytes] = ..., import_key_fingerprint: _Optional[str] = ...) -> None: ...

class ProposeKeyCeremonyRequest(_message.Message):
    __slots__ = ("kind", "key_id", "network_class", "imported_key", "threshold", "holders", "recipient_public_key", "wallet_id", "label", "imported_wallet")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_CLASS_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_KEY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_WALLET_FIELD_NUMBER: _ClassVar[int]
    kind: CeremonyKind
    key_id: str
    network_class: NetworkClass
    imported_key: ImportKeyRequest
    threshold: int
    holders: _containers.RepeatedScalarFieldContainer[str]
    recipient_public_key: bytes
    wallet_id: str
    label: str
    imported_wallet: ImportedWallet
    def __init__(self, kind: _Optional[_Union[CeremonyKind, str]] = ..., key_id: _Optional[str] = ..., network_class: _Optional[_Union[NetworkClass, str]] = ..., imported_key: _Optional[_Union[ImportKeyRequest, _Mapping]] = ..., threshold: _Optional[int] = ..., holders: _Optional[_Iterable[str]] = ..., recipient_public_key: _Optional[bytes] = ..., wallet_id: _Optional[str] = ..., label: _Optional[str] = ..., imported_wallet: _Optional[_Union[ImportedWallet, _Mapping]] = ...) -> None: ...

class ApproveKeyCeremonyRequest(_message.Message):
    __slots__ = ("ceremony_id", "digest", "totp_code")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOTP_CODE_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    digest: str
    totp_code: str
    def __init__(self, ceremony_id: _Optional[str] = ..., digest: _Optional[str] = ..., totp_code: _Optional[str] = ...) -> None: ...

class CancelKeyCeremonyRequest(_message.Message):
    __slots__ = ("ceremony_id", "totp_code")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    TOTP_CODE_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    totp_code: str
    def __init__(self, ceremony_id: _Optional[str] = ..., totp_code: _Optional[str] = ...) -> None: ...

class GetKeyCeremonyRequest(_message.Message):
    __slots__ = ("ceremony_id",)
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    def __init__(self, ceremony_id: _Optional[str] = ...) -> None: ...

class ListKeyCeremoniesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeyCeremony(_message.Message):
    __slots__ = ("ceremony_id", "kind", "key_id", "network_class", "state", "digest", "proposed_by", "approved_by", "approvals_required", "proposed_at_unix_ms", "expires_at_unix_ms", "finished_at_unix", "policy_version", "outcome", "cancelled_by", "imported_key", "wallet_id", "label", "imported_wallet", "params", "delivered_to")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_CLASS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_BY_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_BY_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_KEY_FIELD_NUMBER: _ClassVar[int]
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_WALLET_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_TO_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    kind: CeremonyKind
    key_id: str
    network_class: NetworkClass
    state: str
    digest: str
    proposed_by: str
    approved_by: _containers.RepeatedScalarFieldContainer[str]
    approvals_required: int
    proposed_at_unix_ms: int
    expires_at_unix_ms: int
    finished_at_unix: int
    policy_version: int
    outcome: str
    cancelled_by: str
    imported_key: ImportKeyRequest
    wallet_id: str
    label: str
    imported_wallet: ImportedWallet
    params: _containers.ScalarMap[str, str]
    delivered_to: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ceremony_id: _Optional[str] = ..., kind: _Optional[_Union[CeremonyKind, str]] = ..., key_id: _Optional[str] = ..., network_class: _Optional[_Union[NetworkClass, str]] = ..., state: _Optional[str] = ..., digest: _Optional[str] = ..., proposed_by: _Optional[str] = ..., approved_by: _Optional[_Iterable[str]] = ..., approvals_required: _Optional[int] = ..., proposed_at_unix_ms: _Optional[int] = ..., expires_at_unix_ms: _Optional[int] = ..., finished_at_unix: _Optional[int] = ..., policy_version: _Optional[int] = ..., outcome: _Optional[str] = ..., cancelled_by: _Optional[str] = ..., imported_key: _Optional[_Union[ImportKeyRequest, _Mapping]] = ..., wallet_id: _Optional[str] = ..., label: _Optional[str] = ..., imported_wallet: _Optional[_Union[ImportedWallet, _Mapping]] = ..., params: _Optional[_Mapping[str, str]] = ..., delivered_to: _Optional[_Iterable[str]] = ...) -> None: ...

class FetchKeyCeremonyResultRequest(_message.Message):
    __slots__ = ("ceremony_id", "totp_code")
    CEREMONY_ID_FIELD_NUMBER: _ClassVar[int]
    TOTP_CODE_FIELD_NUMBER: _ClassVar[int]
    ceremony_id: str
    totp_code: str
    def __init__(self, ceremony_id: _Optional[str] = ..., totp_code: _Optional[str] = ...) -> None: ...

class KeyCeremonyResult(_message.Message):
    __slots__ = ("ceremony", "data", "sha256", "format")
    CEREMONY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ceremony: KeyCeremony
    data: bytes
    sha256: str
    format: str
    def __init__(self, ceremony: _Optional[_Union[KeyCeremony, _Mapping]] = ..., data: _Optional[bytes] = ..., sha256: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class ListKeyCeremoniesResponse(_message.Message):
    __slots__ = ("ceremonies",)
    CEREMONIES_FIELD_NUMBER: _ClassVar[int]
    ceremonies: _containers.RepeatedCompositeFieldContainer[KeyCeremony]
    def __init__(self, ceremonies: _Optional[_Iterable[_Union[KeyCeremony, _Mapping]]] = ...) -> None: ...

class Wallet(_message.Message):
    __slots__ = ("wallet_id", "label", "origin", "state", "created_by", "created_at_unix")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    label: str
    origin: KeyOrigin
    state: str
    created_by: str
    created_at_unix: int
    def __init__(self, wallet_id: _Optional[str] = ..., label: _Optional[str] = ..., origin: _Optional[_Union[KeyOrigin, str]] = ..., state: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at_unix: _Optional[int] = ...) -> None: ...

class GetWalletRequest(_message.Message):
    __slots__ = ("wallet_id",)
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    def __init__(self, wallet_id: _Optional[str] = ...) -> None: ...

class ListWalletsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWalletsResponse(_message.Message):
    __slots__ = ("wallets",)
    WALLETS_FIELD_NUMBER: _ClassVar[int]
    wallets: _containers.RepeatedCompositeFieldContainer[Wallet]
    def __init__(self, wallets: _Optional[_Iterable[_Union[Wallet, _Mapping]]] = ...) -> None: ...

class WalletAccount(_message.Message):
    __slots__ = ("wallet_id", "chain", "network", "account", "purpose")
    WALLET_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    wallet_id: str
    chain: str
    network: str
    account: int
    purpose: int
    def __init__(self, wallet_id: _Optional[str] = ..., chain: _Optional[str] = ..., network: _Optional[str] = ..., account: _Optional[int] = ..., purpose: _Optional[int] = ...) -> None: ...

class DeriveAddressesRequest(_message.Message):
    __slots__ = ("account", "change", "index", "count")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    account: WalletAccount
    change: int
    index: int
    count: int
    def __init__(self, account: _Optional[_Union[WalletAccount, _Mapping]] = ..., change: _Optional[int] = ..., index: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class DerivedAddress(_message.Message):
    __slots__ = ("path", "public_key", "address")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    path: str
    public_key: str
    address: str
    def __init__(self, path: _Optional[str] = ..., public_key: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class DeriveAddressesResponse(_message.Message):
    __slots__ = ("account_path", "addresses")
    ACCOUNT_PATH_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    account_path: str
    addresses: _containers.RepeatedCompositeFieldContainer[DerivedAddress]
    def __init__(self, account_path: _Optional[str] = ..., addresses: _Optional[_Iterable[_Union[DerivedAddress, _Mapping]]] = ...) -> None: ...

class AccountKey(_message.Message):
    __slots__ = ("account_path", "extended_public_key")
    ACCOUNT_PATH_FIELD_NUMBER: _ClassVar[int]
    EXTENDED_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    account_path: str
    extended_public_key: str
    def __init__(self, account_path: _Optional[str] = ..., extended_public_key: _Optional[str] = ...) -> None: ...
