"""Key ceremonies: one officer proposes, M other officers approve, then it executes once.

Creating, importing, disabling, enabling and retiring a key, and creating an HD
wallet, are ceremonies (issue 11).
Pure rules over ceremony records, with the approval step shared with policy
versions (policies.governance.admit_approval): each approval needs a fresh
TOTP code, verified by the caller, and names the ceremony's digest, a hash
over the canonical encoding of exactly what will be done (kind, parameters,
proposer, times, quorum, the policy version it was proposed under), so an
officer approves exactly what they reviewed and a code given for one
ceremony is useless for another.

The officers and M come from the active policy version (`ceremonies:` in the
document, policies.document.Ceremonies); a ceremony proposed under another
version is stale and never executes. The proposer never counts toward M.
With M = 0 (development) the proposal is approved as it is made.

Kinds are data, not code: a new ceremony (import, backup, restore) adds its
name and parameters to KINDS, its quorum to the document, and an executor in
the service (signer.usecases.ceremonies).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from custos.policies.approvals import Refused
from custos.policies.document import PolicyDocument, parse_duration
from custos.policies.governance import (
    NOT_OFFICER,
    NOT_OPEN,
    STALE,
    OfficerApproval,
    admit_approval,
)

CREATE_KEY = "create_key"
DISABLE_KEY = "disable_key"
ENABLE_KEY = "enable_key"
RETIRE_KEY = "retire_key"
IMPORT_KEY = "import_key"
# Custody of the keys as a whole (issue 11): these name no key of their own,
# or (export) a key and where it goes.
BACKUP_KEY_INIT = "backup_key_init"
BACKUP = "backup"
EXPORT_KEY = "export_key"
IMPORT_KEY_INIT = "import_key_init"
CREATE_WALLET = "create_wallet"
IMPORT_WALLET = "import_wallet"
EXPORT_WALLET = "export_wallet"

# Each kind and the parameters it names, all required (strings).
KINDS: dict[str, tuple[str, ...]] = {
    CREATE_KEY: ("key_id", "network_class"),
    DISABLE_KEY: ("key_id",),
    ENABLE_KEY: ("key_id",),
    RETIRE_KEY: ("key_id",),
    # The key encrypted to the HSM's import key (signer.usecases.key_import.import_params):
    # approvers bind to this exact blob; the secret stays wrapped in the store.
    IMPORT_KEY: (
        "key_id",
        "network_class",
        "wrapped_key",
        "public_key",
        "import_key_fingerprint",
        "source",
        "path",
    ),
    # The AES-256 backup key made in the HSM, split into SLIP-39 shares: any
    # `threshold` of them restore it; `holders` (a JSON list of officers) each
    # fetch their own share once, so no one person ever sees more than one.
    BACKUP_KEY_INIT: ("threshold", "holders"),
    # Every key wrapped under the backup key, in one file the proposer fetches once.
    BACKUP: (),
    # One key wrapped (RSA-OAEP, in the HSM) to the recipient's RSA public key
    # (base64 DER SubjectPublicKeyInfo); approvers compare its fingerprint out of band.
    EXPORT_KEY: ("key_id", "recipient_public_key", "recipient_fingerprint"),
    # The RSA import key officers encrypt imported keys to.
    IMPORT_KEY_INIT: (),
    # An HD wallet whose seed the HSM generates (signer.usecases.wallets); the label is shown.
    CREATE_WALLET: ("wallet_id", "label"),
    # A wallet's seed encrypted to the import key (signer.usecases.wallets.import_wallet_params).
    IMPORT_WALLET: (
        "wallet_id",
        "label",
        "wrapped_seed",
        "master_public_key",
        "import_key_fingerprint",
    ),
    # A wallet's BIP39 seed wrapped to the recipient's RSA public key, like EXPORT_KEY:
    # the whole wallet (every address it derives) leaves, so it is a kind of its own
    # with its own quorum.
    EXPORT_WALLET: ("wallet_id", "recipient_public_key", "recipient_fingerprint"),
}
# Ceremonies whose result is fetched after the quorum, by whom (see deliver()).
FETCHED_BY_PROPOSER = (BACKUP, EXPORT_KEY, EXPORT_WALLET)
FETCHED_BY_HOLDERS = (BACKUP_KEY_INIT,)
# The quorum of a kind the document leaves out (see policies.document.Ceremonies).
_LENIENT_DEFAULTS = {DISABLE_KEY: 1}

OPEN = "open"
APPROVED = "approved"  # quorum met: executing (or interrupted while executing)
EXECUTED = "executed"
FAILED = "failed"  # quorum met, but the service could not do it (e.g. the key is retired)
CANCELLED = "cancelled"
EXPIRED = "expired"
FINAL = (EXECUTED, FAILED, CANCELLED)

UNKNOWN_KIND = "unknown_kind"
BAD_PARAMS = "bad_params"

DIGEST_DOMAIN = "custos/key-ceremony/v1"


def required_approvals(doc: PolicyDocument, kind: str) -> int:
    """How many officers other than the proposer must approve a ceremony of `kind`."""
    chosen = getattr(doc.ceremonies, kind, None) if doc.ceremonies else None
    if chosen is not None:
        return int(chosen)
    return min(
        _LENIENT_DEFAULTS.get(kind, doc.governance.approvals_required),
        doc.governance.approvals_required,
    )


@dataclass(frozen=True, slots=True)
class CeremonyRules:
    """Who approves a ceremony of one kind, and how many: from the active policy version."""

    officers: frozenset[str]
    approvals_required: int
    proposal_ttl: timedelta
    policy_version: int

    @classmethod
    def of(cls, doc: PolicyDocument, kind: str) -> CeremonyRules:
        ttl = doc.ceremonies.proposal_expires_after if doc.ceremonies else None
        return cls(
            officers=frozenset(doc.governance.officers),
            approvals_required=required_approvals(doc, kind),
            proposal_ttl=parse_duration(ttl or doc.governance.proposal_expires_after),
            policy_version=doc.version,
        )


@dataclass(frozen=True, slots=True)
class Ceremony:
    """A proposed key ceremony and the approvals it has collected."""

    ceremony_id: str
    kind: str
    params: tuple[tuple[str, str], ...]  # sorted by name
    proposer: str
    proposed_at: datetime
    expires_at: datetime
    approvals_required: int
    policy_version: int  # the active version when proposed
    digest: str  # digest() of the fields above: what officers approve
    approvals: tuple[OfficerApproval, ...] = ()
    state: str = OPEN
    cancelled_by: str | None = None
    finished_at: datetime | None = None  # executed, failed or cancelled
    outcome: str = ""  # what was done (public key, new state) or why it failed: never secrets
    # After execution: what waits to be fetched, per officer (a backup key's
    # shares, each sealed by the HSM for its holder), and who has fetched theirs.
    sealed: tuple[tuple[str, str], ...] = ()
    delivered_to: tuple[str, ...] = ()

    def param(self, name: str) -> str:
        return dict(self.params)[name]

    def holders(self) -> list[str]:
        """The share holders a backup_key_init names (a JSON list in its parameters)."""
        value = json.loads(self.param("holders"))
        if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
            raise ValueError("holders: not a list of officers")
        return value


def digest(  # noqa: PLR0917 - every field the digest covers, in one place
    ceremony_id: str,
    kind: str,
    params: tuple[tuple[str, str], ...],
    proposer: str,
    proposed_at: datetime,
    expires_at: datetime,
    approvals_required: int,
    policy_version: int,
) -> str:
    """Hex SHA-256 of the ceremony's canonical JSON (sorted keys, no whitespace, times in ms)."""
    body = {
        "domain": DIGEST_DOMAIN,
        "ceremony_id": ceremony_id,
        "kind": kind,
        "params": dict(params),
        "proposer": proposer,
        "proposed_at_ms": int(proposed_at.timestamp() * 1000),
        "expires_at_ms": int(expires_at.timestamp() * 1000),
        "approvals_required": approvals_required,
        "policy_version": policy_version,
    }
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def recomputed_digest(ceremony: Ceremony) -> str:
    """The digest its own fields give: what an approver's client checks before approving."""
    return digest(
        ceremony.ceremony_id,
        ceremony.kind,
        ceremony.params,
        ceremony.proposer,
        ceremony.proposed_at,
        ceremony.expires_at,
        ceremony.approvals_required,
        ceremony.policy_version,
    )


