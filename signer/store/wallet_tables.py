"""Store rows for HD wallets (signer.usecases.wallets).

A wallet row holds its BIP39 seed only sealed (AES-256-GCM under an HSM key,
the AAD naming the wallet), and the whole row carries an HSM tag
(signer.usecases.authenticity) bound to the wallet id and row version: a database
writer can neither forge a wallet, nor move one wallet's sealed seed onto
another's row. Wallets are created by a ceremony (signer.usecases.ceremonies), which
inserts the row together with the ceremony's final state.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

WALLET_COLUMNS = (
    "wallet_id, label, seal_key_id, sealed_seed, origin, state, created_by, created_at_ms,"
    " version, mac"
)


@dataclass(frozen=True, slots=True)
class WalletRecord:
    wallet_id: str
    label: str
    seal_key_id: str  # the token's AES key the seed is sealed under
    sealed_seed: bytes = field(repr=False)  # never the seed in clear (hsm.hd.SealedSeed)
    origin: str  # generated | imported
    state: str  # enabled
    created_by: str
    created_at_ms: int
    # Incremented by every change of the row; with `mac`, its HSM tag.
    version: int = 1
    mac: bytes | None = None


class WalletStore(Protocol):
    """The wallet part of the store contract (signer.store.base.Store includes it)."""

    def get_wallet(self, wallet_id: str) -> WalletRecord | None: ...

    def list_wallets(self) -> list[WalletRecord]: ...


def insert_wallet(tx: Any, wallet: WalletRecord) -> bool:
    """Insert a new wallet row; False when the id is taken."""
    inserted = tx.execute(
        f"INSERT INTO wallets ({WALLET_COLUMNS})"  # noqa: S608
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (wallet_id) DO NOTHING RETURNING 1",
        (
            wallet.wallet_id,
            wallet.label,
            wallet.seal_key_id,
            wallet.sealed_seed,
            wallet.origin,
            wallet.state,
            wallet.created_by,
            wallet.created_at_ms,
            wallet.version,
            wallet.mac,
        ),
    ).fetchone()
    return inserted is not None


def _wallet(row: tuple[Any, ...]) -> WalletRecord:
    return WalletRecord(
        row[0],
        row[1],
        row[2],
        bytes(row[3]),
        row[4],
        row[5],
        row[6],
        int(row[7]),
        int(row[8]),
        None if row[9] is None else bytes(row[9]),
    )


class WalletTables(abc.ABC):
    """The wallet reads of signer.store.sql.SqlStore (one implementation, both dialects)."""

    @abc.abstractmethod
    def _read(self, work: Callable[[Any], T]) -> T: ...

    def get_wallet(self, wallet_id: str) -> WalletRecord | None:
        found = self._read(
            lambda tx: tx.execute(
                f"SELECT {WALLET_COLUMNS} FROM wallets WHERE wallet_id = ?",  # noqa: S608
                (wallet_id,),
            ).fetchone()
        )
        return None if found is None else _wallet(found)

    def list_wallets(self) -> list[WalletRecord]:
        query = f"SELECT {WALLET_COLUMNS} FROM wallets ORDER BY wallet_id"  # noqa: S608
        return [_wallet(r) for r in self._read(lambda tx: tx.execute(query).fetchall())]
