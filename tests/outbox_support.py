"""Watching events in tests: a stream pumped on a thread, and the events the log says are due.

The expected events are computed here from the audit log with a table of
their own (not signer.usecases.outbox's), so a wrong mapping or visibility rule in the
server disagrees with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from custos.audit.record import AuditRecord
from custos.proto.custos.v1 import policy_pb2, policy_pb2_grpc

# Audit kind -> event kind, as the issue lists them.
BATCH = {
    "approval.requested": "pending",
    "approval.approved": "approved",
    "approval.refused": "rejected",
    "approval.rejected": "rejected",
    "approval.expired": "expired",
    "sign.signed": "signed",
    "sign.refused": "refused",
}
POLICY = {k: k for k in ("policy.proposed", "policy.approved", "policy.activated")}
POLICY["policy.cancelled"] = "policy.cancelled"
OTHER = {
    "key.created": "key.created",
    "key.enabled": "key.enabled",
    "key.disabled": "key.disabled",
    "key.retired": "key.retired",
    "totp.locked": "totp.locked",
    "totp.unlocked": "totp.unlocked",
    "audit.checkpoint": "checkpoint",
}
# Every key ceremony step but quorum_met (the executed record follows it at once).
CEREMONY = {
    f"ceremony.{step}": f"ceremony.{step}"
    for step in ("proposed", "approved", "executed", "failed", "cancelled", "expired")
}
ALL = {**BATCH, **POLICY, **OTHER, **CEREMONY}
LIVENESS_SECONDS = 60  # only a bound on a hang, never a speed assertion


RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


class StreamEnded(AssertionError):
    """The stream ended before what was awaited arrived."""

    def __init__(self, error: grpc.RpcError | None) -> None:
        super().__init__(f"stream ended: {error}")
        self.error = error


@dataclass
class Watch:
    """A WatchEvents stream read on a thread into `seen` (the `watching` message first)."""

    call: Any
    seen: list[policy_pb2.Event] = field(default_factory=list)
    error: grpc.RpcError | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self, delay: float = 0.0) -> Watch:
        def pump() -> None:
            try:
                for event in self.call:
                    self.seen.append(event)
                    if delay:
                        time.sleep(delay)  # a slow consumer
            except grpc.RpcError as exc:
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=pump, daemon=True).start()
        self.wait(bool)
        assert self.seen[0].kind == "watching", self.seen[0]
        return self

    @property
    def start_seq(self) -> int:
        return self.seen[0].seq

    @property
    def events(self) -> list[policy_pb2.Event]:
        return self.seen[1:]

    def wait(self, ready: Callable[[list[policy_pb2.Event]], bool]) -> None:
        deadline = time.monotonic() + LIVENESS_SECONDS
        while not ready(self.seen):
            if self.done.is_set() and not ready(self.seen):
                raise StreamEnded(self.error)
            assert time.monotonic() < deadline, f"still waiting; saw {[e.kind for e in self.seen]}"
            time.sleep(0.02)

    def wait_through(self, seq: int) -> None:
        """Until an event at or after `seq` arrived (use the last due event's seq)."""
        self.wait(lambda seen: len(seen) > 1 and seen[-1].seq >= seq)

    def cancel(self) -> None:
        self.call.cancel()


def watch(channel: grpc.Channel, after_seq: int | None = None, delay: float = 0.0) -> Watch:
    request = policy_pb2.WatchEventsRequest()
    if after_seq is not None:
        request.after_seq = after_seq
    stub = policy_pb2_grpc.ApprovalsStub(channel)
    deadline = time.monotonic() + LIVENESS_SECONDS
    while True:
        try:
            return Watch(stub.WatchEvents(request, timeout=600)).start(delay)
        except StreamEnded as ended:
            # A stream cancelled just before is freed by the server a moment later.
            busy = ended.error is not None and ended.error.code() == RESOURCE_EXHAUSTED
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def due(
    records: Iterable[AuditRecord],
    after_seq: int,
    sees: Callable[[AuditRecord], bool] = lambda record: True,
) -> list[tuple[int, str, str]]:
    """(seq, event kind, request id) of every event after `after_seq` that `sees` allows."""
    return [
        (r.seq, ALL[r.event.kind], str(r.event.fields.get("request_id", "")))
        for r in records
        if r.seq > after_seq and r.event.kind in ALL and sees(r)
    ]


def got(events: Iterable[policy_pb2.Event]) -> list[tuple[int, str, str]]:
    return [(e.seq, e.kind, e.request_id) for e in events]