def propose(
    ceremony_id: str,
    kind: str,
    params: dict[str, str],
    proposer: str,
    rules: CeremonyRules,
    *,
    now: datetime,
) -> Ceremony | Refused:
    """Open a ceremony; with a quorum of 0 it is approved at once."""
    if kind not in KINDS:
        return Refused(UNKNOWN_KIND, f"kind: one of {', '.join(KINDS)}")
    if set(params) != set(KINDS[kind]) or not all(params.values()):
        return Refused(BAD_PARAMS, f"a {kind} ceremony names exactly {', '.join(KINDS[kind])}")
    if proposer not in rules.officers:
        return Refused(NOT_OFFICER, "only officers of the active policy version may propose")
    # Whole milliseconds: the digest and the stored record must agree exactly.
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    ordered = tuple(sorted(params.items()))
    expires = now + rules.proposal_ttl
    ceremony = Ceremony(
        ceremony_id=ceremony_id,
        kind=kind,
        params=ordered,
        proposer=proposer,
        proposed_at=now,
        expires_at=expires,
        approvals_required=rules.approvals_required,
        policy_version=rules.policy_version,
        digest=digest(
            ceremony_id,
            kind,
            ordered,
            proposer,
            now,
            expires,
            rules.approvals_required,
            rules.policy_version,
        ),
    )
    return replace(ceremony, state=APPROVED) if rules.approvals_required == 0 else ceremony


