"""gRPC servicers: thin adapters from proto messages to the domain objects."""

from __future__ import annotations

import grpc

from hsm.secp256k1 import compressed
from proto.custos.v1 import keys_pb2, keys_pb2_grpc, signer_pb2, signer_pb2_grpc
from signer.auth import SERVICE
from signer.chains.registry import all_addresses
from signer.errors import NotFound
from signer.interceptors import current_identity
from signer.keys import KeyManager
from signer.pipeline import SigningPipeline
from signer.store.base import KeyRecord, KeyState

_STATE = {
    KeyState.ENABLED: keys_pb2.KEY_STATE_ENABLED,
    KeyState.DISABLED: keys_pb2.KEY_STATE_DISABLED,
}


def key_message(record: KeyRecord) -> keys_pb2.Key:
    return keys_pb2.Key(
        key_id=record.key_id,
        algorithm="secp256k1",
        public_key=compressed(record.public_key).hex(),
        state=_STATE[record.state],
        created_by=record.created_by,
        created_at_unix=record.created_at_ms // 1000,
        addresses=[
            keys_pb2.Address(chain=a.chain, network=a.network, kind=a.kind, address=a.address)
            for a in all_addresses(record.public_key)
        ],
    )


class SignerService(signer_pb2_grpc.SignerServicer):
    def __init__(self, pipeline: SigningPipeline) -> None:
        self._pipeline = pipeline

    def SignBatch(  # noqa: N802 - gRPC method names
        self, request: signer_pb2.SignBatchRequest, context: grpc.ServicerContext
    ) -> signer_pb2.SignBatchResponse:
        return self._pipeline.sign_batch(current_identity.get(), request)

    def GetBatch(  # noqa: N802
        self, request: signer_pb2.GetBatchRequest, context: grpc.ServicerContext
    ) -> signer_pb2.SignBatchResponse:
        return self._pipeline.get_batch(current_identity.get(), request.request_id)


class KeysService(keys_pb2_grpc.KeysServicer):
    def __init__(self, keys: KeyManager) -> None:
        self._keys = keys

    def CreateKey(  # noqa: N802
        self, request: keys_pb2.CreateKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        return key_message(self._keys.create(request.key_id, current_identity.get().subject))

    def GetKey(  # noqa: N802
        self, request: keys_pb2.GetKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        identity = current_identity.get()
        if identity.roles == {SERVICE} and not identity.may_use_key(request.key_id):
            # A service sees only its own keys: the same answer as for a missing key.
            raise NotFound(f"key {request.key_id!r} not found")
        return key_message(self._keys.get(request.key_id))

    def ListKeys(  # noqa: N802
        self, request: keys_pb2.ListKeysRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListKeysResponse:
        identity = current_identity.get()
        records = self._keys.list()
        if identity.roles == {SERVICE}:
            records = [r for r in records if identity.may_use_key(r.key_id)]
        return keys_pb2.ListKeysResponse(keys=[key_message(r) for r in records])

    def DisableKey(  # noqa: N802
        self, request: keys_pb2.SetKeyStateRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        identity = current_identity.get()
        return key_message(
            self._keys.set_state(request.key_id, KeyState.DISABLED, identity.subject)
        )

    def EnableKey(  # noqa: N802
        self, request: keys_pb2.SetKeyStateRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        identity = current_identity.get()
        return key_message(self._keys.set_state(request.key_id, KeyState.ENABLED, identity.subject))
