"""The service's policy governor over a real SQLite store: bootstrap, M-of-N, cooling-off carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custos.common.intent import Intent, Transfer
from custos.signer.edge.errors import FailedPrecondition, PolicyDenied
from custos.signer.store.sqlite import SqliteStore
from custos.signer.usecases.admission import judge
from custos.signer.usecases.policy_governor import PolicyGovernor
from tests.support import soft_integrity

OLD = "0x1111111111111111111111111111111111111111"
NEW = "0x2222222222222222222222222222222222222222"

POLICY = """\
version: {version}
governance:
  officers: ["CN=o1", "CN=o2", "CN=o3"]
  approvals_required: 2
  activation_delay: 1h
  proposal_expires_after: 7d
address_book:
  cooling_off: 24h
  groups: [vendors]
  entries:
{entries}
rules:
  - id: vendors-only
    match:
      destinations: {{groups: [vendors]}}
    action: allow
"""


def _entry(name: str, address: str) -> str:
    return (
        f'    - {{id: {name}, chain: ethereum, network: mainnet, address: "{address}",'
        " groups: [vendors]}\n"
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _pay(governor: PolicyGovernor, to: str, now: datetime) -> str:
    intent = Intent("ethereum", "mainnet", "k1", OLD, (Transfer(to, "native", 1),), fee=1)
    try:
        return judge(governor.active(), "CN=svc", [intent], now).rules[0]
    except PolicyDenied as exc:
        return f"denied: {exc.details.get('code')}"


def test_bootstrap_quorum_activation_and_cooling_off_carry(tmp_path: Path) -> None:
    clock = Clock()
    store = SqliteStore(tmp_path / "s.db", clock_ms=lambda: int(clock.now.timestamp() * 1000))
    first = tmp_path / "v1.yaml"
    first.write_text(POLICY.format(version=1, entries=_entry("old", OLD)))
    governor = PolicyGovernor(store, first, clock, integrity=soft_integrity())
    assert governor.active().version == 1
    assert _pay(governor, OLD, clock.now) == "denied: destination_cooling_off"
    clock.now += timedelta(hours=25)
    assert _pay(governor, OLD, clock.now) == "vendors-only"

    text = POLICY.format(version=2, entries=_entry("old", OLD) + _entry("new", NEW))
    proposal = governor.propose("CN=o1", text)
    with pytest.raises(FailedPrecondition, match="own_proposal"):
        governor.approve("CN=o1", 2, proposal.hash, totp_verified=True)
    with pytest.raises(FailedPrecondition, match="totp"):
        governor.approve("CN=o2", 2, proposal.hash, totp_verified=False)
    assert governor.approve("CN=o2", 2, proposal.hash, totp_verified=True).state == "proposed"
    with pytest.raises(FailedPrecondition, match="counts once"):
        governor.approve("CN=o2", 2, proposal.hash, totp_verified=True)
    assert governor.approve("CN=o3", 2, proposal.hash, totp_verified=True).state == "approved"
    assert governor.active().version == 1  # the activation delay runs first
    clock.now += timedelta(hours=1)
    governor.refresh()
    assert governor.active().version == 2
    # The old vendor kept its cooling-off start; the new one starts now.
    assert _pay(governor, OLD, clock.now) == "vendors-only"
    assert _pay(governor, NEW, clock.now) == "denied: destination_cooling_off"
    kinds = [r.event.kind for r in store.audit_records(0, 100)]
    assert kinds == [
        "policy.activated",
        "policy.proposed",
        "policy.approved",
        "policy.approved",
        "policy.quorum_met",
        "policy.activated",
    ]
