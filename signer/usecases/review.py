"""External review: a policy's `review` rules ask an endpoint before a batch is signed.

The decoded batch (the facts policy saw) is POSTed as canonical JSON to the
endpoint the config names ([review.endpoints.NAME]); the endpoint answers
`{"decision": "allow" | "deny" | "hold", "reason": "..."}`. Allow lets the
policy's decision stand, deny refuses the batch with the endpoint's reason,
hold holds it for the review rule's approval. Anything else fails closed:
an endpoint the config lacks, a body too large to send, no answer within the
timeout, a TLS or connection error, a non-2xx status, a body that is not such
an object: the batch is refused and nothing is signed.

Reviews run before the store transaction that claims the request id, on the
caller's own RPC thread and with no lock held: a slow endpoint delays only
the batches that name it, and never longer than its timeout.

A held batch is not reviewed again by the approval desk (pipeline.rejudge):
there every review rule counts as having answered "hold", so it is signed
only with that rule's approvals. The endpoint's earlier answer cannot be
believed from the store (DESIGN.md invariant 8), asking again at each
approval and sweep would make approvals hang on the endpoint, and a review
rule that a new policy added while the batch waited still has to be met.
"""

from __future__ import annotations

import json
import logging
import time
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from custos.common.intent import Intent
from custos.policies.evaluate import Review, held_by_review
from custos.signer.edge.config import ReviewConfig
from custos.signer.edge.errors import FailedPrecondition, PolicyDenied
from custos.signer.usecases.admission import Judgement
from custos.signer.usecases.delivery import DeliveryError, DeliverySigner, post_signed

log = logging.getLogger("custos.review")

ANSWERS = ("allow", "deny", "hold")
MAX_REASON = 200
REVIEW_DENIED = "review_denied"
REVIEW_FAILED = "review_failed"
REQUEST_KIND = "custos.review.v1"


