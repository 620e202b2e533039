"""The active policy and how it changes: bootstrap, proposals, M-of-N approval, activation.

The first version comes from the file named in `[policy] bootstrap` when the
store has none (the operator who ran `custos init` approves it by installing
it); every later version needs M distinct officers of the active version, each
with a fresh TOTP code, then waits its activation delay.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit.record import AuditEvent
from policies import governance
from policies.approvals import Refused
from policies.document import PolicyDocument, document_hash
from policies.evaluate import CompiledPolicy, compile_policy
from policies.schema import PolicyValidationError, load_document
from signer.errors import AlreadyExists, FailedPrecondition, InvalidRequest, NotFound
from signer.store.base import Store, VersionExists
from signer.store.policy_tables import PolicyRow

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def proposal_json(proposal: governance.Proposal) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    return json.dumps(dataclasses.asdict(proposal), default=default, sort_keys=True)


def proposal_from_json(text: str) -> governance.Proposal:
    raw = json.loads(text)
    raw.pop("entry_since", None)
    when = datetime.fromisoformat
    raw["proposed_at"] = when(raw["proposed_at"])
    raw["expires_at"] = when(raw["expires_at"])
    raw["activates_at"] = when(raw["activates_at"]) if raw["activates_at"] else None
    raw["approvals"] = tuple(
        governance.OfficerApproval(a["officer"], when(a["approved_at"])) for a in raw["approvals"]
    )
    return governance.Proposal(**raw)


@dataclass(frozen=True)
class ActivePolicy:
    version: int
    hash: str
    document: PolicyDocument
    compiled: CompiledPolicy


def _entry_since(record: str) -> dict[str, datetime]:
    raw = json.loads(record).get("entry_since", {})
    return {key: datetime.fromisoformat(when) for key, when in raw.items()}


def _with_entry_since(record: str, since: dict[str, datetime]) -> str:
    """The record, carrying when each address-book membership became active (cooling-off)."""
    raw = json.loads(record)
    raw["entry_since"] = {key: when.isoformat() for key, when in sorted(since.items())}
    return json.dumps(raw, sort_keys=True)


def _parse(yaml_text: str) -> PolicyDocument:
    try:
        return load_document(yaml_text)
    except PolicyValidationError as exc:
        raise InvalidRequest("policy document: " + "; ".join(exc.errors[:20])) from None


class PolicyGovernor:
    """Keeps the compiled active policy and runs the governance of new versions."""

    def __init__(self, store: Store, bootstrap: Path | None, clock: Clock = utcnow) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._active: ActivePolicy | None = None
        if not self._store.policy_versions() and bootstrap is not None:
            self._bootstrap(bootstrap)
        self.refresh()

    def _bootstrap(self, path: Path) -> None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise InvalidRequest(f"policy.bootstrap: cannot read {path}: {exc.strerror}") from exc
        doc = _parse(text)
        digest = document_hash(doc)
        now = self._clock()
        rules = governance.GovernanceRules.of(doc)
        proposal = governance.Proposal(
            version=doc.version,
            document_hash=digest,
            base_version=None,
            proposer="system",
            proposed_at=now,
            expires_at=now,
            state=governance.APPROVED,
            activates_at=now,
        )
        record = _with_entry_since(
            proposal_json(proposal), governance.carry_entry_since({}, doc, now)
        )
        row = PolicyRow(doc.version, digest, text, "active", record, _ms(now))
        event = AuditEvent(
            "policy.activated",
            "system",
            {
                "version": doc.version,
                "hash": digest,
                "bootstrap": str(path),
                "officers": sorted(rules.officers),
            },
        )
        self._store.insert_policy_version(row, [event])

    def refresh(self) -> ActivePolicy | None:
        """Activate approved versions whose delay has passed; reload the active one."""
        rows = self._store.policy_versions()
        active = next((r for r in reversed(rows) if r.state == "active"), None)
        for row in rows:
            if row.state != "approved":
                continue
            proposal = proposal_from_json(row.record)
            if governance.ready_to_activate(
                proposal, active.version if active else None, self._clock()
            ):
                activated = self._activate(row, active)
                active = activated or active
        with self._lock:
            if active is None:
                self._active = None
            elif self._active is None or self._active.hash != active.hash:
                doc = _parse(active.document_yaml)
                activated_at = datetime.fromtimestamp((active.activated_at_ms or 0) / 1000, UTC)
                compiled = compile_policy(
                    doc, activated_at=activated_at, entry_since=_entry_since(active.record)
                )
                self._active = ActivePolicy(active.version, active.hash, doc, compiled)
            return self._active

    def _activate(self, row: PolicyRow, previous: PolicyRow | None) -> PolicyRow | None:
        now = self._clock()
        # Memberships the previous version had keep their cooling-off start.
        since = governance.carry_entry_since(
            _entry_since(previous.record) if previous else {}, _parse(row.document_yaml), now
        )

        def change(current: PolicyRow) -> tuple[PolicyRow, list[AuditEvent]] | None:
            if current.state != "approved":
                return None
            event = AuditEvent(
                "policy.activated", "system", {"version": current.version, "hash": current.hash}
            )
            activated = dataclasses.replace(
                current,
                state="active",
                activated_at_ms=_ms(now),
                record=_with_entry_since(current.record, since),
            )
            return activated, [event]

        return self._store.update_policy_version(row.version, change)

    def active(self) -> ActivePolicy:
        with self._lock:
            active = self._active
        if active is None:
            raise FailedPrecondition("no policy is active: every request is denied")
        return active

    # -- governance ---------------------------------------------------------------

    def propose(self, officer: str, yaml_text: str) -> PolicyRow:
        doc = _parse(yaml_text)
        digest = document_hash(doc)
        active = self.active()
        rules = governance.GovernanceRules.of(active.document)
        result = governance.propose(
            doc, digest, officer, rules, active_version=active.version, now=self._clock()
        )
        if isinstance(result, Refused):
            raise FailedPrecondition(f"proposal refused ({result.reason}): {result.message}")
        row = PolicyRow(doc.version, digest, yaml_text, "proposed", proposal_json(result), None)
        event = AuditEvent("policy.proposed", officer, {"version": doc.version, "hash": digest})
        try:
            self._store.insert_policy_version(row, [event])
        except VersionExists as exc:
            raise AlreadyExists(f"policy version {doc.version} already exists") from exc
        return row

    def approve(self, officer: str, version: int, digest: str, totp_verified: bool) -> PolicyRow:
        active = self.active()
        rules = governance.GovernanceRules.of(active.document)
        refusal: list[Refused] = []

        def change(current: PolicyRow) -> tuple[PolicyRow, list[AuditEvent]] | None:
            refusal.clear()  # the store may run this again when it retries a transaction
            result = governance.approve(
                proposal_from_json(current.record),
                officer,
                digest,
                rules,
                active_version=active.version,
                now=self._clock(),
                totp_verified=totp_verified,
            )
            if isinstance(result, Refused):
                refusal.append(result)
                return None
            state = "approved" if result.state == governance.APPROVED else "proposed"
            events = [
                AuditEvent("policy.approved", officer, {"version": version, "hash": current.hash})
            ]
            if state == "approved":
                events.append(
                    AuditEvent(
                        "policy.quorum_met",
                        "system",
                        {
                            "version": version,
                            "hash": current.hash,
                            "activates_at_ms": _ms(result.activates_at),
                        },
                    )
                )
            return dataclasses.replace(current, state=state, record=proposal_json(result)), events

        row = self._store.update_policy_version(version, change)
        if row is None:
            raise NotFound(f"no policy version {version}")
        if refusal:
            raise FailedPrecondition(
                f"approval refused ({refusal[0].reason}): {refusal[0].message}"
            )
        self.refresh()
        return self.get(version)

    def cancel(self, officer: str, version: int, totp_verified: bool) -> PolicyRow:
        """Cancel a proposal or an approved version still in its activation delay."""
        if not totp_verified:
            raise FailedPrecondition("cancel refused (totp_required): a fresh TOTP code is needed")
        active = self.active()
        rules = governance.GovernanceRules.of(active.document)
        refusal: list[Refused] = []

        def change(current: PolicyRow) -> tuple[PolicyRow, list[AuditEvent]] | None:
            refusal.clear()  # the store may run this again when it retries a transaction
            if current.state not in ("proposed", "approved"):
                refusal.append(Refused(governance.NOT_OPEN, f"the version is {current.state}"))
                return None
            result = governance.cancel(
                proposal_from_json(current.record),
                officer,
                rules,
                active_version=active.version,
                now=self._clock(),
            )
            if isinstance(result, Refused):
                refusal.append(result)
                return None
            event = AuditEvent(
                "policy.cancelled",
                officer,
                {"version": current.version, "hash": current.hash, "was": current.state},
            )
            cancelled = dataclasses.replace(
                current, state="cancelled", record=proposal_json(result)
            )
            return cancelled, [event]

        row = self._store.update_policy_version(version, change)
        if row is None:
            raise NotFound(f"no policy version {version}")
        if refusal:
            raise FailedPrecondition(f"cancel refused ({refusal[0].reason}): {refusal[0].message}")
        return row

    def get(self, version: int) -> PolicyRow:
        wanted = version or self.active().version
        for row in self._store.policy_versions():
            if row.version == wanted:
                return row
        raise NotFound(f"no policy version {wanted}")

    def history(self) -> list[PolicyRow]:
        return self._store.policy_versions()
