"""What the custody ceremonies do in the HSM: the backup key, backup files, exports.

signer.usecases.ceremonies runs these after an officer quorum (policies.ceremonies
BACKUP_KEY_INIT, BACKUP, EXPORT_KEY, EXPORT_WALLET); this module does the token work and
says what to audit, never with secret material:

- The backup key's shares exist outside the HSM only on the way to their
  holders: at execution each is sealed (AES-256-GCM under an HSM-resident key,
  bound to the ceremony and the holder) and kept in the ceremony row until its
  holder fetches it once; the fetch removes it. The database never holds a
  share in the clear, and no officer ever receives another's share.
- A backup file and an exported key or wallet seed are made when the proposer
  fetches them (once), so nothing wrapped is stored: the audit records the
  SHA-256 of what left, and for an export the recipient key's fingerprint. A
  wallet's seed is unsealed in an HSM worker only to be wrapped to the
  recipient inside the token (hsm.key_export.export_seed_wrapped).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from custos.audit.record import AuditEvent
from custos.hsm.backup import MAX_SHARES, BackupError
from custos.hsm.errors import HsmUnavailable, KeyExists, KeyNotFound
from custos.hsm.hd import SealedSeed
from custos.hsm.key_export import EXPORT_ALGORITHM, ExportError, recipient_fingerprint
from custos.policies import ceremonies as rules
from custos.signer.edge.errors import AlreadyExists, FailedPrecondition, InvalidRequest, Unavailable
from custos.signer.edge.logs import register_secret
from custos.signer.store.wallet_tables import WalletRecord
from custos.signer.usecases.backups import BACKUP_KEY_ID, BackupMaker, file_digest
from custos.signer.usecases.wallets import sealed_seed

# The HSM-resident AES key that seals shares on their way to their holders.
SHARE_SEAL_KEY_ID = "_share_seal"
BACKUP_FORMAT = "custos-backup/1 (JSON)"
SHARE_FORMAT = "slip39 share (words)"


class CustodyHsm(Protocol):
    """What these ceremonies need from the HSM (hsm.pool.SigningPool)."""

    def create_backup_key(self, key_id: str, threshold: int, count: int) -> list[str]: ...

    def export_wrapped(self, key_id: str, recipient_der: bytes) -> bytes: ...

    def export_seed(self, seed: SealedSeed, recipient_der: bytes) -> bytes: ...

    def ensure_aes_key(self, key_id: str) -> None: ...

    def seal(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes: ...

    def unseal(self, key_id: str, sealed: bytes, aad: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Output:
    """What an officer fetches: the bytes, their SHA-256, what they are, and the audit record."""

    data: bytes
    sha256: str
    format: str
    event: AuditEvent | None


def _share_aad(ceremony_id: str, holder: str) -> bytes:
    # A sealed share opens only for its own ceremony and holder: moving it to
    # another holder's slot in the row (which the row's tag also stops) fails.
    return f"custos/backup-share/v1\n{ceremony_id}\n{holder}".encode()


class Custody:
    """The HSM side of backup_key_init, backup and export_key ceremonies."""

    def __init__(self, hsm: CustodyHsm, backups: BackupMaker) -> None:
        self._hsm = hsm
        self._backups = backups

    def create_backup_key(
        self, ceremony: rules.Ceremony
    ) -> tuple[tuple[tuple[str, str], ...], AuditEvent]:
        """Make the backup key; its shares sealed for their holders, and the audit record."""
        holders = ceremony.holders()
        threshold = int(ceremony.param("threshold"))
        try:
            self._hsm.ensure_aes_key(SHARE_SEAL_KEY_ID)
            shares = self._hsm.create_backup_key(BACKUP_KEY_ID, threshold, len(holders))
        except KeyExists:
            raise AlreadyExists(
                "the token has a backup key already; its shares were handed out when it was made"
            ) from None
        except BackupError as exc:  # e.g. trusted mode: the SO makes it; never a secret
            raise FailedPrecondition(str(exc)) from None
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not make the backup key; retry") from exc
        for share in shares:
            register_secret(share)
        sealed = tuple(
            (
                holder,
                base64.b64encode(
                    self._hsm.seal(
                        SHARE_SEAL_KEY_ID, share.encode(), _share_aad(ceremony.ceremony_id, holder)
                    )
                ).decode(),
            )
            for holder, share in zip(holders, shares, strict=True)
        )
        event = AuditEvent(
            "backup_key.created",
            "system",
            {
                "key_id": BACKUP_KEY_ID,
                "threshold": threshold,
                "shares": len(holders),
                "holders": ",".join(holders),
                "ceremony_id": ceremony.ceremony_id,
            },
        )
        return sealed, event

    def share(self, ceremony: rules.Ceremony, holder: str) -> Output:
        """The holder's own share, unsealed for handing out (not audited: its fetch is)."""
        sealed = dict(ceremony.sealed).get(holder)
        if sealed is None:
            raise FailedPrecondition("no share waits for you in this ceremony")
        try:
            share = self._hsm.unseal(
                SHARE_SEAL_KEY_ID,
                base64.b64decode(sealed),
                _share_aad(ceremony.ceremony_id, holder),
            ).decode()
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not open the share; retry") from exc
        register_secret(share)
        return Output(share.encode(), "", SHARE_FORMAT, None)

    def backup(self, ceremony: rules.Ceremony, actor: str) -> Output:
        """A backup file of every key now in custody, and its `keys.backed_up` record."""
        try:
            written, event = self._backups.make(actor, {"ceremony_id": ceremony.ceremony_id})
        except BackupError as exc:  # a key only a trusted key may wrap, say
            raise FailedPrecondition(str(exc)) from None
        return Output(written.data, written.digest, BACKUP_FORMAT, event)

    def export(self, ceremony: rules.Ceremony, actor: str) -> Output:
        """The ceremony's key wrapped to its recipient, and the `key.exported` record."""
        key_id = ceremony.param("key_id")
        recipient = base64.b64decode(ceremony.param("recipient_public_key"))
        try:
            data = self._hsm.export_wrapped(key_id, recipient)
        except ExportError as exc:
            raise FailedPrecondition(str(exc)) from None
        except KeyNotFound:
            raise FailedPrecondition(f"key {key_id!r} is not in the token") from None
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not export the key; retry") from exc
        digest = file_digest(data)
        event = AuditEvent(
            "key.exported",
            actor,
            {
                "key_id": key_id,
                "recipient_fingerprint": recipient_fingerprint(recipient),
                "algorithm": EXPORT_ALGORITHM,
                "sha256": digest,
                "ceremony_id": ceremony.ceremony_id,
                "at_ms": time.time_ns() // 10**6,
            },
        )
        return Output(data, digest, EXPORT_ALGORITHM, event)

    def export_wallet(self, ceremony: rules.Ceremony, actor: str, wallet: WalletRecord) -> Output:
        """The wallet's seed wrapped to the ceremony's recipient, and the `wallet.exported`
        record. `wallet` is the verified row (its tag checked by the caller)."""
        recipient = base64.b64decode(ceremony.param("recipient_public_key"))
        try:
            data = self._hsm.export_seed(sealed_seed(wallet), recipient)
        except ExportError as exc:
            raise FailedPrecondition(str(exc)) from None
        except (KeyNotFound, HsmUnavailable) as exc:
            raise Unavailable("the HSM could not export the wallet's seed; retry") from exc
        digest = file_digest(data)
        event = AuditEvent(
            "wallet.exported",
            actor,
            {
                "wallet_id": wallet.wallet_id,
                "recipient_fingerprint": recipient_fingerprint(recipient),
                "algorithm": EXPORT_ALGORITHM,
                "sha256": digest,
                "ceremony_id": ceremony.ceremony_id,
                "at_ms": time.time_ns() // 10**6,
            },
        )
        return Output(data, digest, EXPORT_ALGORITHM, event)


def checked_holders(holders: Sequence[str], threshold: str, officers: frozenset[str]) -> str:
    """A backup_key_init's holders as its parameter (JSON list); InvalidRequest naming the field."""
    if len(set(holders)) != len(holders):
        raise InvalidRequest("holders: each officer holds one share; a holder is named twice")
    strangers = [h for h in holders if h not in officers]
    if strangers:
        raise InvalidRequest(f"holders: not officers of the active policy: {', '.join(strangers)}")
    try:
        m = int(threshold)
    except ValueError:
        raise InvalidRequest("threshold: a number") from None
    n = len(holders)
    if not 1 <= m <= n <= MAX_SHARES or (m == 1 and n > 1):
        raise InvalidRequest(
            f"threshold: {m} of {n} holders is not allowed (1 <= M <= N <= {MAX_SHARES},"
            " and no 1-of-N: that would be N copies of the key)"
        )
    return json.dumps(list(holders))
