"""The `review` action: its syntax, how the evaluator asks for it, and how the
service reads an endpoint's answer (fail closed). The HTTPS exchange itself is
tested through a real server in tests/integration/test_review_hook.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from custos.policies.evaluate import (
    Allow,
    EvaluationRequest,
    Quorum,
    RequireApproval,
    held_by_review,
)
from custos.policies.schema import PolicyValidationError, validate_document
from custos.signer.edge.config import ReviewConfig, ReviewEndpointConfig, load_config
from custos.signer.edge.errors import FailedPrecondition, PolicyDenied
from custos.signer.usecases.admission import judge
from custos.signer.usecases.policy_governor import ActivePolicy
from custos.signer.usecases.review import (
    MAX_REASON,
    Batch,
    ItemFacts,
    Reviewer,
    Unreachable,
    sanitize,
)
from tests.unit.test_policy_evaluate import (
    NOW,
    VENDOR,
    compiled,
    document,
    erc20,
    eth,
)

REVIEWED = {
    "id": "reviewed",
    "match": {"assets": ["native"], "destinations": {"entries": ["vendor"]}},
    "action": "review",
    "review": "aml",
    "approval": {"approvals": 1, "group": "security", "totp": False, "expires_after": "2h"},
}
APPROVED = {
    "id": "approved",
    "match": {"contract": {"methods": ["transfer"]}},
    "action": "require_approval",
    "approval": {"approvals": 2, "group": "approvers", "expires_after": "4h"},
}


def _request(*intents: Any) -> EvaluationRequest:
    return EvaluationRequest("svc-pay", frozenset(), tuple(intents), NOW)


def _errors(rule: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(PolicyValidationError) as info:
        validate_document(document([rule]))
    return info.value.errors


def test_a_review_rule_names_an_endpoint_and_what_a_hold_asks() -> None:
    without_review = {k: v for k, v in REVIEWED.items() if k != "review"}
    assert _errors(without_review) == ("rules[0]: 'review' is a required property",)
    without_approval = {k: v for k, v in REVIEWED.items() if k != "approval"}
    assert _errors(without_approval) == ("rules[0]: 'approval' is a required property",)
    assert _errors({**REVIEWED, "action": "allow"}) == (
        "rules[0]: must not have approval here",
        "rules[0]: must not have review here",
    )
    # A name, never a URL: where it goes is the operator's config.
    (bad,) = _errors({**REVIEWED, "review": "https://evil.example/hook"})
    assert bad.startswith("rules[0].review: ")
    (group,) = _errors({**REVIEWED, "approval": {**REVIEWED["approval"], "group": "nobody"}})
    assert group == "rules[0].approval.group: unknown identity group"


def test_the_evaluator_asks_for_each_review_once_and_keeps_the_rules_approvals() -> None:
    policy = compiled([REVIEWED, APPROVED])
    request = _request(eth(), eth(amount=5))
    decision = policy.evaluate(request, {})
    assert decision == Allow(("reviewed", "reviewed"), decision.reviews)
    (review,) = decision.reviews
    assert (review.rule_id, review.endpoint, review.expires_after) == (
        "reviewed",
        "aml",
        timedelta(hours=2),
    )
    # A review rule alone asks no approval; with a require_approval item the batch is held.
    mixed = policy.evaluate(_request(eth(), erc20()), {})
    assert isinstance(mixed, RequireApproval)
    assert mixed.quorum == (Quorum("approvers", 2),)
    assert mixed.reviews == decision.reviews


def test_a_hold_adds_the_review_rules_approval_to_what_the_batch_asks() -> None:
    policy = compiled([REVIEWED, APPROVED])
    alone = held_by_review(policy.evaluate(_request(eth()), {}))
    assert isinstance(alone, RequireApproval)
    assert (alone.quorum, alone.totp_required, alone.expires_after) == (
        (Quorum("security", 1),),
        False,
        timedelta(hours=2),
    )
    mixed = held_by_review(policy.evaluate(_request(eth(), erc20()), {}))
    assert isinstance(mixed, RequireApproval)
    assert mixed.quorum == (Quorum("approvers", 2), Quorum("security", 1))
    assert (mixed.totp_required, mixed.expires_after) == (True, timedelta(hours=2))
    # Nothing held: the decision stands.
    allowed = policy.evaluate(_request(eth()), {})
    assert held_by_review(allowed, []) is allowed


@dataclass
class _Reply:
    status: int
    body: bytes
    truncated: bool = False


class _Endpoint:
    """Answers each POST with the next of `replies` (an exception is raised)."""

    def __init__(self, *replies: _Reply | Exception) -> None:
        self.replies = list(replies)
        self.bodies: list[tuple[str, bytes, float, str | None]] = []

    def __call__(self, url: str, body: bytes, *, timeout_s: float, ca_file: str | None) -> _Reply:
        self.bodies.append((url, body, timeout_s, ca_file))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def _answer(decision: object, reason: object = "because") -> _Reply:
    return _Reply(200, json.dumps({"decision": decision, "reason": reason}).encode())


def _config(**endpoints: ReviewEndpointConfig) -> ReviewConfig:
    default = {"aml": ReviewEndpointConfig(url="https://aml.test/review")}
    return ReviewConfig(endpoints=endpoints or default)


def _run(endpoint: _Endpoint, *intents: Any, config: ReviewConfig | None = None) -> Any:
    doc = validate_document(document([REVIEWED, APPROVED]))
    active = ActivePolicy(1, "h" * 64, doc, compiled([REVIEWED, APPROVED]))
    judgement = judge(active, "svc-pay", list(intents or (eth(),)), NOW)
    batch = Batch(
        "svc-pay",
        "req-1",
        b"\x01" * 32,
        tuple(ItemFacts(i.key_id, i, (bytes(32),)) for i in intents or (eth(),)),
    )
    return Reviewer(config or _config(), endpoint).review(batch, judgement, NOW)


def test_allow_keeps_the_decision_and_records_the_answer() -> None:
    endpoint = _Endpoint(_answer("allow", "ok"))
    judged = _run(endpoint)
    assert isinstance(judged.decision, Allow)
    assert judged.reviewed == (("aml", "allow", "ok"),)
    ((url, body, timeout, ca_file),) = endpoint.bodies
    assert (url, timeout, ca_file) == ("https://aml.test/review", 2.0, None)
    sent = json.loads(body)
    assert body == json.dumps(sent, sort_keys=True, separators=(",", ":")).encode()
    assert (sent["caller"], sent["request_id"], sent["rule"]) == ("svc-pay", "req-1", "reviewed")
    assert sent["items"][0]["transfers"] == [
        {"to": VENDOR, "asset": "native", "amount": str(10**18), "change": False}
    ]


def test_hold_holds_for_the_rules_approval() -> None:
    judged = _run(_Endpoint(_answer("hold")))
    assert isinstance(judged.decision, RequireApproval)
    assert judged.decision.quorum == (Quorum("security", 1),)
    assert judged.reviewed == (("aml", "hold", "because"),)


def test_deny_carries_a_sanitized_reason() -> None:
    with pytest.raises(PolicyDenied) as info:
        _run(_Endpoint(_answer("deny", "bad\r\n\x00actor\u202e " + "y" * 1000)))
    text = str(info.value)
    assert "denied by review 'aml' (rule 'reviewed'): bad actor " in text
    assert info.value.details["code"] == "review_denied"
    reason = text.split(": ", 1)[1]
    assert len(reason) == MAX_REASON
    assert reason.endswith("...")
    assert sanitize("\x1b[2J\tfine\n") == "[2J fine"


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (_Reply(503, b'{"decision": "allow"}'), "answered HTTP 503"),
        (_Reply(302, b""), "answered HTTP 302"),
        (_Reply(200, b"allow"), "not JSON"),
        (_Reply(200, b'["allow"]'), 'no "decision"'),
        (_Reply(200, b'{"decision": "ALLOW"}'), 'no "decision"'),
        (_Reply(200, b'{"decision": "allow", "reason": 7}'), '"reason" is not a string'),
        (_Reply(200, b'{"decision": "allow"' + b" " * 70_000), "not JSON"),
        (_Reply(200, b'{"decision": "allow"}   ', truncated=True), "answer is longer than"),
        (Unreachable("aml.test:443: no answer within 2 s"), "no answer within 2 s"),
        (RuntimeError("secret internal detail"), "could not be asked"),
    ],
)
def test_anything_but_a_clear_answer_refuses(reply: _Reply | Exception, why: str) -> None:
    with pytest.raises(FailedPrecondition) as info:
        _run(_Endpoint(reply))
    assert why in str(info.value)
    assert "secret" not in str(info.value)
    assert info.value.details["code"] == "review_failed"


def test_unconfigured_endpoints_and_oversized_batches_are_not_sent() -> None:
    endpoint = _Endpoint(_answer("allow"))
    other = _config(kyc=ReviewEndpointConfig(url="https://kyc.test/"))
    with pytest.raises(FailedPrecondition, match="no such endpoint"):
        _run(endpoint, config=other)
    small = ReviewConfig(
        max_request_bytes=4096, endpoints={"aml": ReviewEndpointConfig(url="https://aml.test/")}
    )
    with pytest.raises(FailedPrecondition, match="max_request_bytes"):
        _run(endpoint, *[eth(amount=n + 1) for n in range(40)], config=small)
    assert endpoint.bodies == []
    with pytest.raises(FailedPrecondition, match="no key to sign"):
        _run(None, config=_config())  # type: ignore[arg-type]


def test_review_endpoints_are_configured_by_name(tmp_path: Path) -> None:
    base = tmp_path / "custos.toml"
    base.write_text(
        '[tls]\nca_cert = "ca.pem"\nserver_cert = "s.pem"\nserver_key = "s.key"\n'
        '[hsm]\ntoken_label = "t"\n'
        "[review]\ntimeout_seconds = 1.5\n"
        '[review.endpoints.aml]\nurl = "https://aml.internal/review"\nca_file = "aml-ca.pem"\n'
    )
    review = load_config(base).review
    assert review.timeout_seconds == 1.5
    assert review.endpoints["aml"].ca_file == tmp_path / "aml-ca.pem"
    with pytest.raises(ValueError, match="https"):
        ReviewEndpointConfig(url="http://aml.internal/review")
    with pytest.raises(ValueError, match="endpoint names"):
        ReviewConfig(endpoints={"bad name": ReviewEndpointConfig(url="https://a.test/")})
