"""From a policy decision to what the store must do: reserve budget, hold for approval, refuse.

Rules are judged outside the store's transaction (pure, on a snapshot); the
velocity limits are checked again inside it, against the reservations of
every replica, so concurrent batches can never overspend a limit.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from custos.common.intent import Intent
from custos.policies import approvals, velocity
from custos.policies.evaluate import (
    LIMIT_EXCEEDED,
    Allow,
    Decision,
    Deny,
    EvaluationRequest,
    Quorum,
    RequireApproval,
)
from custos.signer.edge.errors import BudgetExceeded, PolicyDenied
from custos.signer.store.policy_tables import Admission, PendingRow
from custos.signer.usecases.policy_governor import ActivePolicy


@dataclass(frozen=True)
class Judgement:
    policy: ActivePolicy
    decision: Allow | RequireApproval
    deltas: tuple[velocity.Delta, ...]
    now: datetime
    # The external reviews' answers (signer/usecases/review.py): (endpoint, answer, reason).
    reviewed: tuple[tuple[str, str, str], ...] = ()

    @property
    def rules(self) -> tuple[str, ...]:
        return self.decision.rule_ids


def judge(policy: ActivePolicy, caller: str, intents: Sequence[Intent], now: datetime) -> Judgement:
    """Evaluate the batch's rules; raise PolicyDenied when the policy refuses it."""
    request = EvaluationRequest(caller, frozenset(), tuple(intents), now)
    deltas = policy.compiled.limit_deltas(request)
    # Limits are checked in the store transaction; here only the rules decide.
    decision: Decision = policy.compiled.evaluate(
        request, {d.key: velocity.Spent() for d in deltas}, deltas
    )
    if isinstance(decision, Deny) and decision.code == LIMIT_EXCEEDED:
        # One batch larger than a whole limit is refused like batches that overfill
        # it together: RESOURCE_EXHAUSTED, as the README promises (issue 9 item 10).
        remaining = {k: str(v) for k, v in decision.remaining.items()}
        left = ", ".join(f"{k} {v}" for k, v in remaining.items())
        raise BudgetExceeded(
            f"velocity limit {decision.limit_id!r} exceeded (remaining: {left})",
            {"code": LIMIT_EXCEEDED, "limit": decision.limit_id or "", **remaining},
        )
    if isinstance(decision, Deny):
        details = {"code": decision.code, "policy_version": policy.hash}
        if decision.rule_id:
            details["rule"] = decision.rule_id
        if decision.item_index is not None:
            details["item"] = str(decision.item_index)
        details.update({k: str(v) for k, v in decision.details.items()})
        where = f"items[{decision.item_index}]: " if decision.item_index is not None else ""
        raise PolicyDenied(f"{where}denied by policy: {decision.reason}", details)
    return Judgement(policy, decision, deltas, now)


def budget_error(breach: velocity.Breach) -> BudgetExceeded:
    remaining = breach.remaining()
    details = {"code": "limit_exceeded", "limit": breach.limit_id}
    details.update({k: str(v) for k, v in remaining.items()})
    left = ", ".join(f"{k} {v}" for k, v in remaining.items())
    return BudgetExceeded(
        f"velocity limit {breach.limit_id!r} exceeded (remaining: {left})", details
    )


def admission(judgement: Judgement, pending: PendingRow | None) -> Admission:
    deltas = judgement.deltas
    start = {d.key: int(velocity.window_start(d, judgement.now).timestamp() * 1000) for d in deltas}
    return Admission(
        windows=tuple(start.items()),
        check=lambda usage: velocity.check(deltas, usage),
        reservations=tuple((d.key, d.amount, d.count) for d in deltas),
        pending=pending,
    )


def summarize(intent: Intent, key_id: str) -> dict[str, Any]:
    """What an approver reads about one item."""
    call = intent.contract_call
    return {
        "chain": intent.chain,
        "network": intent.network,
        "key_id": key_id,
        "from": intent.from_address,
        "destinations": [
            f"{t.to} {t.asset} {t.amount}{' (change)' if t.is_change else ''}"
            for t in intent.transfers
        ],
        "fee": str(intent.fee),
        "contract_call": f"{call.method} on {call.contract}" if call else "",
        **({"staking": intent.staking.summary()} if intent.staking else {}),
        **_message_summary(intent),
    }


def _message_summary(intent: Intent) -> dict[str, Any]:
    message = intent.message
    if message is None:
        return {}
    out: dict[str, Any] = {"message": message.kind, "message_bytes": message.size}
    if message.kind == "typed_data":
        out["typed_data"] = {
            "primary_type": message.primary_type,
            "domain_name": message.domain_name,
            "chain_id": message.chain_id,
            "verifying_contract": message.verifying_contract,
        }
        out["grants"] = [
            f"permit {dict(g.args)['spender']} to spend {dict(g.args)['amount']} of {g.contract}"
            for g in message.grants
        ]
    return out


def pending_row(
    judgement: Judgement,
    caller: str,
    request_id: str,
    request_bytes: bytes,
    summaries: list[dict[str, Any]],
) -> PendingRow:
    assert isinstance(judgement.decision, RequireApproval)
    approval_id = uuid.uuid4().hex
    digest = approvals.request_digest(caller, request_id, request_bytes)
    pending = approvals.open_request(approval_id, digest, caller, judgement.decision, judgement.now)
    record = {
        "pending": pending_to_json(pending),
        "items": summaries,
        "rules": list(judgement.rules),
        "policy": judgement.policy.hash,
    }
    return PendingRow(
        approval_id,
        caller,
        request_id,
        pending.state,
        int(pending.expires_at.timestamp() * 1000),
        json.dumps(record, sort_keys=True),
        request_bytes,
    )


def pending_to_json(pending: approvals.PendingRequest) -> dict[str, Any]:
    raw = dataclasses.asdict(pending)
    raw["request_digest"] = pending.request_digest.hex()
    raw["created_at"] = pending.created_at.isoformat()
    raw["expires_at"] = pending.expires_at.isoformat()
    raw["approvals"] = [
        {
            "approver": a.approver,
            "groups": sorted(a.groups),
            "approved_at": a.approved_at.isoformat(),
        }
        for a in pending.approvals
    ]
    return raw


def pending_from_json(raw: dict[str, Any]) -> approvals.PendingRequest:
    when = datetime.fromisoformat
    return approvals.PendingRequest(
        approval_id=raw["approval_id"],
        request_digest=bytes.fromhex(raw["request_digest"]),
        requester=raw["requester"],
        created_at=when(raw["created_at"]),
        expires_at=when(raw["expires_at"]),
        quorum=tuple(Quorum(q["group"], q["approvals"]) for q in raw["quorum"]),
        totp_required=raw["totp_required"],
        approvals=tuple(
            approvals.ApprovalRecord(a["approver"], frozenset(a["groups"]), when(a["approved_at"]))
            for a in raw["approvals"]
        ),
        state=raw["state"],
        settled_by=raw["settled_by"],
    )
