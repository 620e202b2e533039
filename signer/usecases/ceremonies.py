"""Key ceremonies in the service: proposals stored, approved with TOTP, executed once.

The rules are policies.ceremonies (pure); this module stores each ceremony as
a row tagged by the HSM (signer.usecases.authenticity, like policy versions), checks
the tag on every read, audits every step (proposed, approved, quorum met,
executed or failed, cancelled, expired) with what is done to which key and
never with secret material, and executes an approved ceremony exactly once:
the key change and the ceremony's final state are written in one transaction,
compare-and-set on both rows (signer.store.ceremony_tables). A ceremony whose
quorum was met but whose execution was interrupted (a crash) is executed by
the next read of it, still only once.

Each kind has an executor here (an import's is signer.usecases.key_import, a wallet's
signer.usecases.wallets, the custody kinds' signer.usecases.custody). A backup_key_init, backup or
export_key ceremony has a result that officers fetch after execution, each theirs
once (fetch()): the backup key's shares sealed for their holders at execution, a
backup file or an exported key made at the fetch, so that nothing wrapped is stored.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from custos.audit.record import AuditEvent
from custos.hsm.key_export import ExportError, recipient_fingerprint, recipient_numbers
from custos.policies import ceremonies as rules
from custos.policies.approvals import Refused
from custos.policies.governance import OfficerApproval
from custos.signer.edge.errors import (
    AlreadyExists,
    FailedPrecondition,
    InProgress,
    InvalidRequest,
    NotFound,
)
from custos.signer.store.base import KeyRecord, KeyState, Store
from custos.signer.store.ceremony_tables import CeremonyRow
from custos.signer.store.wallet_tables import WalletRecord
from custos.signer.usecases import custody
from custos.signer.usecases.authenticity import Fact, StateAuthenticator
from custos.signer.usecases.clock import Clock, utcnow
from custos.signer.usecases.custody import Custody
from custos.signer.usecases.key_import import (
    IMPORT_KEY_ID,
    KeyImports,
    import_params,
    wrapped_from_params,
)
from custos.signer.usecases.keys import KeyManager, check_key_id, checked_network_class
from custos.signer.usecases.policy_governor import PolicyGovernor
from custos.signer.usecases.wallets import (
    WalletManager,
    check_label,
    check_wallet_id,
    import_wallet_params,
    imported_from_params,
)

TABLE = "ceremonies"
FINISH_ATTEMPTS = 3
_TARGET_STATE = {
    rules.DISABLE_KEY: KeyState.DISABLED,
    rules.ENABLE_KEY: KeyState.ENABLED,
    rules.RETIRE_KEY: KeyState.RETIRED,
}


def ceremony_fact(row: CeremonyRow) -> Fact:
    """What a ceremony row's HSM tag covers: every column, bound to its id and revision."""
    return Fact(
        TABLE,
        (row.ceremony_id,),
        row.rev,
        (
            ("kind", row.kind),
            ("state", row.state),
            ("record", row.record),
            ("created_at_ms", row.created_at_ms),
        ),
    )


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def ceremony_json(ceremony: rules.Ceremony) -> str:
    raw = dataclasses.asdict(ceremony)
    for name in ("proposed_at", "expires_at", "finished_at"):
        raw[name] = _when(raw[name])
    raw["approvals"] = [
        {"officer": a.officer, "approved_at": a.approved_at.isoformat()} for a in ceremony.approvals
    ]
    return json.dumps(raw, sort_keys=True)


def ceremony_from_json(text: str) -> rules.Ceremony:
    raw = json.loads(text)
    when = datetime.fromisoformat
    raw["params"] = tuple((str(k), str(v)) for k, v in raw["params"])
    raw["proposed_at"] = when(raw["proposed_at"])
    raw["expires_at"] = when(raw["expires_at"])
    raw["finished_at"] = when(raw["finished_at"]) if raw["finished_at"] else None
    raw["approvals"] = tuple(
        OfficerApproval(a["officer"], when(a["approved_at"])) for a in raw["approvals"]
    )
    raw["sealed"] = tuple((str(k), str(v)) for k, v in raw.get("sealed", ()))
    raw["delivered_to"] = tuple(str(o) for o in raw.get("delivered_to", ()))
    return rules.Ceremony(**raw)


