"""Cancelling a policy version during its activation delay (governor over a real SQLite store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from custos.signer.edge.errors import FailedPrecondition
from custos.signer.store.sqlite import SqliteStore
from custos.signer.usecases.policy_governor import PolicyGovernor
from tests.support import soft_integrity
from tests.unit.test_governor import POLICY, Clock, _entry


def _doc(version: int) -> str:
    return POLICY.format(version=version, entries=_entry("a", "0x" + "11" * 20))


def _approved(tmp_path: Path) -> tuple[PolicyGovernor, SqliteStore, Clock]:
    clock = Clock()
    store = SqliteStore(tmp_path / "db.sqlite", clock_ms=lambda: int(clock.now.timestamp() * 1000))
    path = tmp_path / "v1.yaml"
    path.write_text(_doc(1))
    governor = PolicyGovernor(store, path, clock, integrity=soft_integrity())
    row = governor.propose("CN=o1", _doc(2))
    governor.approve("CN=o2", 2, row.hash, totp_verified=True)
    governor.approve("CN=o3", 2, row.hash, totp_verified=True)
    assert governor.get(2).state == "approved"  # waits out its one-hour delay
    return governor, store, clock


def test_cancelled_during_the_delay_never_activates(tmp_path: Path) -> None:
    governor, store, clock = _approved(tmp_path)
    with pytest.raises(FailedPrecondition, match="totp"):
        governor.cancel("CN=o2", 2, totp_verified=False)
    with pytest.raises(FailedPrecondition, match="not_officer"):
        governor.cancel("CN=mallory", 2, totp_verified=True)
    assert governor.cancel("CN=o2", 2, totp_verified=True).state == "cancelled"
    clock.now = clock.now.replace(hour=clock.now.hour + 2)
    governor.refresh()
    assert governor.active().version == 1
    assert governor.get(2).state == "cancelled"
    events = [r.event for r in store.audit_records(0, 100) if r.event.kind == "policy.cancelled"]
    assert [(e.actor, e.fields["version"], e.fields["was"]) for e in events] == [
        ("CN=o2", 2, "approved")
    ]


def test_an_active_version_cannot_be_cancelled(tmp_path: Path) -> None:
    governor, _, clock = _approved(tmp_path)
    clock.now = clock.now.replace(hour=clock.now.hour + 2)
    governor.refresh()
    assert governor.active().version == 2
    with pytest.raises(FailedPrecondition, match="not_open"):
        governor.cancel("CN=o1", 2, totp_verified=True)
    with pytest.raises(FailedPrecondition, match="not_open"):
        governor.cancel("CN=o1", 1, totp_verified=True)
