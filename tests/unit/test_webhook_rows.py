"""Endpoint rows as the HSM authenticates them: contents bound, a removed id refused for good."""

from __future__ import annotations

import dataclasses

import pytest

from custos.audit.record import AuditEvent, ChainHead, next_record
from custos.signer.edge.errors import TamperedState
from custos.signer.store.webhook_tables import WebhookRow
from custos.signer.usecases.authenticity import scan_audit_log
from custos.signer.usecases.webhooks import webhook_fact
from tests.support import soft_integrity

ROW = WebhookRow("wh-1", "https://a.example/hook", ("signed",), "CN=officer", 1, None)


def test_every_meaningful_field_is_bound_and_the_delivery_state_is_not() -> None:
    integrity = soft_integrity()
    tag = integrity.tag(webhook_fact(ROW))
    integrity.check(webhook_fact(dataclasses.replace(ROW, next_seq=9, owner="x")), tag)
    for change in (
        {"url": "https://b.example/hook"},
        {"kinds": ("signed", "refused")},
        {"created_by": "CN=other"},
        {"webhook_id": "wh-2"},
    ):
        with pytest.raises(TamperedState):
            integrity.check(webhook_fact(dataclasses.replace(ROW, **change)), tag)  # type: ignore[arg-type]


def test_a_removal_in_the_log_refuses_the_row_after_a_restart() -> None:
    """The start-up scan of the log raises the floor: the removed row's valid tag no longer does."""
    writer = soft_integrity()
    tag = writer.tag(webhook_fact(ROW))
    records: list[tuple[int, bytes, bytes]] = []
    head: ChainHead | None = None
    for event in (
        AuditEvent("webhook.added", "CN=officer", {"webhook_id": "wh-1"}),
        AuditEvent("webhook.removed", "CN=officer", {"webhook_id": "wh-1"}),
    ):
        record = next_record(head, event, 1)
        head = ChainHead(record.seq, record.leaf_hash())
        records.append((record.seq, record.encode(), head.hash))
    restarted = soft_integrity()  # same key, nothing remembered
    restarted.check(webhook_fact(ROW), tag)  # without the log, the old row would pass
    restarted = soft_integrity()
    scan_audit_log(lambda start, limit: records[start : start + limit]).seed(restarted)
    with pytest.raises(TamperedState, match="older than version 2"):
        restarted.check(webhook_fact(ROW), tag)
