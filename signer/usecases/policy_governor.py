"""The active policy and how it changes: bootstrap, proposals, M-of-N approval, activation.

The first version comes from the file named in `[policy] bootstrap` when the
store has none (the operator who ran `custos init` approves it by installing
it); every later version needs M distinct officers of the active version, each
with a fresh TOTP code, then waits its activation delay.

Every version row carries an HSM tag (signer.usecases.authenticity) and is checked on
every load. Which version is active is not taken from the row's state label:
it is the highest version whose authenticated state is "activated" (versions
only grow), it must agree with the label, it must not be lower than a version
the audit log or this process saw activated, and its text must hash to the
hash its activation names. Otherwise the service refuses to serve (health
NOT_SERVING, every signing request DATA_LOSS) until an operator restores the
store and restarts it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from custos.audit.record import AuditEvent
from custos.policies import governance
from custos.policies.approvals import Refused
from custos.policies.document import PolicyDocument, document_hash
from custos.policies.evaluate import CompiledPolicy, compile_policy
from custos.policies.schema import PolicyValidationError, load_document
from custos.signer.edge.errors import (
    AlreadyExists,
    ConfigError,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    TamperedState,
)
from custos.signer.store.base import Store, VersionExists
from custos.signer.store.policy_tables import PolicyRow
from custos.signer.usecases.authenticity import (
    Fact,
    LoggedState,
    StateAuthenticator,
    scan_audit_log,
)
from custos.signer.usecases.clock import Clock, utcnow

log = logging.getLogger("custos.policy")

POLICY_TABLE = "policy_versions"
_ACTIVATED = ("active", "superseded")


def policy_fact(row: PolicyRow) -> Fact:
    """What a version row's HSM tag covers: every column, bound to version number and rev.

    "active" and "superseded" are one authenticated state, "activated": the store
    moves the previous version from one to the other when another one activates,
    without re-tagging it. Which activated version is active is derived (the
    highest), so flipping the labels gains nothing.
    """
    state = "activated" if row.state in _ACTIVATED else row.state
    return Fact(
        POLICY_TABLE,
        (row.version,),
        row.rev,
        (
            ("hash", row.hash),
            ("document_yaml", row.document_yaml),
            ("state", state),
            ("record", row.record),
            ("activated_at_ms", row.activated_at_ms),
        ),
    )


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

    def __init__(
        self,
        store: Store,
        bootstrap: Path | None,
        clock: Clock = utcnow,
        *,
        integrity: StateAuthenticator,
        logged: LoggedState | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._integrity = integrity
        self._lock = threading.Lock()
        self._active: ActivePolicy | None = None
        self._broken: TamperedState | None = None
        self._hashed: set[bytes | None] = set()  # tags of rows whose text hashed right
        logged = logged or scan_audit_log(store.audit_rows)
        self._logged_activations = dict(logged.activations)
        # No active version may be lower than one activated before (replayed rows).
        self._floor = max(logged.activations, default=0)
        if not self._store.policy_versions() and bootstrap is not None:
            if logged.activations:
                last = max(logged.activations)
                raise ConfigError(
                    f"policy.bootstrap: the store holds no policy versions, but its audit log"
                    f" records the activation of version {last}"
                    f" (hash {logged.activations[last]}): the policy table was emptied or"
                    " belongs to another store; refusing to install the bootstrap file"
                )
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
        row = self._sealed(PolicyRow(doc.version, digest, text, "active", record, _ms(now)))
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

    # -- integrity ----------------------------------------------------------------

    def _sealed(self, row: PolicyRow) -> PolicyRow:
        """`row` with its HSM tag."""
        return dataclasses.replace(row, mac=self._integrity.tag(policy_fact(row)))

    def _successor(self, current: PolicyRow, new: PolicyRow) -> PolicyRow:
        """`new`, the next version of the (verified) stored row `current`, with its tag."""
        self._integrity.check(policy_fact(current), current.mac)
        return self._sealed(dataclasses.replace(new, rev=current.rev + 1, mac=None))

    def _update(
        self,
        version: int,
        change: Callable[[PolicyRow], tuple[PolicyRow, list[AuditEvent]] | None],
    ) -> PolicyRow | None:
        row = self._store.update_policy_version(version, change)
        if row is not None:
            # Committed (or found): an older copy of the row put back is a replay.
            self._integrity.raise_floor(POLICY_TABLE, (row.version,), row.rev)
        return row

    def _rows(self) -> list[PolicyRow]:
        """Every version row, each verified against its HSM tag (cached after the first)."""
        since = self._integrity.epoch()
        rows = self._store.policy_versions()
        self._integrity.verify([(policy_fact(row), row.mac) for row in rows], since)
        return rows

    def _derive_active(self, rows: list[PolicyRow]) -> PolicyRow | None:
        """The active version of authenticated rows; TamperedState when the store disagrees."""
        activated = [row for row in rows if row.state in _ACTIVATED]
        active = max(activated, key=lambda row: row.version, default=None)
        labelled = [row.version for row in rows if row.state == "active"]
        if active is not None and labelled != [active.version]:
            raise self._tampered(
                active,
                f"is the newest activated version, but the store marks {labelled or 'none'}"
                " as active",
            )
        if (active.version if active else 0) < self._floor:
            raise self._tampered(
                active,
                f"is active, but version {self._floor} was activated (audit log or seen before):"
                " newer versions were deleted or replaced by older copies",
            )
        if active is None:
            return None
        logged = self._logged_activations.get(active.version)
        if logged is not None and logged != active.hash:
            raise self._tampered(active, f"names hash {active.hash}, its activation {logged}")
        if active.mac not in self._hashed:  # the tag covers text and hash: once per row
            actual = document_hash(_parse(active.document_yaml))
            if actual != active.hash:
                raise self._tampered(active, f"text hashes to {actual}, not to {active.hash}")
            self._hashed.add(active.mac)
        return active

    def _tampered(self, row: PolicyRow | None, why: str) -> TamperedState:
        exc = TamperedState(POLICY_TABLE, (row.version if row else "active",), why)
        self._integrity.alarm(exc)
        return exc

    def check_integrity(self) -> None:
        """Health probe: reload the policy; TamperedState when it cannot be trusted."""
        self.refresh()
        if self._broken is not None:
            raise self._broken

    def refresh(self) -> ActivePolicy | None:
        """Activate approved versions whose delay has passed; reload the active one.

        None when no version is active, or when the stored policy failed its checks
        (then active() raises, and check_integrity() says why, until a restart).
        """
        if self._broken is not None:
            return None
        try:
            return self._refresh()
        except TamperedState as exc:
            log.error("refusing to serve: the stored policy failed its integrity check: %s", exc)
            with self._lock:
                self._broken = exc
                self._active = None
            return None

    def _refresh(self) -> ActivePolicy | None:
        rows = self._rows()
        active = self._derive_active(rows)
        changed = False
        for row in rows:
            if row.state != "approved":
                continue
            proposal = proposal_from_json(row.record)
            if governance.ready_to_activate(
                proposal, active.version if active else None, self._clock()
            ):
                activated = self._activate(row, active)
                changed = changed or activated is not None
                active = activated or active
        if changed:  # judge what the store now holds, not what we meant to write
            active = self._derive_active(self._rows())
        with self._lock:
            self._floor = max(self._floor, active.version if active else 0)
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
            return self._successor(current, activated), [event]

        return self._update(row.version, change)

    def active(self) -> ActivePolicy:
        with self._lock:
            active = self._active
            broken = self._broken
        if broken is not None:
            raise broken
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
        row = self._sealed(
            PolicyRow(doc.version, digest, yaml_text, "proposed", proposal_json(result), None)
        )
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
            new = dataclasses.replace(current, state=state, record=proposal_json(result))
            return self._successor(current, new), events

        row = self._update(version, change)
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
            return self._successor(current, cancelled), [event]

        row = self._update(version, change)
        if row is None:
            raise NotFound(f"no policy version {version}")
        if refusal:
            raise FailedPrecondition(f"cancel refused ({refusal[0].reason}): {refusal[0].message}")
        return row

    def get(self, version: int) -> PolicyRow:
        wanted = version or self.active().version
        for row in self._rows():
            if row.version == wanted:
                return row
        raise NotFound(f"no policy version {wanted}")

    def history(self) -> list[PolicyRow]:
        return self._rows()
