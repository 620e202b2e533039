"""Enabling or disabling a key is audited once: a repeat changes nothing and writes nothing."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from custos.audit.record import AuditEvent
from custos.signer.edge.errors import NotFound
from custos.signer.store.base import KeyRecord, KeyState, Store
from custos.signer.usecases.keys import KeyManager, key_fact
from tests.support import soft_integrity


def _kinds(store: Store) -> list[str]:
    return [r.event.kind for r in store.audit_records()]


def _with_key(store: Store) -> KeyManager:
    integrity = soft_integrity()  # enable/disable check and tag rows, never reach the HSM
    key = KeyRecord("k1", b"\x04" + b"\x01" * 64, KeyState.ENABLED, "officer", 5)
    key = dataclasses.replace(key, mac=integrity.tag(key_fact(key)))
    store.insert_key(key, AuditEvent("key.created", "officer", {"key_id": "k1"}))
    generator: Any = None
    return KeyManager(store, generator, integrity=integrity)


def test_a_repeated_disable_or_enable_writes_no_record(store: Store) -> None:
    keys = _with_key(store)
    assert keys.set_state("k1", KeyState.DISABLED, "officer").state is KeyState.DISABLED
    assert keys.set_state("k1", KeyState.DISABLED, "officer2").state is KeyState.DISABLED
    assert _kinds(store) == ["key.created", "key.disabled"]
    assert keys.set_state("k1", KeyState.ENABLED, "officer").state is KeyState.ENABLED
    assert keys.set_state("k1", KeyState.ENABLED, "officer").state is KeyState.ENABLED
    assert _kinds(store) == ["key.created", "key.disabled", "key.enabled"]
    with pytest.raises(NotFound):
        keys.set_state("missing", KeyState.DISABLED, "officer")
    assert len(_kinds(store)) == 3


def test_concurrent_disables_write_one_record(store: Store) -> None:
    keys = _with_key(store)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def disable() -> None:
        try:
            start.wait()
            keys.set_state("k1", KeyState.DISABLED, "officer")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=disable) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _kinds(store) == ["key.created", "key.disabled"]