class Reply(Protocol):
    """An HTTP answer: its status and (a bounded prefix of) its body."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...

    @property
    def truncated(self) -> bool: ...


class Unreachable(Exception):
    """No HTTP answer (connection, TLS, timeout); the message is safe to show the caller."""


class Transport(Protocol):
    """POSTs a signed JSON body; raises Unreachable when no answer came within `timeout_s`."""

    def __call__(
        self, url: str, body: bytes, *, timeout_s: float, ca_file: str | None
    ) -> Reply: ...


def _seconds() -> int:
    return int(time.time())


def signed_transport(signer: DeliverySigner) -> Transport:
    """POSTs signed with the event-signing key, as webhook deliveries are
    (signer.usecases.delivery)."""

    def post(url: str, body: bytes, *, timeout_s: float, ca_file: str | None) -> Reply:
        try:
            return post_signed(
                url, body, signer, timeout_s=timeout_s, ca_file=ca_file, now=_seconds
            )
        except DeliveryError as exc:
            # The caller learns what failed, not where the endpoint or its CA file
            # are; the log has the whole message.
            log.warning("review POST failed: %s", exc)
            text = str(exc)
            if text.startswith("cannot load the CA file"):
                text = "the endpoint's configured CA file cannot be loaded"
            parts = urlsplit(url)
            raise Unreachable(
                text.removeprefix(f"{parts.hostname}:{parts.port or 443}: ")
            ) from None

    return post


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """One item as the endpoint sees it: the intent policy judged, its key and digests."""

    key_id: str
    intent: Intent
    digests: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """What a review is about: who asks, which request, its items."""

    caller: str
    request_id: str
    payload_digest: bytes
    items: tuple[ItemFacts, ...]


class _Failed(Exception):
    """The endpoint gave no usable answer (fail closed); the message says why."""


def sanitize(text: str) -> str:
    """An endpoint's reason as it may reach callers and the audit log: one printable
    line of at most MAX_REASON characters."""
    printable = "".join(
        c if unicodedata.category(c)[0] not in "CZ" or c == " " else " " for c in text
    )
    line = " ".join(printable.split())
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


def _intent_json(item: ItemFacts, index: int) -> dict[str, Any]:
    intent = item.intent
    out: dict[str, Any] = {
        "index": index,
        "key_id": item.key_id,
        "chain": intent.chain,
        "network": intent.network,
        "from": intent.from_address,
        "transfers": [
            {"to": t.to, "asset": t.asset, "amount": str(t.amount), "change": t.is_change}
            for t in intent.transfers
        ],
        "fee": str(intent.fee),
        "fee_details": {name: str(value) for name, value in intent.fee_details},
        "digests": [d.hex() for d in item.digests],
    }
    calls = [
        {"contract": call.contract, "method": call.method, "args": dict(call.args)}
        for call in intent.calls
    ]
    if calls:
        out["contract_calls"] = calls
    if intent.lock_time:
        out["lock_time"] = intent.lock_time
    if intent.expiration_ms:
        out["expiration_ms"] = intent.expiration_ms
    message = intent.message
    if message is not None:
        out["message"] = {
            key: value
            for key, value in (
                ("kind", message.kind),
                ("size", message.size),
                ("domain_name", message.domain_name),
                ("domain_version", message.domain_version),
                ("chain_id", message.chain_id),
                ("verifying_contract", message.verifying_contract),
                ("primary_type", message.primary_type),
            )
            if value is not None
        }
    return out


def request_body(batch: Batch, review: Review, judgement: Judgement, now: datetime) -> bytes:
    """The canonical JSON POSTed to the endpoint (sorted keys, no spaces, UTF-8)."""
    data = {
        "kind": REQUEST_KIND,
        "endpoint": review.endpoint,
        "rule": review.rule_id,
        "caller": batch.caller,
        "request_id": batch.request_id,
        "payload_digest": batch.payload_digest.hex(),
        "policy_version": judgement.policy.hash,
        "rules": list(judgement.rules),
        "sent_at": now.isoformat(),
        "items": [_intent_json(item, i) for i, item in enumerate(batch.items)],
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_answer(reply: Reply) -> tuple[str, str]:
    """(decision, sanitized reason) of a 2xx JSON answer; _Failed for anything else."""
    if not 200 <= reply.status < 300:
        raise _Failed(f"the endpoint answered HTTP {reply.status}")
    if reply.truncated:
        raise _Failed(f"the endpoint's answer is longer than {len(reply.body)} bytes")
    try:
        data = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        raise _Failed("the endpoint's answer is not JSON") from None
    if not isinstance(data, dict) or data.get("decision") not in ANSWERS:
        raise _Failed('the endpoint\'s answer has no "decision" of allow, deny or hold')
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise _Failed('the endpoint\'s "reason" is not a string')
    return data["decision"], sanitize(reason)


class Reviewer:
    """Asks the configured endpoints what the batch's review rules name."""

    def __init__(self, config: ReviewConfig, transport: Transport | None) -> None:
        """Without a transport (no signing key for deliveries), every review fails closed."""
        self._config = config
        self._transport = transport

    def review(self, batch: Batch, judgement: Judgement, now: datetime) -> Judgement:
        """The judgement once every review answered; PolicyDenied on a deny,
        FailedPrecondition when an endpoint gave no usable answer."""
        decision = judgement.decision
        held: list[Review] = []
        answers: list[tuple[str, str, str]] = []
        for review in decision.reviews:
            answer, reason = self._ask(batch, review, judgement, now)
            log.info("review by %s of %s: %s", review.endpoint, batch.request_id[:128], answer)
            if answer == "deny":
                raise PolicyDenied(
                    f"denied by review {review.endpoint!r} (rule {review.rule_id!r}): "
                    + (reason or "no reason given"),
                    {
                        "code": REVIEW_DENIED,
                        "rule": review.rule_id,
                        "endpoint": review.endpoint,
                        "policy_version": judgement.policy.hash,
                    },
                )
            if answer == "hold":
                held.append(review)
            answers.append((review.endpoint, answer, reason))
        return replace(judgement, decision=held_by_review(decision, held), reviewed=tuple(answers))

    def _ask(
        self, batch: Batch, review: Review, judgement: Judgement, now: datetime
    ) -> tuple[str, str]:
        try:
            return self._exchange(batch, review, judgement, now)
        except _Failed as exc:
            log.warning("review by %s failed: %s", review.endpoint, exc)
            raise FailedPrecondition(
                f"review {review.endpoint!r} (rule {review.rule_id!r}) failed: {exc};"
                " the batch is refused, nothing was signed",
                {
                    "code": REVIEW_FAILED,
                    "rule": review.rule_id,
                    "endpoint": review.endpoint,
                    "policy_version": judgement.policy.hash,
                },
            ) from None

    def _exchange(
        self, batch: Batch, review: Review, judgement: Judgement, now: datetime
    ) -> tuple[str, str]:
        endpoint = self._config.endpoints.get(review.endpoint)
        if endpoint is None:
            raise _Failed("no such endpoint in the service's [review] configuration")
        if self._transport is None:
            raise _Failed("the service has no key to sign review requests with")
        body = request_body(batch, review, judgement, now)
        if len(body) > self._config.max_request_bytes:
            raise _Failed(f"the request is {len(body)} bytes, more than [review] max_request_bytes")
        timeout = endpoint.timeout_seconds or self._config.timeout_seconds
        ca_file = str(endpoint.ca_file) if endpoint.ca_file is not None else None
        try:
            reply = self._transport(endpoint.url, body, timeout_s=timeout, ca_file=ca_file)
        except Unreachable as exc:
            raise _Failed(str(exc)) from None
        except Exception:  # whatever the transport hit: no answer, and no internal text out
            log.exception("review by %s: the transport failed", review.endpoint)
            raise _Failed("the endpoint could not be asked") from None
        return parse_answer(reply)
