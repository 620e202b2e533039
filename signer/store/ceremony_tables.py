"""Store rows for key ceremonies (policies.ceremonies, signer.usecases.ceremonies).

A ceremony's row changes in read-modify-write transactions (an approval is
counted once even when two replicas race), and the step that executes an
approved ceremony writes the key record, the ceremony's final state and
their audit records in one transaction, compare-and-set on both rows: a
ceremony executes exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from custos.audit.record import AuditEvent

if TYPE_CHECKING:
    from custos.signer.store.base import KeyRecord
    from custos.signer.store.wallet_tables import WalletRecord


@dataclass(frozen=True, slots=True)
class CeremonyRow:
    ceremony_id: str
    kind: str
    state: str  # open | approved | executed | failed | cancelled (expiry is derived)
    record: str  # JSON of policies.ceremonies.Ceremony
    created_at_ms: int
    # Incremented by every change of the row; with `mac`, its HSM tag
    # (signer.usecases.authenticity).
    rev: int = 1
    mac: bytes | None = None


class CeremonyStore(Protocol):
    """The ceremony part of the store contract (signer.store.base.Store includes it)."""

    def insert_ceremony(self, row: CeremonyRow, events: Sequence[AuditEvent]) -> None: ...

    def get_ceremony(self, ceremony_id: str) -> CeremonyRow | None: ...

    def list_ceremonies(self, limit: int = 1000) -> list[CeremonyRow]:
        """The newest `limit` ceremonies, newest first."""
        ...

    def update_ceremony(
        self,
        ceremony_id: str,
        change: Callable[[CeremonyRow], tuple[CeremonyRow, Sequence[AuditEvent]] | None],
    ) -> CeremonyRow | None:
        """Read-modify-write one ceremony in one transaction; `change` returns None to skip."""
        ...

    def finish_ceremony(
        self,
        row: CeremonyRow,
        key: KeyRecord | None,
        events: Sequence[AuditEvent],
        *,
        wallet: WalletRecord | None = None,
    ) -> bool:
        """Store `row` over revision `row.rev - 1` while it is approved, and `key` with it.

        `wallet`, a new wallet, is inserted with it (False when its id is taken).

        `key` at version 1 is inserted, a later version replaces version - 1.
        False, and nothing written, when either row is not what the caller read.
        """
        ...
