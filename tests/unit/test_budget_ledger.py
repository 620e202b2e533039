"""The budget ledger's replay of audit records (signer.usecases.budget_ledger), record by record."""

from __future__ import annotations

from custos.audit.record import AuditEvent, AuditRecord
from custos.policies.velocity import Spent
from custos.signer.usecases.budget_ledger import PRUNE_EVERY, BudgetLedger

NOBODY = ("", "")


class Log:
    """Records as the store writes them, fed to a ledger in log order."""

    def __init__(self, ledger: BudgetLedger) -> None:
        self.ledger = ledger
        self.seq = 0

    def add(self, kind: str, actor: str, ts_ms: int, **fields: object) -> None:
        record = AuditRecord(self.seq, ts_ms, AuditEvent(kind, actor, fields), b"")  # type: ignore[arg-type]
        self.seq += 1
        self.ledger.observe(record.encode())

    def authorized(self, rid: str, ts_ms: int, amount: int, decision: str = "allow") -> None:
        self.add(
            "sign.authorized",
            "svc",
            ts_ms,
            request_id=rid,
            decision=decision,
            reserved=[["b", str(amount), 1]],
        )


def test_windows_count_strictly_after_their_start_whatever_the_record_order() -> None:
    ledger = BudgetLedger(10_000)
    log = Log(ledger)
    log.authorized("a", 1000, 10)
    log.authorized("b", 900, 5)  # stamped before its predecessor (a concurrent transaction)
    assert ledger.usage("b", 950, NOBODY) == Spent(10, 1)
    assert ledger.usage("b", 850, NOBODY) == Spent(15, 2)  # an earlier start: a longer look
    assert ledger.usage("b", 999, NOBODY) == Spent(10, 1)
    assert ledger.usage("b", 1000, NOBODY) == Spent(0, 0)
    log.add("sign.failed", "svc", 1100, request_id="a")  # released after leaving the window
    assert ledger.usage("b", 850, NOBODY) == Spent(5, 1)
    assert ledger.usage("b", 1000, NOBODY) == Spent(0, 0)
    assert ledger.usage("other", 0, NOBODY) == Spent(0, 0)


def test_releases_follow_the_store_and_spent_budget_stays_spent() -> None:
    ledger = BudgetLedger(10_000)
    log = Log(ledger)
    log.authorized("signed", 100, 7)
    log.add("sign.signed", "svc", 101, request_id="signed")
    log.add("sign.failed", "svc", 102, request_id="signed")  # never after a signature; ignored
    log.authorized("held", 110, 20, "approval")
    log.add("approval.requested", "svc", 110, request_id="held", approval_id="ap")
    log.add("sign.failed", "svc", 111, request_id="held")  # a held batch keeps its budget
    assert ledger.usage("b", 0, NOBODY) == Spent(27, 2)
    assert ledger.usage("b", 0, ("svc", "held")) == Spent(7, 1)  # what its re-admission sees
    log.add(
        "approval.proven",
        "system",
        120,
        approval_id="ap",
        request_id="held",
        reserved=[["b", "25", 1]],
    )
    assert ledger.usage("b", 115, NOBODY) == Spent(25, 1)  # re-reserved at its own time
    log.add("budget.released", "system", 130, approval_id="ap", request_id="held")
    assert ledger.usage("b", 0, NOBODY) == Spent(7, 1)
    # A proven batch from before `reserved` was logged is dropped, never over-counted.
    log.authorized("old", 140, 9, "approval")
    log.add("approval.requested", "svc", 140, request_id="old", approval_id="ap2")
    log.add("approval.proven", "system", 150, approval_id="ap2", request_id="old")
    assert ledger.usage("b", 0, NOBODY) == Spent(7, 1)


def test_only_the_records_own_kind_counts_and_old_entries_are_pruned() -> None:
    ledger = BudgetLedger(1000)
    log = Log(ledger)
    # A nested "kind" in the fields is not the record's kind.
    log.add("test.note", "svc", 5, request_id="x", item={"kind": "sign.authorized"})
    log.authorized("early", 10, 3)
    assert ledger.usage("b", 0, NOBODY) == Spent(3, 1)
    log.add("sign.failed", "svc", 4000, request_id="unknown")
    assert ledger.usage("b", 3000, NOBODY) == Spent(0, 0)  # windows of 1000 ms have moved on
    for n in range(PRUNE_EVERY):
        log.add("sign.failed", "svc", 5000 + n, request_id=f"unknown-{n}")
    log.authorized("late", 9000, 4)
    assert ledger.usage("b", 8000, NOBODY) == Spent(4, 1)
    # Longer than any window asked about before it was pruned: "early" is forgotten
    # (the README's bound after a policy change lengthens a window).
    assert ledger.usage("b", 0, NOBODY) == Spent(4, 1)
