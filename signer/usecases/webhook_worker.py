"""Delivers events to webhook endpoints: in order, retried, resumed by any replica.

Each replica runs one WebhookDispatcher. Every few seconds it renews its claims
and takes the endpoints whose claim lapsed (signer.store.webhook_tables): one
replica delivers to an endpoint at a time, and when it dies another takes over
once the lease runs out. For each endpoint it holds, one thread walks the audit
log (the outbox, signer.usecases.outbox) from the endpoint's cursor: the next event of
the endpoint's kinds is POSTed, signed (signer.usecases.delivery), until the receiver
answers 2xx, with exponential back-off between attempts (capped); only then
does the cursor move past it, fenced on the claim and the cursor's value, so a
replica that lost its claim, or a replay that moved the cursor, stops it from
recording anything. A receiver therefore sees every event at least once and in
sequence order; a replica killed between the receiver's 2xx and the cursor's
move makes its successor deliver that event again, which the receiver drops by
its sequence number (X-Custos-Sequence, also in the signed body).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from custos.audit.record import AuditRecord
from custos.signer.edge import metrics
from custos.signer.edge.config import EventsConfig
from custos.signer.store.base import Store, StoreError
from custos.signer.store.webhook_tables import WebhookRow
from custos.signer.usecases.delivery import DeliveryError, DeliverySigner, post_signed
from custos.signer.usecases.outbox import EVENT_KINDS, PAGE, Outbox, OutboxEvent
from custos.signer.usecases.webhooks import WebhookRegistry

log = logging.getLogger("custos.webhooks")

SEQUENCE_HEADER = "X-Custos-Sequence"
WEBHOOK_HEADER = "X-Custos-Webhook-Id"


def delivery_body(webhook_id: str, event: OutboxEvent) -> bytes:
    """The JSON a receiver gets: the event as WatchEvents carries it, and its endpoint."""
    return json.dumps(
        {"webhook_id": webhook_id, **dataclasses.asdict(event)},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


class _EndpointWorker:
    """Delivers one endpoint's events while this replica holds its claim."""

    def __init__(self, dispatcher: WebhookDispatcher, row: WebhookRow) -> None:
        self._d = dispatcher
        self.row = row  # as authenticated when claimed: url and kinds never change
        self.stopped = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"custos-webhook-{row.webhook_id}", daemon=True
        )

    def _cursor(self) -> int | None:
        """The stored cursor, or None when the endpoint is gone or no longer ours."""
        row = self._d.store.get_webhook(self.row.webhook_id)
        if row is None or row.owner != self._d.owner:
            return None
        if (row.url, row.kinds) != (self.row.url, self.row.kinds):
            return None  # changed under us: the dispatcher re-checks its tag
        return row.next_seq

    def _run(self) -> None:
        backoff = self._d.config.retry_initial_seconds
        while not self._should_stop():
            try:
                done = self._step()
            except StoreError as exc:
                log.warning("webhook %s: store unavailable: %s", self.row.webhook_id, exc)
                done = False
            if done is None:
                return
            if done:
                backoff = self._d.config.retry_initial_seconds
                continue
            self.stopped.wait(backoff)
            backoff = min(backoff * 2, self._d.config.retry_max_seconds)

    def _should_stop(self) -> bool:
        return self.stopped.is_set() or self._d.stopping.is_set()

    def _step(self) -> bool | None:
        """One move: True (progress or nothing to do), False (retry later), None (stop)."""
        cursor = self._cursor()
        if cursor is None:
            return None
        rows = self._d.store.audit_rows(cursor, PAGE)
        if not rows:
            self._d.store.wait_for_audit(cursor, 1.0)
            return True
        target: OutboxEvent | None = None
        end = cursor
        for seq, data, _leaf in rows:
            if seq != end:
                raise RuntimeError(f"audit log gap: expected seq {end}, read {seq}")
            record = AuditRecord.decode(data)
            event = self._d.outbox.event_of(record) if record.event.kind in EVENT_KINDS else None
            if event is not None and event.kind in self.row.kinds:
                target = event
                break
            end = seq + 1
        if target is None:  # nothing for this endpoint in the page: skip it
            return self._advance(cursor, end)
        if not self._deliver(target):
            return False
        return self._advance(cursor, target.seq + 1)

    def _advance(self, cursor: int, next_seq: int) -> bool | None:
        if self._d.store.advance_webhook(self.row.webhook_id, self._d.owner, cursor, next_seq):
            return True
        # The claim was lost or a replay moved the cursor: re-read before anything else.
        return True if self._cursor() is not None else None

    def _deliver(self, event: OutboxEvent) -> bool:
        webhook_id = self.row.webhook_id
        try:
            result = post_signed(
                self.row.url,
                delivery_body(webhook_id, event),
                self._d.signer,
                timeout_s=self._d.config.delivery_timeout_seconds,
                ca_file=None if self._d.config.ca_file is None else str(self._d.config.ca_file),
                now=lambda: int(self._d.clock()),
                headers={SEQUENCE_HEADER: str(event.seq), WEBHOOK_HEADER: webhook_id},
            )
        except DeliveryError as exc:
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            log.warning("webhook %s: event %d not delivered: %s", webhook_id, event.seq, exc)
            return False
        if not result.ok:
            metrics.WEBHOOK_DELIVERIES.labels("refused").inc()
            log.warning(
                "webhook %s: event %d refused: HTTP %d", webhook_id, event.seq, result.status
            )
            return False
        metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
        log.debug("webhook %s: event %d delivered", webhook_id, event.seq)
        return True


class WebhookDispatcher:
    """Claims endpoints for this replica and runs a delivery thread for each."""

    def __init__(
        self,
        store: Store,
        registry: WebhookRegistry,
        signer: DeliverySigner,
        config: EventsConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.signer = signer
        self.config = config
        self.clock = clock
        self.outbox = Outbox(store)
        # Names this process in claims (shown by ListWebhooks): host, pid, and a
        # random part, since a restarted process may get its old pid back.
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self.stopping = threading.Event()
        self._workers: dict[str, _EndpointWorker] = {}
        self._thread = threading.Thread(target=self._run, name="custos-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join()
        for worker in self._workers.values():
            worker.stopped.set()
            worker.thread.join()
        try:
            self.store.release_webhooks(self.owner)  # the others need not wait for the lease
        except StoreError:
            log.warning("could not release the webhook claims; they lapse with their lease")

    def _run(self) -> None:
        lease_ms = int(self.config.claim_lease_seconds * 1000)
        while not self.stopping.is_set():
            try:
                self._tick(lease_ms)
            except StoreError as exc:
                log.warning("webhook claims not renewed: %s", exc)
            self.stopping.wait(self.config.claim_check_seconds)

    def _tick(self, lease_ms: int) -> None:
        since = self.registry.epoch()
        held = {row.webhook_id: row for row in self.store.claim_webhooks(self.owner, lease_ms)}
        for webhook_id, worker in list(self._workers.items()):
            if not worker.thread.is_alive():
                del self._workers[webhook_id]
            elif webhook_id not in held:
                # Kept until its thread ends: a second worker for the same endpoint
                # could deliver after it and out of order.
                worker.stopped.set()
        for webhook_id, row in held.items():
            if webhook_id in self._workers:
                continue
            if not self.registry.authentic(row, since):
                continue  # altered in the database: never delivered to (the alarm is raised)
            worker = _EndpointWorker(self, row)
            self._workers[webhook_id] = worker
            worker.thread.start()
