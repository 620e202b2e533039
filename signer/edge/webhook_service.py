"""The Webhooks gRPC service: a thin adapter over signer.usecases.webhooks.WebhookRegistry."""

from __future__ import annotations

import grpc

from custos.proto.custos.v1 import webhooks_pb2, webhooks_pb2_grpc
from custos.signer.edge.interceptors import current_identity
from custos.signer.store.webhook_tables import WebhookRow
from custos.signer.usecases.webhooks import Registration, WebhookRegistry


def webhook_message(row: WebhookRow) -> webhooks_pb2.Webhook:
    return webhooks_pb2.Webhook(
        webhook_id=row.webhook_id,
        url=row.url,
        kinds=list(row.kinds),
        created_by=row.created_by,
        created_at_ms=row.created_at_ms,
        next_seq=row.next_seq,
        delivering_replica=row.owner,
    )


class WebhooksService(webhooks_pb2_grpc.WebhooksServicer):
    """Officers register, remove and replay endpoints; anyone may fetch the signing key."""

    def __init__(self, registry: WebhookRegistry) -> None:
        self._registry = registry

    def AddWebhook(  # noqa: N802 - gRPC method names
        self, request: webhooks_pb2.AddWebhookRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.Webhook:
        registration = Registration(
            url=request.url,
            kinds=tuple(request.kinds),
            from_seq=request.from_seq if request.HasField("from_seq") else None,
        )
        return webhook_message(self._registry.add(current_identity.get().subject, registration))

    def ListWebhooks(  # noqa: N802
        self, request: webhooks_pb2.ListWebhooksRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.ListWebhooksResponse:
        return webhooks_pb2.ListWebhooksResponse(
            webhooks=[webhook_message(row) for row in self._registry.list()]
        )

    def RemoveWebhook(  # noqa: N802
        self, request: webhooks_pb2.RemoveWebhookRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.RemoveWebhookResponse:
        self._registry.remove(current_identity.get().subject, request.webhook_id)
        return webhooks_pb2.RemoveWebhookResponse()

    def ReplayWebhook(  # noqa: N802
        self, request: webhooks_pb2.ReplayWebhookRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.Webhook:
        row = self._registry.replay(
            current_identity.get().subject, request.webhook_id, request.from_seq
        )
        return webhook_message(row)

    def GetEventKey(  # noqa: N802
        self, request: webhooks_pb2.GetEventKeyRequest, context: grpc.ServicerContext
    ) -> webhooks_pb2.EventKey:
        signer = self._registry.event_key()
        return webhooks_pb2.EventKey(
            public_key_pem=signer.public_key_pem().decode(), key_id=signer.key_id
        )
