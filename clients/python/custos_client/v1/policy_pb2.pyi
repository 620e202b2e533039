from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyVersion(_message.Message):
    __slots__ = ("version", "hash", "state", "proposed_by", "approved_by", "proposed_at_unix", "activate_at_unix", "document_yaml")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_BY_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_YAML_FIELD_NUMBER: _ClassVar[int]
    version: int
    hash: str
    state: str
    proposed_by: str
    approved_by: _containers.RepeatedScalarFieldContainer[str]
    proposed_at_unix: int
    activate_at_unix: int
    document_yaml: str
    def __init__(self, version: _Optional[int] = ..., hash: _Optional[str] = ..., state: _Optional[str] = ..., proposed_by: _Optional[str] = ..., approved_by: _Optional[_Iterable[str]] = ..., proposed_at_unix: _Optional[int] = ..., activate_at_unix: _Optional[int] = ..., document_yaml: _Optional[str] = ...) -> None: ...

class ProposePolicyRequest(_message.Message):
    __slots__ = ("document_yaml",)
    DOCUMENT_YAML_FIELD_NUMBER: _ClassVar[int]
    document_yaml: str
    def __init__(self, document_yaml: _Optional[str] = ...) -> None: ...

class ApprovePolicyRequest(_message.Message):
    __slots__ = ("version", "hash", "totp_code")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    TOTP_CODE_FIELD_NUMBER: _ClassVar[int]
    version: int
    hash: str
    totp_code: str
    def __init__(self, version: _Optional[int] = ..., hash: _Optional[str] = ..., totp_code: _Optional[str] = ...) -> None: ...

class CancelPolicyRequest(_message.Message):
    __slots__ = ("version", "totp_code")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOTP_CODE_FIELD_NUMBER: _ClassVar[int]
    version: int
    totp_code: str
    def __init__(self, version: _Optional[int] = ..., totp_code: _Optional[str] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[PolicyVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[PolicyVersion, _Mapping]]] = ...) -> None: ...

class EnrollTotpRequest(_message.Message):
    __slots__ = ("subject", "enrollment_token", "totp_code")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTP_CODE_FIELD_NUMBER: _ClassVar[int]
    subject: str
    enrollment_token: str
    totp_code: str
    def __init__(self, subject: _Optional[str] = ..., enrollment_token: _Optional[str] = ..., totp_code: _Optional[str] = ...) -> None: ...

class EnrollTotpResponse(_message.Message):
    __slots__ = ("subject", "otpauth_uri")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    OTPAUTH_URI_FIELD_NUMBER: _ClassVar[int]
    subject: str
    otpauth_uri: str
    def __init__(self, subject: _Optional[str] = ..., otpauth_uri: _Optional[str] = ...) -> None: ...

