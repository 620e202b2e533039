"""Webhook endpoints: registration by officers, checked and authenticated.

An endpoint says where events (signer.usecases.outbox) of which kinds are POSTed,
signed (signer.usecases.delivery); signer.usecases.webhook_worker delivers them. Each row
carries the HSM tag of what it means (id, url, kinds, who registered it), so
whoever can write the database can neither redirect deliveries nor add a
receiver; ids are random and never reused, and a removed endpoint's id is
refused for good (the audit log's webhook.removed records raise the floor at
start-up), so a removed row put back is refused too.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from custos.audit.record import AuditEvent
from custos.signer.edge.errors import FailedPrecondition, InvalidRequest, NotFound, TamperedState
from custos.signer.store.base import Store
from custos.signer.store.webhook_tables import WebhookRow
from custos.signer.usecases.authenticity import Fact, StateAuthenticator
from custos.signer.usecases.delivery import DeliverySigner, check_url
from custos.signer.usecases.outbox import EVENT_KINDS

KNOWN_KINDS = frozenset(EVENT_KINDS.values())
MAX_WEBHOOKS = 100
TABLE = "webhooks"


def webhook_fact(row: WebhookRow) -> Fact:
    """What an endpoint's tag covers: everything but its delivery state (cursor, claim)."""
    return Fact(
        TABLE,
        (row.webhook_id,),
        1,  # rows never change: a new endpoint is a new id
        (
            ("url", row.url),
            ("kinds", ",".join(row.kinds)),
            ("created_by", row.created_by),
            ("created_at_ms", row.created_at_ms),
        ),
    )


def removed_floor(integrity: StateAuthenticator, webhook_id: str) -> None:
    """Refuse the row of a removed endpoint should it ever be put back."""
    integrity.raise_floor(TABLE, (webhook_id,), 2)


def _shown(url: str) -> str:
    """The URL without its query (which may carry a receiver's token): for audit records."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    if not kinds:
        known = ", ".join(sorted(KNOWN_KINDS))
        raise InvalidRequest(f"kinds: name at least one event kind ({known})")
    unknown = sorted(set(kinds) - KNOWN_KINDS)
    if unknown:
        raise InvalidRequest(
            f"kinds: unknown event kind {unknown[0]!r}; known: {', '.join(sorted(KNOWN_KINDS))}"
        )
    return tuple(sorted(set(kinds)))


@dataclass(frozen=True, slots=True)
class Registration:
    url: str
    kinds: tuple[str, ...]
    from_seq: int | None  # None: from the end of the log


class WebhookRegistry:
    """Add, list, remove and replay endpoints (officers), every change audited."""

    def __init__(
        self,
        store: Store,
        integrity: StateAuthenticator,
        signer: DeliverySigner | None,
        clock_ms: Callable[[], int],
    ) -> None:
        self._store = store
        self._integrity = integrity
        self.signer = signer
        self._clock_ms = clock_ms

    def _require_signer(self) -> DeliverySigner:
        if self.signer is None:
            raise FailedPrecondition(
                "webhooks need the event-signing key: run `custos events init-key --config "
                "CONFIG` and set [events] key_fingerprint, then restart"
            )
        return self.signer

    def _check_seq(self, field: str, seq: int) -> int:
        size = self._store.audit_size()
        if not 0 <= seq <= size:
            raise InvalidRequest(f"{field}: must be between 0 and {size} (the log's size)")
        return seq

    def add(self, caller: str, request: Registration) -> WebhookRow:
        self._require_signer()
        try:
            url = check_url(request.url)
        except ValueError as exc:
            raise InvalidRequest(f"url: {exc}") from None
        kinds = check_kinds(request.kinds)
        if request.from_seq is None:
            start = self._store.audit_size()
        else:
            start = self._check_seq("from_seq", request.from_seq)
        if len(self._store.list_webhooks()) >= MAX_WEBHOOKS:
            raise FailedPrecondition(f"at most {MAX_WEBHOOKS} webhooks; remove one first")
        row = WebhookRow(
            webhook_id=f"wh-{secrets.token_hex(8)}",
            url=url,
            kinds=kinds,
            created_by=caller,
            created_at_ms=self._clock_ms(),
            mac=None,
            next_seq=start,
        )
        row = dataclasses.replace(row, mac=self._integrity.tag(webhook_fact(row)))
        event = AuditEvent(
            "webhook.added",
            caller,
            {
                "webhook_id": row.webhook_id,
                "url": _shown(url),
                "kinds": ",".join(kinds),
                "from_seq": start,
            },
        )
        self._store.add_webhook(row, event)
        return row

    def list(self) -> list[WebhookRow]:
        """Every endpoint; one whose tag fails is left out (and raises the alarm)."""
        since = self._integrity.epoch()
        rows = self._store.list_webhooks()
        return [row for row in rows if self.authentic(row, since)]

    def epoch(self) -> int:
        """Taken before reading rows, passed to authentic() (signer.usecases.authenticity)."""
        return self._integrity.epoch()

    def authentic(self, row: WebhookRow, since: int | None = None) -> bool:
        try:
            self._integrity.check(webhook_fact(row), row.mac, since)
        except TamperedState:
            return False
        return True

    def remove(self, caller: str, webhook_id: str) -> None:
        event = AuditEvent("webhook.removed", caller, {"webhook_id": webhook_id})
        if not self._store.remove_webhook(webhook_id, event):
            raise NotFound(f"webhook_id: no webhook {webhook_id!r}")
        removed_floor(self._integrity, webhook_id)

    def replay(self, caller: str, webhook_id: str, from_seq: int) -> WebhookRow:
        row = self._store.get_webhook(webhook_id)
        if row is None or not self.authentic(row):
            raise NotFound(f"webhook_id: no webhook {webhook_id!r}")
        self._check_seq("from_seq", from_seq)
        event = AuditEvent(
            "webhook.replayed", caller, {"webhook_id": webhook_id, "from_seq": from_seq}
        )
        if not self._store.replay_webhook(webhook_id, from_seq, event):
            raise NotFound(f"webhook_id: no webhook {webhook_id!r}")
        replayed = self._store.get_webhook(webhook_id)
        if replayed is None:
            raise NotFound(f"webhook_id: no webhook {webhook_id!r}")
        return replayed

    def event_key(self) -> DeliverySigner:
        return self._require_signer()
