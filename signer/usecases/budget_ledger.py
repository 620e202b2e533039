"""Budget usage as the verified audit log proves it: what deleting reservation rows cannot undo.

Reservation rows carry no authenticator, and a deleted row leaves nothing to
check. But every reservation is committed together with an audit record that
names it, and so is every release, and the audit log is verified (signer.usecases.auditlog):
a deleted or altered record stops signing. This ledger replays those records,
fed by AuditLog as it verifies them (at start the whole log, then what any
replica appends), into per-bucket sums:

- `sign.authorized` (actor: the caller) reserves its `reserved` list
  ([bucket, amount, count]) for (caller, request_id) at the record's time, which
  is the reservation rows' `reserved_at_ms` (the store stamps both alike);
  `approval.requested` in the same transaction names the approval id;
- `sign.failed` releases a batch that did not wait for approvals (a failed or
  abandoned attempt); a held batch keeps its budget through such failures;
- `budget.released` (an approval id) releases a rejected or expired held batch;
- `approval.proven` re-reserves a held batch under the active limits, at its
  own time (its `reserved` list; a record written before it carried one drops
  the batch, so that an older log can never cause a false alarm);
- `sign.signed` makes the reservations spent: nothing releases them after it.

Before every admission the store has the ledger catch up with the committed
log (AuditLog.catch_up: one query when nothing is new), then compares, under
its bucket locks, what the rows hold with what the ledger proves
(signer.store.sql.SqlStore._admit): the rows may hold more (a reservation
committed meanwhile), never less. Less means rows were deleted or edited
(amount, bucket, time, released flag), or a release was committed meanwhile:
the store catches up and tries again, twice, and then refuses with
TamperedState. The ledger keeps entries for the longest window it was asked
about (or given at start); see the README's threat model for the bounds.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from custos.policies.velocity import Spent
from custos.signer.edge.errors import TamperedState

log = logging.getLogger("custos.budget")

_KINDS = frozenset(
    {
        b"sign.authorized",
        b"sign.failed",
        b"sign.signed",
        b"approval.requested",
        b"approval.proven",
        b"budget.released",
    }
)
_KIND_AT = b',"kind":"'
PRUNE_EVERY = 4096  # records observed between two prunings of entries past the horizon


@dataclass(eq=False, slots=True)
class _Entry:
    ts_ms: int
    amount: int
    count: int
    live: bool = True


@dataclass(slots=True)
class _Request:
    """One (caller, request id)'s reservations, as the log tells them."""

    held: bool  # waited for approvals: only budget.released gives its budget back
    entries: list[tuple[str, _Entry]] = field(default_factory=list)
    spent: bool = False


class _Bucket:
    """Entries sorted by time, with the live sum of those after `cut_ts` kept up to date."""

    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.times: list[int] = []  # entries' ts_ms, for bisect
        self.cut = 0  # entries[:cut] have ts_ms <= cut_ts
        self.cut_ts = -(2**63)
        self.amount = 0
        self.count = 0

    def add(self, entry: _Entry) -> None:
        at = bisect.bisect_right(self.times, entry.ts_ms)
        self.times.insert(at, entry.ts_ms)
        self.entries.insert(at, entry)
        if entry.ts_ms > self.cut_ts:
            self.amount += entry.amount
            self.count += entry.count
        else:
            self.cut += 1

    def release(self, entry: _Entry) -> None:
        if entry.live:
            entry.live = False
            if entry.ts_ms > self.cut_ts:
                self.amount -= entry.amount
                self.count -= entry.count

    def usage(self, start_ms: int) -> Spent:
        """Live entries stamped strictly after `start_ms`, as the store's SQL counts them."""
        if start_ms >= self.cut_ts:
            while self.cut < len(self.entries) and self.times[self.cut] <= start_ms:
                gone = self.entries[self.cut]
                if gone.live:
                    self.amount -= gone.amount
                    self.count -= gone.count
                self.cut += 1
            self.cut_ts = start_ms
            return Spent(self.amount, self.count)
        # An earlier start (another replica's clock, a longer window): add the few
        # entries between it and the cut without moving the cut back.
        amount, count = self.amount, self.count
        for entry in self.entries[bisect.bisect_right(self.times, start_ms) : self.cut]:
            if entry.live:
                amount += entry.amount
                count += entry.count
        return Spent(amount, count)

    def prune(self, before_ms: int) -> None:
        """Forget entries stamped at or before `before_ms` that no window counts any more."""
        k = min(bisect.bisect_right(self.times, before_ms), self.cut)
        if k:
            del self.entries[:k], self.times[:k]
            self.cut -= k