class IssueTotpTokenRequest(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    def __init__(self, subject: _Optional[str] = ...) -> None: ...

class IssueTotpTokenResponse(_message.Message):
    __slots__ = ("subject", "enrollment_token", "expires_at_unix")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    subject: str
    enrollment_token: str
    expires_at_unix: int
    def __init__(self, subject: _Optional[str] = ..., enrollment_token: _Optional[str] = ..., expires_at_unix: _Optional[int] = ...) -> None: ...

class UnlockTotpRequest(_message.Message):
    __slots__ = ("subject", "totp_code")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TOTP_CODE_FIELD_NUMBER: _ClassVar[int]
    subject: str
    totp_code: str
    def __init__(self, subject: _Optional[str] = ..., totp_code: _Optional[str] = ...) -> None: ...

class UnlockTotpResponse(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    def __init__(self, subject: _Optional[str] = ...) -> None: ...

class PendingTransfer(_message.Message):
    __slots__ = ("to", "asset", "symbol", "amount", "amount_units", "is_change")
    TO_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_UNITS_FIELD_NUMBER: _ClassVar[int]
    IS_CHANGE_FIELD_NUMBER: _ClassVar[int]
    to: str
    asset: str
    symbol: str
    amount: str
    amount_units: str
    is_change: bool
    def __init__(self, to: _Optional[str] = ..., asset: _Optional[str] = ..., symbol: _Optional[str] = ..., amount: _Optional[str] = ..., amount_units: _Optional[str] = ..., is_change: _Optional[bool] = ...) -> None: ...

class PendingItem(_message.Message):
    __slots__ = ("chain", "network", "key_id", "from_address", "destinations", "fee", "contract_call", "transfers", "contract", "method", "args", "fee_units", "lock_time", "error", "message", "staking", "multisigs")
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    FEE_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_CALL_FIELD_NUMBER: _ClassVar[int]
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    FEE_UNITS_FIELD_NUMBER: _ClassVar[int]
    LOCK_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STAKING_FIELD_NUMBER: _ClassVar[int]
    MULTISIGS_FIELD_NUMBER: _ClassVar[int]
    chain: str
    network: str
    key_id: str
    from_address: str
    destinations: _containers.RepeatedScalarFieldContainer[str]
    fee: str
    contract_call: str
    transfers: _containers.RepeatedCompositeFieldContainer[PendingTransfer]
    contract: str
    method: str
    args: _containers.RepeatedScalarFieldContainer[str]
    fee_units: str
    lock_time: str
    error: str
    message: PendingMessage
    staking: str
    multisigs: _containers.RepeatedCompositeFieldContainer[PendingMultisig]
    def __init__(self, chain: _Optional[str] = ..., network: _Optional[str] = ..., key_id: _Optional[str] = ..., from_address: _Optional[str] = ..., destinations: _Optional[_Iterable[str]] = ..., fee: _Optional[str] = ..., contract_call: _Optional[str] = ..., transfers: _Optional[_Iterable[_Union[PendingTransfer, _Mapping]]] = ..., contract: _Optional[str] = ..., method: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., fee_units: _Optional[str] = ..., lock_time: _Optional[str] = ..., error: _Optional[str] = ..., message: _Optional[_Union[PendingMessage, _Mapping]] = ..., staking: _Optional[str] = ..., multisigs: _Optional[_Iterable[_Union[PendingMultisig, _Mapping]]] = ...) -> None: ...

class PendingMultisig(_message.Message):
    __slots__ = ("threshold", "total", "cosigners")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    COSIGNERS_FIELD_NUMBER: _ClassVar[int]
    threshold: int
    total: int
    cosigners: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, threshold: _Optional[int] = ..., total: _Optional[int] = ..., cosigners: _Optional[_Iterable[str]] = ...) -> None: ...

class PendingMessage(_message.Message):
    __slots__ = ("kind", "text", "digest", "primary_type", "domain_name", "chain_id", "verifying_contract", "grants")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_NAME_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFYING_CONTRACT_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    text: str
    digest: str
    primary_type: str
    domain_name: str
    chain_id: str
    verifying_contract: str
    grants: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[str] = ..., text: _Optional[str] = ..., digest: _Optional[str] = ..., primary_type: _Optional[str] = ..., domain_name: _Optional[str] = ..., chain_id: _Optional[str] = ..., verifying_contract: _Optional[str] = ..., grants: _Optional[_Iterable[str]] = ...) -> None: ...

class PendingBatch(_message.Message):
    __slots__ = ("approval_id", "requester", "request_id", "request_digest", "state", "expires_at_unix", "rules", "approved_by", "missing", "totp_required", "items", "request", "policy_version")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    TOTP_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    requester: str
    request_id: str
    request_digest: str
    state: str
    expires_at_unix: int
    rules: _containers.RepeatedScalarFieldContainer[str]
    approved_by: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedScalarFieldContainer[str]
    totp_required: bool
    items: _containers.RepeatedCompositeFieldContainer[PendingItem]
    request: bytes
    policy_version: str
    def __init__(self, approval_id: _Optional[str] = ..., requester: _Optional[str] = ..., request_id: _Optional[str] = ..., request_digest: _Optional[str] = ..., state: _Optional[str] = ..., expires_at_unix: _Optional[int] = ..., rules: _Optional[_Iterable[str]] = ..., approved_by: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[str]] = ..., totp_required: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[PendingItem, _Mapping]]] = ..., request: _Optional[bytes] = ..., policy_version: _Optional[str] = ...) -> None: ...

class ListPendingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPendingRequest(_message.Message):
    __slots__ = ("approval_id",)
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    def __init__(self, approval_id: _Optional[str] = ...) -> None: ...

class ListPendingResponse(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[PendingBatch]
    def __init__(self, batches: _Optional[_Iterable[_Union[PendingBatch, _Mapping]]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("approval_id", "request_digest", "totp_code")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOTP_CODE_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    request_digest: str
    totp_code: str
    def __init__(self, approval_id: _Optional[str] = ..., request_digest: _Optional[str] = ..., totp_code: _Optional[str] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("after_seq",)
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    def __init__(self, after_seq: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "approval_id", "request_id", "requester", "at_unix_ms", "seq", "audit_kind", "actor", "key_id", "policy_version", "subject", "reason", "checkpoint_size")
    KIND_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SIZE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    approval_id: str
    request_id: str
    requester: str
    at_unix_ms: int
    seq: int
    audit_kind: str
    actor: str
    key_id: str
    policy_version: int
    subject: str
    reason: str
    checkpoint_size: int
    def __init__(self, kind: _Optional[str] = ..., approval_id: _Optional[str] = ..., request_id: _Optional[str] = ..., requester: _Optional[str] = ..., at_unix_ms: _Optional[int] = ..., seq: _Optional[int] = ..., audit_kind: _Optional[str] = ..., actor: _Optional[str] = ..., key_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., subject: _Optional[str] = ..., reason: _Optional[str] = ..., checkpoint_size: _Optional[int] = ...) -> None: ...
