from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Webhook(_message.Message):
    __slots__ = ("webhook_id", "url", "kinds", "created_by", "created_at_ms", "next_seq", "delivering_replica")
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    DELIVERING_REPLICA_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    url: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    created_by: str
    created_at_ms: int
    next_seq: int
    delivering_replica: str
    def __init__(self, webhook_id: _Optional[str] = ..., url: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., created_by: _Optional[str] = ..., created_at_ms: _Optional[int] = ..., next_seq: _Optional[int] = ..., delivering_replica: _Optional[str] = ...) -> None: ...

class AddWebhookRequest(_message.Message):
    __slots__ = ("url", "kinds", "from_seq")
    URL_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    url: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    from_seq: int
    def __init__(self, url: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., from_seq: _Optional[int] = ...) -> None: ...

class ListWebhooksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWebhooksResponse(_message.Message):
    __slots__ = ("webhooks",)
    WEBHOOKS_FIELD_NUMBER: _ClassVar[int]
    webhooks: _containers.RepeatedCompositeFieldContainer[Webhook]
    def __init__(self, webhooks: _Optional[_Iterable[_Union[Webhook, _Mapping]]] = ...) -> None: ...

class RemoveWebhookRequest(_message.Message):
    __slots__ = ("webhook_id",)
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    def __init__(self, webhook_id: _Optional[str] = ...) -> None: ...

class RemoveWebhookResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplayWebhookRequest(_message.Message):
    __slots__ = ("webhook_id", "from_seq")
    WEBHOOK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    webhook_id: str
    from_seq: int
    def __init__(self, webhook_id: _Optional[str] = ..., from_seq: _Optional[int] = ...) -> None: ...

class GetEventKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EventKey(_message.Message):
    __slots__ = ("public_key_pem", "key_id")
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    public_key_pem: str
    key_id: str
    def __init__(self, public_key_pem: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...