def _refused(step: str, refusal: Refused) -> FailedPrecondition:
    return FailedPrecondition(f"{step} refused ({refusal.reason}): {refusal.message}")


class KeyCeremonies:
    """Officers propose key ceremonies, others approve them; the quorum executes them."""

    def __init__(
        self,
        store: Store,
        keys: KeyManager,
        governor: PolicyGovernor,
        *,
        integrity: StateAuthenticator,
        clock: Clock = utcnow,
        imports: KeyImports | None = None,
        custody: Custody | None = None,
        wallets: WalletManager | None = None,
    ) -> None:
        self._store = store
        self._custody = custody
        self._wallets = wallets
        self._keys = keys
        self._imports = imports
        self._governor = governor
        self._integrity = integrity
        self._clock = clock
        self._executors: dict[str, Callable[[rules.Ceremony], _Prepared]] = {
            rules.CREATE_KEY: self._prepare_create,
            rules.DISABLE_KEY: self._prepare_state,
            rules.ENABLE_KEY: self._prepare_state,
            rules.RETIRE_KEY: self._prepare_state,
            rules.IMPORT_KEY: self._prepare_import,
            rules.BACKUP_KEY_INIT: self._prepare_backup_key,
            rules.BACKUP: self._prepare_authorized,
            rules.EXPORT_KEY: self._prepare_authorized,
            rules.EXPORT_WALLET: self._prepare_authorized,
            rules.IMPORT_KEY_INIT: self._prepare_import_key_init,
            rules.CREATE_WALLET: self._prepare_create_wallet,
            rules.IMPORT_WALLET: self._prepare_import_wallet,
        }

    # -- rows ---------------------------------------------------------------------

    def _sealed(self, row: CeremonyRow) -> CeremonyRow:
        return dataclasses.replace(row, mac=self._integrity.tag(ceremony_fact(row)))

    def _successor(self, current: CeremonyRow, ceremony: rules.Ceremony) -> CeremonyRow:
        """The next revision of the (verified) row `current`, holding `ceremony`, tagged."""
        self._integrity.check(ceremony_fact(current), current.mac)
        new = dataclasses.replace(
            current,
            state=ceremony.state,
            record=ceremony_json(ceremony),
            rev=current.rev + 1,
            mac=None,
        )
        return self._sealed(new)

    def _committed(self, row: CeremonyRow) -> None:
        self._integrity.raise_floor(TABLE, (row.ceremony_id,), row.rev)

    def _rules(self, kind: str) -> rules.CeremonyRules:
        return rules.CeremonyRules.of(self._governor.active().document, kind)

    def _event(
        self, step: str, actor: str, row: CeremonyRow, ceremony: rules.Ceremony, **more: Any
    ) -> AuditEvent:
        """An audit record of one step: the ceremony, its kind and parameters, never secrets.

        `rev` is the row's revision after the step: at start-up the audit log
        says which revision no stored copy may be older than (a replay).
        """
        return AuditEvent(
            f"ceremony.{step}",
            actor,
            {
                "ceremony_id": ceremony.ceremony_id,
                "ceremony": ceremony.kind,
                **_audited(ceremony.params),
                "digest": ceremony.digest,
                "rev": row.rev,
                **more,
            },
        )

    # -- steps --------------------------------------------------------------------

    def propose(self, officer: str, kind: str, params: Mapping[str, str]) -> CeremonyRow:
        """Store a new ceremony (checked against the key's current state); one with a
        quorum of 0 executes at once."""
        checked = self._checked_params(kind, params)
        ceremony_id = "cer-" + secrets.token_hex(8)
        result = rules.propose(
            ceremony_id, kind, checked, officer, self._rules(kind), now=self._clock()
        )
        if isinstance(result, Refused):
            raise _refused("proposal", result)
        row = self._sealed(
            CeremonyRow(
                ceremony_id,
                kind,
                result.state,
                ceremony_json(result),
                int(result.proposed_at.timestamp() * 1000),
            )
        )
        events = [
            self._event(
                "proposed", officer, row, result, approvals_required=result.approvals_required
            )
        ]
        if result.state == rules.APPROVED:
            events.append(self._event("quorum_met", "system", row, result, approved_by=""))
        self._store.insert_ceremony(row, events)
        self._committed(row)
        return self._execute(row) if row.state == rules.APPROVED else row

    def approve(
        self, officer: str, ceremony_id: str, digest: str, *, totp_verified: bool
    ) -> CeremonyRow:
        """Count one officer's approval (TOTP checked by the caller); execute at the quorum."""
        refusal: list[Refused] = []

        def change(current: CeremonyRow) -> tuple[CeremonyRow, list[AuditEvent]] | None:
            refusal.clear()  # the store may run this again when it retries a transaction
            ceremony = self._verified(current)
            result = rules.approve(
                ceremony,
                officer,
                digest,
                self._rules(ceremony.kind),
                now=self._clock(),
                totp_verified=totp_verified,
            )
            if isinstance(result, Refused):
                refusal.append(result)
                return None
            new = self._successor(current, result)
            events = [self._event("approved", officer, new, result)]
            if result.state == rules.APPROVED:
                approvers = ",".join(a.officer for a in result.approvals)
                events.append(
                    self._event("quorum_met", "system", new, result, approved_by=approvers)
                )
            return new, events

        row = self._store.update_ceremony(ceremony_id, change)
        if row is None:
            raise NotFound(f"ceremony {ceremony_id!r} not found")
        if refusal:
            raise _refused("approval", refusal[0])
        self._committed(row)
        return self._execute(row) if row.state == rules.APPROVED else row

    def cancel(self, officer: str, ceremony_id: str, *, totp_verified: bool) -> CeremonyRow:
        """Cancel a ceremony that has not met its quorum (TOTP checked by the caller)."""
        if not totp_verified:
            raise FailedPrecondition("cancel refused (totp_required): a fresh TOTP code is needed")
        refusal: list[Refused] = []

        def change(current: CeremonyRow) -> tuple[CeremonyRow, list[AuditEvent]] | None:
            refusal.clear()
            ceremony = self._verified(current)
            result = rules.cancel(ceremony, officer, self._rules(ceremony.kind), now=self._clock())
            if isinstance(result, Refused):
                refusal.append(result)
                return None
            new = self._successor(current, result)
            return new, [self._event("cancelled", officer, new, result)]

        row = self._store.update_ceremony(ceremony_id, change)
        if row is None:
            raise NotFound(f"ceremony {ceremony_id!r} not found")
        if refusal:
            raise _refused("cancel", refusal[0])
        self._committed(row)
        return row

    def get(self, ceremony_id: str) -> CeremonyRow:
        """One ceremony (verified); an interrupted execution or a lapsed proposal is settled."""
        since = self._integrity.epoch()
        row = self._store.get_ceremony(ceremony_id)
        if row is None:
            raise NotFound(f"ceremony {ceremony_id!r} not found")
        self._integrity.check(ceremony_fact(row), row.mac, since)
        return self._settled(row)

    def list(self) -> list[CeremonyRow]:
        since = self._integrity.epoch()
        rows = self._store.list_ceremonies()
        self._integrity.verify([(ceremony_fact(row), row.mac) for row in rows], since)
        return [self._settled(row) for row in rows]

    def run_alone(self, officer: str, kind: str, params: Mapping[str, str]) -> KeyRecord:
        """The single-officer key RPCs: only where the policy sets this kind's quorum to 0."""
        quorum = self._rules(kind).approvals_required
        if quorum:
            verb = kind.removesuffix("_key")
            raise FailedPrecondition(
                f"{kind} needs {quorum} officer approval(s) under the active policy"
                f" (ceremonies.{kind}): propose it with `custos keys propose-{verb}`"
            )
        target = _TARGET_STATE.get(kind)
        if target is not None:
            current = self._keys.get(params["key_id"])
            if current.state is target:
                return current  # nothing to do: no ceremony, no audit record
        row = self.propose(officer, kind, params)
        ceremony = ceremony_from_json(row.record)
        if row.state != rules.EXECUTED:
            raise FailedPrecondition(f"{kind} {ceremony.ceremony_id}: {ceremony.outcome}")
        return self._keys.get(ceremony.param("key_id"))

    def run_alone_keyless(self, officer: str, kind: str) -> None:
        """A single-officer RPC of a kind naming no key (the import key's creation):
        only where the policy sets its quorum to 0."""
        quorum = self._rules(kind).approvals_required
        if quorum:
            raise FailedPrecondition(
                f"{kind} needs {quorum} officer approval(s) under the active policy"
                f" (ceremonies.{kind}): propose it with `custos keys propose-import-key-init`"
            )
        row = self.propose(officer, kind, {})
        ceremony = ceremony_from_json(row.record)
        if row.state != rules.EXECUTED:
            raise FailedPrecondition(f"{kind} {ceremony.ceremony_id}: {ceremony.outcome}")

    def fetch(
        self, officer: str, ceremony_id: str, *, totp_verified: bool
    ) -> tuple[CeremonyRow, custody.Output]:
        """An executed ceremony's result for `officer`, once (TOTP checked by the caller).

        The result is made (or unsealed) first and handed out only once the row
        records the delivery, with its audit record, in one transaction: a
        second fetch, by this officer or a replica racing it, gets nothing.
        """
        if not totp_verified:
            raise FailedPrecondition("fetch refused (totp_required): a fresh TOTP code is needed")
        ceremony = ceremony_from_json(self.get(ceremony_id).record)
        refused = rules.deliverable(ceremony, officer, now=self._clock())
        if refused is not None:
            raise _refused("fetch", refused)
        keeper = self._keeper()
        if ceremony.kind == rules.BACKUP:
            output = keeper.backup(ceremony, officer)
        elif ceremony.kind == rules.EXPORT_KEY:
            output = keeper.export(ceremony, officer)
        elif ceremony.kind == rules.EXPORT_WALLET:
            # The row as it is now, its HSM tag checked: never a forged or swapped seed.
            wallet = self._wallet_manager().get(ceremony.param("wallet_id"))
            output = keeper.export_wallet(ceremony, officer, wallet)
        else:
            output = keeper.share(ceremony, officer)
        refusal: list[Refused] = []

        def change(current: CeremonyRow) -> tuple[CeremonyRow, list[AuditEvent]] | None:
            refusal.clear()
            now_ceremony = self._verified(current)
            again = rules.deliverable(now_ceremony, officer, now=self._clock())
            if again is not None:
                refusal.append(again)
                return None
            handed = rules.delivered(now_ceremony, officer)
            new = self._successor(current, handed)
            more = {"sha256": output.sha256} if output.sha256 else {}
            events = [self._event("delivered", officer, new, handed, to=officer, **more)]
            if output.event is not None:
                events.append(output.event)
            return new, events

        row = self._store.update_ceremony(ceremony_id, change)
        if row is None:
            raise NotFound(f"ceremony {ceremony_id!r} not found")
        if refusal:
            raise _refused("fetch", refusal[0])
        self._committed(row)
        return row, output

    # -- execution ----------------------------------------------------------------

    def _verified(self, row: CeremonyRow) -> rules.Ceremony:
        """The ceremony a locked row holds, after checking its tag."""
        self._integrity.check(ceremony_fact(row), row.mac)
        return ceremony_from_json(row.record)

    def _settled(self, row: CeremonyRow) -> CeremonyRow:
        if row.state == rules.APPROVED:
            return self._execute(row)
        if row.state == rules.OPEN and self._clock() >= ceremony_from_json(row.record).expires_at:
            return self._expire(row)
        return row

    def _expire(self, row: CeremonyRow) -> CeremonyRow:
        def change(current: CeremonyRow) -> tuple[CeremonyRow, list[AuditEvent]] | None:
            ceremony = self._verified(current)
            now = self._clock()
            if ceremony.state != rules.OPEN or now < ceremony.expires_at:
                return None
            expired = dataclasses.replace(ceremony, state=rules.EXPIRED, finished_at=now)
            new = self._successor(current, expired)
            return new, [self._event("expired", "system", new, expired)]

        updated = self._store.update_ceremony(row.ceremony_id, change) or row
        self._committed(updated)
        return updated

    def _execute(self, row: CeremonyRow) -> CeremonyRow:
        """Do what an approved ceremony says, exactly once; the row as it ends."""
        ceremony = self._verified(row)
        params = dict(ceremony.params)
        # Two replicas executing one id at once would make two HSM objects (keys) or seeds.
        if "wallet_id" in params:
            lock = f"wallet:{params['wallet_id']}"
        elif "key_id" in params:
            lock = f"key:{params['key_id']}"
        else:
            lock = f"custody:{ceremony.kind}"
        with self._store.exclusive(lock):
            for _attempt in range(FINISH_ATTEMPTS):
                try:
                    prepared = self._executors[ceremony.kind](ceremony)
                except (AlreadyExists, NotFound, FailedPrecondition, InvalidRequest) as exc:
                    prepared = _Prepared(None, [], str(exc), executed=False)
                finished = rules.finish(
                    ceremony,
                    executed=prepared.executed,
                    outcome=prepared.outcome,
                    now=self._clock(),
                )
                if prepared.sealed:
                    finished = dataclasses.replace(finished, sealed=prepared.sealed)
                new = self._successor(row, finished)
                step = "executed" if prepared.executed else "failed"
                approvers = ",".join(a.officer for a in finished.approvals)
                events = [
                    self._event(
                        step,
                        "system",
                        new,
                        finished,
                        outcome=finished.outcome,
                        approved_by=approvers,
                    ),
                    *prepared.events,
                ]
                if self._store.finish_ceremony(new, prepared.key, events, wallet=prepared.wallet):
                    self._committed(new)
                    if prepared.key is not None:
                        self._keys.committed(prepared.key)
                    if prepared.wallet is not None:
                        self._wallet_manager().committed(prepared.wallet)
                    return new
                # The ceremony or the key changed since read: read both again.
                since = self._integrity.epoch()
                current = self._store.get_ceremony(row.ceremony_id)
                if current is None:
                    raise NotFound(f"ceremony {row.ceremony_id!r} not found")
                self._integrity.check(ceremony_fact(current), current.mac, since)
                if current.state != rules.APPROVED:
                    return current  # another replica executed it
                row, ceremony = current, ceremony_from_json(current.record)
        raise InProgress(f"ceremony {row.ceremony_id!r}: the key kept changing; retry")

    def _prepare_create(self, ceremony: rules.Ceremony) -> _Prepared:
        key_id = ceremony.param("key_id")
        network_class = checked_network_class(key_id, ceremony.param("network_class"))
        record, event = self._keys.new_key(
            key_id, network_class, ceremony.proposer, {"ceremony_id": ceremony.ceremony_id}
        )
        return _Prepared(record, [event], f"created, public key {record.public_key.hex()}")

    def _prepare_import(self, ceremony: rules.Ceremony) -> _Prepared:
        record, event = self._importer().new_imported_key(
            wrapped_from_params(dict(ceremony.params)),
            ceremony.proposer,
            {"ceremony_id": ceremony.ceremony_id},
        )
        return _Prepared(record, [event], f"imported, public key {record.public_key.hex()}")

    def _prepare_backup_key(self, ceremony: rules.Ceremony) -> _Prepared:
        sealed, event = self._keeper().create_backup_key(ceremony)
        return _Prepared(
            None,
            [event],
            f"backup key made: {len(sealed)} shares, any {ceremony.param('threshold')} restore"
            " it; each holder fetches their own once (custos keys fetch ID --out FILE)",
            sealed=sealed,
        )

    def _prepare_authorized(self, ceremony: rules.Ceremony) -> _Prepared:
        """A backup or an export is made when its proposer fetches it (nothing stored)."""
        what = {rules.BACKUP: "backup file", rules.EXPORT_WALLET: "wrapped seed"}.get(
            ceremony.kind, "wrapped key"
        )
        return _Prepared(
            None,
            [],
            f"approved: the proposer fetches the {what} once (custos keys fetch ID --out FILE)",
        )

    def _prepare_import_key_init(self, ceremony: rules.Ceremony) -> _Prepared:
        info, event = self._importer().create_import_key(
            ceremony.proposer, {"ceremony_id": ceremony.ceremony_id}
        )
        return _Prepared(None, [event], f"import key made, fingerprint {info.fingerprint}")

    def _keeper(self) -> Custody:
        if self._custody is None:
            raise FailedPrecondition("this service does not hold backups or exports")
        return self._custody

    def _prepare_create_wallet(self, ceremony: rules.Ceremony) -> _Prepared:
        record, event = self._wallet_manager().new_wallet(
            ceremony.param("wallet_id"),
            ceremony.param("label"),
            ceremony.proposer,
            {"ceremony_id": ceremony.ceremony_id},
        )
        return _Prepared(None, [event], "wallet created", wallet=record)

    def _prepare_import_wallet(self, ceremony: rules.Ceremony) -> _Prepared:
        imported = imported_from_params(dict(ceremony.params))
        self._check_import_key(imported.import_key_fingerprint)
        record, event = self._wallet_manager().imported_wallet(
            imported, IMPORT_KEY_ID, ceremony.proposer, {"ceremony_id": ceremony.ceremony_id}
        )
        return _Prepared(
            None,
            [event],
            f"wallet imported, master public key {imported.master_public_key.hex()}",
            wallet=record,
        )

    def _check_import_key(self, fingerprint: str) -> None:
        current = self._importer().import_key().fingerprint
        if fingerprint != current:
            raise FailedPrecondition(
                "imported_wallet.import_key_fingerprint: encrypted to another import key"
                f" than the HSM's ({current})"
            )

    def _wallet_manager(self) -> WalletManager:
        if self._wallets is None:
            raise FailedPrecondition("this service does not hold HD wallets")
        return self._wallets

    def _importer(self) -> KeyImports:
        if self._imports is None:
            raise FailedPrecondition("this service does not import keys")
        return self._imports

    def _prepare_state(self, ceremony: rules.Ceremony) -> _Prepared:
        target = _TARGET_STATE[ceremony.kind]
        change = self._keys.successor(
            ceremony.param("key_id"),
            target,
            ceremony.proposer,
            {"ceremony_id": ceremony.ceremony_id},
        )
        if isinstance(change, KeyRecord):
            return _Prepared(None, [], f"already {target.value}; nothing changed")
        record, event = change
        return _Prepared(record, [event], f"now {target.value}")

    def _checked_params(self, kind: str, params: Mapping[str, str]) -> dict[str, str]:
        """The parameters of a proposal, checked against the key as it is now."""
        if kind not in rules.KINDS:
            raise InvalidRequest(f"kind: one of {', '.join(rules.KINDS)}")
        if kind == rules.IMPORT_KEY_INIT:
            # Refused at once: approvers never approve what cannot execute.
            try:
                self._importer().import_key()
            except FailedPrecondition:
                return {}  # none yet: it may be made
            raise AlreadyExists("the import key exists already (custos keys import-key show)")
        if kind == rules.BACKUP:
            return {}
        if kind == rules.BACKUP_KEY_INIT:
            try:
                holders = json.loads(params.get("holders", "[]"))
            except ValueError:
                raise InvalidRequest("holders: not a JSON list") from None
            if not isinstance(holders, list) or not all(isinstance(h, str) for h in holders):
                raise InvalidRequest("holders: not a list of officers")
            officers = self._rules(kind).officers
            return {
                "threshold": params.get("threshold", ""),
                "holders": custody.checked_holders(holders, params.get("threshold", ""), officers),
            }
        if kind in (rules.CREATE_WALLET, rules.IMPORT_WALLET):
            return self._checked_wallet_params(kind, params)
        if kind == rules.EXPORT_WALLET:
            wallet_id = params.get("wallet_id", "")
            self._wallet_manager().get(wallet_id)  # InvalidRequest, NotFound, DataLoss
            return {"wallet_id": wallet_id, **_checked_recipient(params)}
        key_id = params.get("key_id", "")
        check_key_id(key_id)
        if kind == rules.IMPORT_KEY:
            wrapped = wrapped_from_params(params)
            self._importer().check(wrapped, unwrap_trial=True)
            return import_params(wrapped)
        if kind == rules.EXPORT_KEY:
            self._keys.get(key_id)  # NotFound
            return {"key_id": key_id, **_checked_recipient(params)}
        if kind == rules.CREATE_KEY:
            network_class = checked_network_class(key_id, params.get("network_class", ""))
            if self._store.get_key(key_id) is not None:
                raise AlreadyExists(f"key {key_id!r} already exists")
            return {"key_id": key_id, "network_class": network_class}
        current = self._keys.get(key_id)
        if current.state is KeyState.RETIRED:
            raise FailedPrecondition(f"key {key_id!r} is retired: it never changes or signs again")
        if current.state is _TARGET_STATE[kind]:
            raise FailedPrecondition(f"key {key_id!r} is {current.state.value} already")
        return {"key_id": key_id}

    def _checked_wallet_params(self, kind: str, params: Mapping[str, str]) -> dict[str, str]:
        """A wallet ceremony's parameters: a new wallet id, and an import the HSM can unwrap."""
        if kind == rules.CREATE_WALLET:
            wallet_id = params.get("wallet_id", "")
            check_wallet_id(wallet_id)
            label = check_label(params.get("label", "") or wallet_id)
            if self._store.get_wallet(wallet_id) is not None:
                raise AlreadyExists(f"wallet {wallet_id!r} already exists")
            return {"wallet_id": wallet_id, "label": label}
        imported = imported_from_params(params)
        if self._store.get_wallet(imported.wallet_id) is not None:
            raise AlreadyExists(f"wallet {imported.wallet_id!r} already exists")
        self._check_import_key(imported.import_key_fingerprint)
        self._wallet_manager().trial_import(imported, IMPORT_KEY_ID)
        return import_wallet_params(imported)


