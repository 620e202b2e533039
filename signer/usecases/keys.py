"""Key management: create keys in the HSM, register them, enable, disable and retire them.

Officers reach these through ceremonies (signer.usecases.ceremonies); the steps here
prepare each change (HSM work, tagged record, audit event) so that a ceremony
stores it together with its own final state.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence

from custos.audit.record import AuditEvent
from custos.hsm.errors import HsmUnavailable, KeyExists
from custos.hsm.keystore import KeyGenerator
from custos.signer.chains.networks import NetworkClass, parse_network_class
from custos.signer.edge.errors import (
    AlreadyExists,
    FailedPrecondition,
    InProgress,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from custos.signer.store.base import KeyAlreadyExists, KeyRecord, KeyState, Store
from custos.signer.usecases.authenticity import Fact, StateAuthenticator

KEY_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
# Where a key's secret came from (KeyRecord.origin).
GENERATED, IMPORTED = "generated", "imported"


def key_fact(record: KeyRecord) -> Fact:
    """What the HSM tag of a key record covers: every column, bound to id and version."""
    fields: tuple[tuple[str, str | int | bytes], ...] = (
        ("public_key", record.public_key),
        ("state", record.state.value),
        ("created_by", record.created_by),
        ("created_at_ms", record.created_at_ms),
        ("network_class", record.network_class),
    )
    if record.origin != GENERATED:
        # Named only when not the default, so that the tags of keys made before
        # origins existed stay valid. The encoding counts and names its fields:
        # an origin added to, dropped from or changed in a row fails its tag.
        fields += (("origin", record.origin),)
    return Fact("keys", (record.key_id,), record.version, fields)


def verify_keys(
    integrity: StateAuthenticator, records: Sequence[KeyRecord], since: int | None
) -> None:
    """TamperedState unless every record carries its HSM tag (cached: hot keys cost nothing).

    `since`: integrity.epoch() taken before the records were read.
    """
    integrity.verify([(key_fact(record), record.mac) for record in records], since)


_STATE_EVENTS = {
    KeyState.ENABLED: "key.enabled",
    KeyState.DISABLED: "key.disabled",
    KeyState.RETIRED: "key.retired",
}


def checked_network_class(key_id: str, network_class: str) -> NetworkClass:
    """The key id and class of a new key, checked (InvalidRequest naming the field)."""
    check_key_id(key_id)
    try:
        return parse_network_class(network_class)
    except ValueError as exc:
        raise InvalidRequest(f"network_class: {exc}") from None


def check_key_id(key_id: str, field: str = "key_id") -> None:
    if not KEY_ID.fullmatch(key_id):
        raise InvalidRequest(
            f"{field}: must match [a-z0-9][a-z0-9._-]{{0,62}} (lower-case, at most 63 chars)"
        )


class KeyManager:
    """Creates secp256k1 keys inside the HSM and keeps their registry in the store."""

    def __init__(
        self, store: Store, generator: KeyGenerator, *, integrity: StateAuthenticator
    ) -> None:
        self._store = store
        self._generator = generator
        self._integrity = integrity

    def create(self, key_id: str, network_class: NetworkClass, actor: str) -> KeyRecord:
        """A new key of `network_class`: it will only ever sign for networks of that class."""
        network_class = checked_network_class(key_id, network_class)
        # Two replicas creating one id at once would leave two HSM keys with one CKA_ID.
        with self._store.exclusive(f"key:{key_id}"):
            record, event = self.new_key(key_id, network_class, actor)
            try:
                self._store.insert_key(record, event)
            except KeyAlreadyExists as exc:
                raise AlreadyExists(f"key {key_id!r} already exists") from exc
        return record

    def new_key(
        self,
        key_id: str,
        network_class: NetworkClass,
        actor: str,
        context: Mapping[str, str | int] | None = None,
    ) -> tuple[KeyRecord, AuditEvent]:
        """Generate (or adopt) the key in the HSM: its tagged record and audit event, unstored.

        Call under `store.exclusive(f"key:{key_id}")`. `context`: more audit fields
        (the ceremony that creates it).
        """
        if self._store.get_key(key_id) is not None:
            raise AlreadyExists(f"key {key_id!r} already exists")
        adopted = False
        try:
            public_key = self._generator.generate_secp256k1(key_id)
        except KeyExists:
            # A previous create generated the key but failed to register it: the
            # token only accepts objects from holders of the PIN, so it is ours.
            public_key = self._generator.public_key(key_id)
            adopted = True
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not generate the key; retry later") from exc
        record = KeyRecord(
            key_id, public_key, KeyState.ENABLED, actor, time.time_ns() // 10**6, network_class
        )
        record = dataclasses.replace(record, mac=self._integrity.tag(key_fact(record)))
        event = AuditEvent(
            "key.created",
            actor,
            {
                "key_id": key_id,
                "public_key": public_key.hex(),
                "origin": GENERATED,
                "adopted": adopted,
                "network_class": network_class,
                "row_version": record.version,
                **(context or {}),
            },
        )
        return record, event

    def get(self, key_id: str) -> KeyRecord:
        check_key_id(key_id)
        since = self._integrity.epoch()
        record = self._store.get_key(key_id)
        if record is None:
            raise NotFound(f"key {key_id!r} not found")
        verify_keys(self._integrity, [record], since)
        return record

    def list(self) -> list[KeyRecord]:
        since = self._integrity.epoch()
        records = self._store.list_keys()
        verify_keys(self._integrity, records, since)
        return records

    def set_state(self, key_id: str, state: KeyState, actor: str) -> KeyRecord:
        """Enable, disable or retire a key; one already in `state` is returned as it is, unaudited.

        The audit log records changes: a repeated disable changed nothing, so it
        writes nothing. The lock (every replica's) makes the check and the change
        one step against a concurrent change of the same key.
        """
        check_key_id(key_id)
        with self._store.exclusive(f"key:{key_id}"):
            # Read (and verify) the row; a key already in `state` changes nothing. Then
            # store its one successor under a fresh tag, written only over the version
            # read (compare-and-set; the lock makes a concurrent change wait).
            change = self.successor(key_id, state, actor)
            if isinstance(change, KeyRecord):
                return change
            new, event = change
            if not self._store.replace_key(new, event):
                raise InProgress(f"key {key_id!r} changed meanwhile; retry")
        self.committed(new)
        return new

    def successor(
        self,
        key_id: str,
        state: KeyState,
        actor: str,
        context: Mapping[str, str | int] | None = None,
    ) -> tuple[KeyRecord, AuditEvent] | KeyRecord:
        """The key's next record in `state`, tagged, with its audit event; unstored.

        The current record when it is in `state` already. A retired key never
        changes again (FailedPrecondition): it never signs, whatever is asked.
        """
        current = self.get(key_id)
        if current.state is state:
            return current
        if current.state is KeyState.RETIRED:
            raise FailedPrecondition(f"key {key_id!r} is retired: it never changes or signs again")
        new = dataclasses.replace(current, state=state, version=current.version + 1, mac=None)
        new = dataclasses.replace(new, mac=self._integrity.tag(key_fact(new)))
        event = AuditEvent(
            _STATE_EVENTS[state],
            actor,
            {"key_id": key_id, "row_version": new.version, **(context or {})},
        )
        return new, event

    def committed(self, record: KeyRecord) -> None:
        """`record` is stored: from now on an older copy of the row put back is a replay."""
        self._integrity.raise_floor("keys", (record.key_id,), record.version)
