"""Store rows for webhooks: registered endpoints, their cursors and delivery claims.

An endpoint row says where events of which kinds go; it is written once (a
change is a removal and a new registration) and carries the HSM tag of its
contents (signer.usecases.authenticity), so whoever can write the database cannot
redirect deliveries or add a receiver. Its delivery state changes on every
delivery and is not tagged: `next_seq` (the first audit sequence number not yet
delivered or skipped; advanced only after a 2xx) and the claim (`owner`,
`lease_until_ms`) that lets exactly one replica deliver to the endpoint at a
time. A claim whose lease ran out (its replica died or stalled) is taken over
by another replica, which resumes from `next_seq`: a delivery the dead replica
made but did not record is made again, so receivers see each event at least
once, in order, and drop sequence numbers they have seen.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from custos.audit.record import AuditEvent

T = TypeVar("T")

WEBHOOK_COLUMNS = (
    "webhook_id, url, kinds, created_by, created_at_ms, mac, next_seq, owner, lease_until_ms"
)


class WebhookExists(Exception):
    """A webhook with this id is already registered."""


@dataclass(frozen=True, slots=True)
class WebhookRow:
    webhook_id: str
    url: str
    kinds: tuple[str, ...]  # event kinds (signer.usecases.outbox), sorted
    created_by: str
    created_at_ms: int
    mac: bytes | None
    next_seq: int = 0  # first audit seq not yet delivered (or skipped: not of these kinds)
    owner: str = ""  # the replica delivering, while its lease lasts
    lease_until_ms: int = 0


def _row(row: tuple[Any, ...]) -> WebhookRow:
    return WebhookRow(
        webhook_id=row[0],
        url=row[1],
        kinds=tuple(k for k in row[2].split(",") if k),
        created_by=row[3],
        created_at_ms=int(row[4]),
        mac=None if row[5] is None else bytes(row[5]),
        next_seq=int(row[6]),
        owner=row[7],
        lease_until_ms=int(row[8]),
    )


class WebhookStore(Protocol):
    """The webhook part of the store contract (signer.store.base.Store)."""

    def add_webhook(self, row: WebhookRow, event: AuditEvent) -> None: ...

    def remove_webhook(self, webhook_id: str, event: AuditEvent) -> bool: ...

    def replay_webhook(self, webhook_id: str, from_seq: int, event: AuditEvent) -> bool: ...

    def get_webhook(self, webhook_id: str) -> WebhookRow | None: ...

    def list_webhooks(self) -> list[WebhookRow]: ...

    def claim_webhooks(self, owner: str, lease_ms: int) -> list[WebhookRow]: ...

    def advance_webhook(
        self, webhook_id: str, owner: str, expected: int, next_seq: int
    ) -> bool: ...

    def release_webhooks(self, owner: str) -> None: ...


class WebhookTables(abc.ABC):
    """The webhook part of signer.store.sql.SqlStore (one implementation, both dialects)."""

    _clock_ms: Callable[[], int]

    @abc.abstractmethod
    def _read(self, work: Callable[[Any], T]) -> T: ...

    @abc.abstractmethod
    def _write(self, work: Callable[[Any], T]) -> T: ...

    @abc.abstractmethod
    def _transact(self, work: Callable[[Any], T]) -> T:
        """A write that appends nothing to the log (does not wake log watchers)."""

    @abc.abstractmethod
    def _write_audited(self, work: Callable[[Any], T], events: Sequence[AuditEvent]) -> T: ...

    @abc.abstractmethod
    def _append(self, tx: Any, events: Sequence[AuditEvent]) -> None: ...

    def add_webhook(self, row: WebhookRow, event: AuditEvent) -> None:
        """Register `row` and audit it; WebhookExists (nothing written) if the id is taken."""
        values = (
            row.webhook_id,
            row.url,
            ",".join(row.kinds),
            row.created_by,
            row.created_at_ms,
            row.mac,
            row.next_seq,
            "",
            0,
        )

        def work(tx: Any) -> None:
            inserted = tx.execute(
                f"INSERT INTO webhooks ({WEBHOOK_COLUMNS})"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (webhook_id) DO NOTHING RETURNING 1",
                values,
            ).fetchone()
            if inserted is None:
                raise WebhookExists(row.webhook_id)

        self._write_audited(work, [event])

    def remove_webhook(self, webhook_id: str, event: AuditEvent) -> bool:
        """Delete the endpoint and audit it; False (nothing written) if there is none."""

        def work(tx: Any) -> bool:
            gone = tx.execute(
                "DELETE FROM webhooks WHERE webhook_id = ? RETURNING 1", (webhook_id,)
            ).fetchone()
            return gone is not None

        return self._write_audited_if(work, event)

    def replay_webhook(self, webhook_id: str, from_seq: int, event: AuditEvent) -> bool:
        """Deliver again from `from_seq`: the cursor moves there (audited); False if no row."""

        def work(tx: Any) -> bool:
            moved = tx.execute(
                "UPDATE webhooks SET next_seq = ? WHERE webhook_id = ? RETURNING 1",
                (from_seq, webhook_id),
            ).fetchone()
            return moved is not None

        return self._write_audited_if(work, event)

    def _write_audited_if(self, work: Callable[[Any], bool], event: AuditEvent) -> bool:
        """Run `work`; audit `event` in the same transaction only when it changed something."""

        def audited(tx: Any) -> bool:
            changed = work(tx)
            if changed:
                self._append(tx, [event])
            return changed

        return self._write(audited)

    def get_webhook(self, webhook_id: str) -> WebhookRow | None:
        query = f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?"  # noqa: S608
        row = self._read(lambda tx: tx.execute(query, (webhook_id,)).fetchone())
        return None if row is None else _row(row)

    def list_webhooks(self) -> list[WebhookRow]:
        query = f"SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY webhook_id"  # noqa: S608
        return [_row(r) for r in self._read(lambda tx: tx.execute(query).fetchall())]

    def claim_webhooks(self, owner: str, lease_ms: int) -> list[WebhookRow]:
        """Renew this replica's claims and take every endpoint whose lease ran out.

        One statement per endpoint row, so two replicas racing for a free endpoint
        cannot both take it: the second UPDATE sees the first one's lease.
        Returns the endpoints `owner` holds now.
        """
        now = self._clock_ms()

        def work(tx: Any) -> list[WebhookRow]:
            tx.execute(
                "UPDATE webhooks SET owner = ?, lease_until_ms = ?"
                " WHERE owner = ? OR lease_until_ms < ?",
                (owner, now + lease_ms, owner, now),
            )
            rows = tx.execute(
                f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE owner = ?"  # noqa: S608
                " ORDER BY webhook_id",
                (owner,),
            ).fetchall()
            return [_row(r) for r in rows]

        return self._transact(work)

    def advance_webhook(self, webhook_id: str, owner: str, expected: int, next_seq: int) -> bool:
        """Move the cursor from `expected` to `next_seq` while `owner` holds the claim.

        False, and nothing written, when the claim was lost (another replica took
        over) or the cursor moved meanwhile (a replay): the caller re-reads the row.
        """

        def work(tx: Any) -> bool:
            moved = tx.execute(
                "UPDATE webhooks SET next_seq = ?"
                " WHERE webhook_id = ? AND owner = ? AND next_seq = ? AND lease_until_ms >= ?"
                " RETURNING 1",
                (next_seq, webhook_id, owner, expected, self._clock_ms()),
            ).fetchone()
            return moved is not None

        return self._transact(work)

    def release_webhooks(self, owner: str) -> None:
        """Give up `owner`'s claims (a clean stop): another replica may take them at once."""
        self._transact(
            lambda tx: (
                tx.execute(
                    "UPDATE webhooks SET owner = '', lease_until_ms = 0 WHERE owner = ?", (owner,)
                ).rowcount
            )
        )