def _checked_recipient(params: Mapping[str, str]) -> dict[str, str]:
    """An export's recipient RSA key (base64 DER) and its fingerprint; InvalidRequest naming
    the field."""
    recipient = params.get("recipient_public_key", "")
    if not recipient:
        raise InvalidRequest("recipient_public_key: required (DER SubjectPublicKeyInfo)")
    try:
        der = base64.b64decode(recipient, validate=True)
        recipient_numbers(der)
    except ValueError:
        raise InvalidRequest("recipient_public_key: not base64") from None
    except ExportError as exc:
        raise InvalidRequest(str(exc)) from None
    return {"recipient_public_key": recipient, "recipient_fingerprint": recipient_fingerprint(der)}


def _audited(params: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """A ceremony's parameters for the audit log: an imported key's blob only by its digest."""
    audited = dict(params)
    audited.pop("recipient_public_key", None)  # public, long: its fingerprint stays
    for name in ("wrapped_key", "wrapped_seed"):
        wrapped = audited.pop(name, None)
        if wrapped is not None:
            audited[f"{name}_sha256"] = hashlib.sha256(wrapped.encode()).hexdigest()
    return audited


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """What an executor prepared: the key record to store, its audit events, the outcome."""

    key: KeyRecord | None
    events: Sequence[AuditEvent]
    outcome: str
    executed: bool = True
    sealed: tuple[tuple[str, str], ...] = ()
    wallet: WalletRecord | None = None  # a new wallet, inserted with the ceremony's end