class BudgetLedger:
    """Per-bucket usage replayed from verified audit records (see the module docstring)."""

    def __init__(
        self,
        horizon_ms: int,
        refresh: Callable[[], None] = lambda: None,
        alarm: Callable[[TamperedState], None] = lambda _exc: None,
    ) -> None:
        """`horizon_ms`: how long entries are kept (the longest window of the active
        policy); `refresh` verifies what the log holds now (AuditLog.catch_up);
        `alarm` counts, logs and records a refusal (StateAuthenticator.alarm)."""
        self._horizon_ms = horizon_ms
        self._refresh = refresh
        self._alarm = alarm
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything: the verified log is about to be replayed from record 0."""
        with self._lock:
            self._buckets: dict[str, _Bucket] = {}
            self._requests: dict[tuple[str, str], _Request] = {}
            self._approvals: dict[str, tuple[str, str]] = {}
            self._newest_ms = 0
            self._seen = 0

    # -- fed by AuditLog, one verified record at a time, in log order --------------

    def observe(self, data: bytes) -> None:
        """Replay one verified record (its canonical bytes); most are skipped unread."""
        # The top-level "kind" is the last one in the sorted encoding (after "fields").
        at = data.rfind(_KIND_AT)
        if at < 0:
            return
        start = at + len(_KIND_AT)
        kind = data[start : data.find(b'"', start)]
        with self._lock:
            self._seen += 1
            if self._seen % PRUNE_EVERY == 0:
                self._prune()
            if kind not in _KINDS:
                return
            record = json.loads(data)
            self._apply(kind.decode(), record["actor"], record["fields"], int(record["ts_ms"]))

    def _apply(self, kind: str, actor: str, fields: dict[str, object], ts_ms: int) -> None:
        self._newest_ms = max(self._newest_ms, ts_ms)
        request_id = str(fields.get("request_id", ""))
        if kind == "sign.authorized":
            held = fields.get("decision") == "approval"
            earlier = self._requests.get((actor, request_id))
            if earlier is not None:  # the store released it before this claim (never spent)
                self._release(earlier)
            request = self._requests[(actor, request_id)] = _Request(held)
            self._reserve(request, fields.get("reserved"), ts_ms)
        elif kind == "approval.requested":
            self._approvals[str(fields["approval_id"])] = (actor, request_id)
        elif kind == "sign.failed":
            failed = self._requests.get((actor, request_id))
            if failed is not None and not failed.held:
                self._release(failed)
                del self._requests[(actor, request_id)]
        elif kind == "sign.signed":
            signed = self._requests.get((actor, request_id))
            if signed is not None:
                signed.spent = True
            self._approvals.pop(str(fields.get("approval_id", "")), None)
        elif kind in ("budget.released", "approval.proven"):
            owner = self._approvals.get(str(fields.get("approval_id", "")))
            held_batch = self._requests.get(owner) if owner is not None else None
            if held_batch is None or held_batch.spent:
                return
            self._release(held_batch)
            if kind == "budget.released":
                self._approvals.pop(str(fields["approval_id"]), None)
                self._requests.pop(owner, None)  # type: ignore[arg-type]
            else:
                self._reserve(held_batch, fields.get("reserved"), ts_ms)

    def _reserve(self, request: _Request, reserved: object, ts_ms: int) -> None:
        for bucket, amount, count in reserved if isinstance(reserved, list) else ():
            entry = _Entry(ts_ms, int(amount), int(count))
            self._buckets.setdefault(str(bucket), _Bucket()).add(entry)
            request.entries.append((str(bucket), entry))

    def _release(self, request: _Request) -> None:
        if request.spent:
            return
        for bucket, entry in request.entries:
            owner = self._buckets.get(bucket)
            if owner is not None:
                owner.release(entry)
        request.entries.clear()

    def _prune(self) -> None:
        before = self._newest_ms - self._horizon_ms
        for bucket in self._buckets.values():
            bucket.prune(before)
        stale = [
            name
            for name, request in self._requests.items()
            if all(entry.ts_ms <= before for _bucket, entry in request.entries)
            and (request.spent or not request.held)
        ]
        for name in stale:
            del self._requests[name]

    # -- asked by the store, under its bucket locks --------------------------------

    def usage(self, bucket: str, start_ms: int, without: tuple[str, str]) -> Spent:
        """What the verified log proves bucket `bucket` holds after `start_ms`.

        Leaving out the request `without` (caller, request id): the transaction
        asking releases that request's own earlier reservations before it admits
        it again (a retry taking over a lapsed claim, a held batch re-judged).
        """
        with self._lock:
            # A longer window than any before: keep entries that long from now on.
            self._horizon_ms = max(self._horizon_ms, self._newest_ms - start_ms)
            found = self._buckets.get(bucket)
            if found is None:
                return Spent()
            spent = found.usage(start_ms)
            own = self._requests.get(without)
            if own is None or own.spent:
                return spent
            amount, count = spent.amount, spent.count
            for name, entry in own.entries:
                if name == bucket and entry.live and entry.ts_ms > start_ms:
                    amount -= entry.amount
                    count -= entry.count
            return Spent(amount, count)

    def refresh(self) -> None:
        """Verify and replay what the log holds now (what any replica committed)."""
        try:
            self._refresh()
        except Exception:  # a failed log stops signing by itself; the refusal below stands
            log.warning("could not bring the budget ledger up to date", exc_info=True)

    def tampered(self, bucket: str, logged: Spent, stored: Spent) -> TamperedState:
        """The refusal (alarm raised) when the rows hold less than the log proves."""
        exc = TamperedState(
            "reservations",
            (bucket,),
            f"holds {stored.amount} (count {stored.count}) in the window, but the audit log"
            f" proves {logged.amount} (count {logged.count}): reservation rows were deleted"
            " or altered; batches drawing on this budget are refused until the rows are"
            " restored or the proven reservations leave the window",
        )
        self._alarm(exc)
        return exc