def status(ceremony: Ceremony, active_version: int, now: datetime) -> str:
    """open, approved (to execute), executed, failed, cancelled, expired or stale."""
    if ceremony.state != OPEN:
        return ceremony.state
    if ceremony.policy_version != active_version:
        return STALE
    return EXPIRED if now >= ceremony.expires_at else OPEN


def approve(
    ceremony: Ceremony,
    officer: str,
    approved_digest: str,
    rules: CeremonyRules,
    *,
    now: datetime,
    totp_verified: bool,
) -> Ceremony | Refused:
    """Count one officer's approval; M distinct ones (never the proposer's) approve it."""
    state = status(ceremony, rules.policy_version, now)
    not_open = None
    if state == STALE:
        not_open = Refused(STALE, "the policy changed since this ceremony was proposed")
    elif state != OPEN:
        not_open = Refused(NOT_OPEN, f"the ceremony is {state}")
    approvals = admit_approval(
        ceremony.approvals,
        proposer=ceremony.proposer,
        officer=officer,
        digest=approved_digest,
        expected_digest=ceremony.digest,
        officers=rules.officers,
        allow_self_approval=False,  # M *other* officers, whatever policy governance allows
        totp_verified=totp_verified,
        not_open=not_open,
        now=now,
    )
    if isinstance(approvals, Refused):
        return approvals
    met = len(approvals) >= ceremony.approvals_required
    return replace(ceremony, approvals=approvals, state=APPROVED if met else OPEN)


def cancel(
    ceremony: Ceremony, officer: str, rules: CeremonyRules, *, now: datetime
) -> Ceremony | Refused:
    """Any officer may cancel a ceremony that has not met its quorum."""
    if officer not in rules.officers:
        return Refused(NOT_OFFICER, "only officers may cancel ceremonies")
    state = status(ceremony, rules.policy_version, now)
    if state not in (OPEN, EXPIRED, STALE):
        return Refused(NOT_OPEN, f"the ceremony is {state}")
    return replace(ceremony, state=CANCELLED, cancelled_by=officer, finished_at=now)


NOT_FETCHABLE = "not_fetchable"
NOT_YOURS = "not_yours"
FETCHED = "already_fetched"


def deliverable(ceremony: Ceremony, officer: str, *, now: datetime | None = None) -> Refused | None:
    """Whether `officer` may fetch this executed ceremony's result now (once each).

    A backup file or an exported key goes to the proposer, within the
    ceremony's proposal lifetime after its approval (an approval is not a
    standing licence); a backup key's share to each holder it names, their
    own and no other, without a deadline (a share not fetched is lost).
    """
    if ceremony.kind not in (*FETCHED_BY_PROPOSER, *FETCHED_BY_HOLDERS):
        return Refused(NOT_FETCHABLE, f"a {ceremony.kind} ceremony has nothing to fetch")
    if ceremony.state != EXECUTED:
        return Refused(NOT_OPEN, f"the ceremony is {ceremony.state}, not executed")
    if ceremony.kind in FETCHED_BY_PROPOSER:
        if officer != ceremony.proposer:
            return Refused(NOT_YOURS, "only the officer who proposed it fetches its result")
        lifetime = ceremony.expires_at - ceremony.proposed_at
        if now is not None and ceremony.finished_at and now >= ceremony.finished_at + lifetime:
            return Refused(
                EXPIRED, f"not fetched within {lifetime} of its approval: propose it again"
            )
    elif officer not in ceremony.holders():
        return Refused(NOT_YOURS, "only the share holders it names fetch a share")
    if officer in ceremony.delivered_to:
        return Refused(FETCHED, "fetched already: each result is handed out once")
    return None


def delivered(ceremony: Ceremony, officer: str) -> Ceremony:
    """The ceremony after `officer` fetched their result: their sealed output is gone."""
    return replace(
        ceremony,
        sealed=tuple((who, value) for who, value in ceremony.sealed if who != officer),
        delivered_to=(*ceremony.delivered_to, officer),
    )


def finish(ceremony: Ceremony, *, executed: bool, outcome: str, now: datetime) -> Ceremony:
    """The approved ceremony, executed (outcome: what was done) or failed (outcome: why)."""
    return replace(
        ceremony, state=EXECUTED if executed else FAILED, outcome=outcome, finished_at=now
    )
