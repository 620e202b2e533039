"""Velocity limits: buckets, batch deltas, windows, and a never-overspent property."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.common.intent import Intent, Transfer
from custos.policies.document import Limit
from custos.policies.velocity import (
    CompiledLimit,
    Delta,
    Spent,
    batch_deltas,
    check,
    remaining,
    window_start,
)


# The reference model of what a store sums: the store's SQL and the audit-log
# ledger (signer/usecases/budget_ledger.py) must agree with it.
@dataclass(frozen=True, slots=True)
class Reservation:
    """One stored reservation, as the reference model reads it."""

    key: str
    amount: int
    count: int
    reserved_at: datetime
    released: bool = False


def usage_of(reservations: Iterable[Reservation], delta: Delta, now: datetime) -> Spent:
    """Reference sum of a bucket's live reservations in its window ending at `now`."""
    start = window_start(delta, now)
    amount = count = 0
    for r in reservations:
        # No upper bound: a reservation stamped ahead of `now` (clock skew
        # between replicas) must still count, or skew would hand out budget.
        if r.key == delta.key and not r.released and r.reserved_at > start:
            amount += r.amount
            count += r.count
    return Spent(amount, count)


def reservations_for(deltas: Iterable[Delta], now: datetime) -> tuple[Reservation, ...]:
    """The reservation rows a store writes for an accepted batch."""
    return tuple(Reservation(d.key, d.amount, d.count, now) for d in deltas)


NOW = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"


def limit(**fields: Any) -> CompiledLimit:
    raw = {"id": "lim", "window": "1h", **fields}
    model = Limit.model_validate_json(json.dumps(raw))
    return CompiledLimit.of(model, {"ops": ["svc-a"]}, {"hot": ["k1", "k2"]})


def intent(
    amount: int = 100,
    *,
    key: str = "k1",
    asset: str = "native",
    chain: str = "ethereum",
    change: int = 0,
    fee: int = 0,
) -> Intent:
    transfers = [Transfer("0xTo", asset, amount)]
    if change:
        transfers.append(Transfer("0xMe", asset, change, is_change=True))
    return Intent(chain, "mainnet", key, "0xMe", tuple(transfers), fee)


def test_buckets_follow_per_dimensions() -> None:
    per_key_asset = limit(per=["key", "asset"], max_amount=10**6)
    deltas = batch_deltas(
        [per_key_asset], "svc-a", frozenset(), [intent(key="k1"), intent(key="k2")]
    )
    assert [d.key for d in deltas] == [
        "lim|key=k1|asset=ethereum:mainnet:native",
        "lim|key=k2|asset=ethereum:mainnet:native",
    ]
    per_caller = limit(per=["caller"], max_count=5)
    (delta,) = batch_deltas([per_caller], "CN=a|b%c", frozenset(), [intent()])
    assert delta.key == "lim|caller=CN=a%7Cb%25c"  # "|" in an identity cannot forge a bucket
    (delta,) = batch_deltas([limit(max_count=5)], "svc-a", frozenset(), [intent(), intent()])
    assert (delta.key, delta.count, delta.amount) == ("lim", 2, 0)


def test_a_batch_is_summed_per_bucket_and_change_does_not_count() -> None:
    lim = limit(per=["asset"], max_amount=10**6, max_count=10)
    items = [intent(100, change=999), intent(250), intent(7, asset=USDT), intent(1, chain="bsc")]
    deltas = {d.key: (d.amount, d.count) for d in batch_deltas([lim], "svc-a", frozenset(), items)}
    assert deltas == {
        "lim|asset=ethereum:mainnet:native": (350, 2),
        f"lim|asset=ethereum:mainnet:{USDT.lower()}": (7, 1),
        "lim|asset=bsc:mainnet:native": (1, 1),
    }


@pytest.mark.parametrize(
    ("scope", "caller", "groups", "item", "counted"),
    [
        ({"callers": ["svc-a"]}, "svc-a", frozenset(), intent(), True),
        ({"callers": ["svc-a"]}, "svc-b", frozenset(), intent(), False),
        ({"caller_groups": ["ops"]}, "svc-a", frozenset(), intent(), True),  # document member
        ({"caller_groups": ["ops"]}, "svc-b", frozenset({"ops"}), intent(), True),  # from outside
        ({"caller_groups": ["ops"]}, "svc-b", frozenset(), intent(), False),
        ({"key_groups": ["hot"]}, "svc-a", frozenset(), intent(key="k2"), True),
        ({"keys": ["k1"]}, "svc-a", frozenset(), intent(key="k2"), False),
        ({"chains": ["bsc"]}, "svc-a", frozenset(), intent(), False),
        ({"networks": ["sepolia"]}, "svc-a", frozenset(), intent(), False),
        ({"assets": [USDT.lower()]}, "svc-a", frozenset(), intent(asset=USDT), True),
        ({"assets": [USDT]}, "svc-a", frozenset(), intent(), False),
    ],
)
def test_scope(
    scope: dict[str, Any], caller: str, groups: frozenset[str], item: Intent, counted: bool
) -> None:
    lim = limit(per=["asset"], max_amount=10, scope=scope)
    assert bool(batch_deltas([lim], caller, groups, [item])) is counted


def test_check_allows_up_to_the_limit_exactly() -> None:
    (delta,) = batch_deltas(
        [limit(per=["asset"], max_amount=1000, max_count=3)], "c", frozenset(), [intent(400)]
    )
    assert check([delta], {delta.key: Spent(600, 2)}) is None
    breach = check([delta], {delta.key: Spent(601, 0)})
    assert breach is not None
    assert breach.remaining() == {"window_seconds": 3600, "amount": 399, "count": 3}
    breach = check([delta], {delta.key: Spent(0, 3)})
    assert breach is not None
    assert breach.remaining_count == 0
    assert remaining(delta, Spent(5000, 9)) == (0, 0)  # never negative
    with pytest.raises(KeyError):
        check([delta], {})


def test_window_is_rolling_and_releases_do_not_count() -> None:
    (delta,) = batch_deltas([limit(per=["asset"], max_amount=1000)], "c", frozenset(), [intent(1)])
    assert window_start(delta, NOW) == NOW - timedelta(hours=1)
    rows = [
        Reservation(delta.key, 100, 1, NOW - timedelta(hours=1)),  # exactly one window ago: out
        Reservation(delta.key, 200, 1, NOW - timedelta(minutes=59, seconds=59)),
        Reservation(delta.key, 400, 1, NOW - timedelta(minutes=5), released=True),
        Reservation(delta.key, 800, 1, NOW + timedelta(seconds=2)),  # a replica's clock ahead
        Reservation("other", 1600, 1, NOW),
    ]
    assert usage_of(rows, delta, NOW) == Spent(1000, 2)
    assert usage_of(rows, delta, NOW + timedelta(minutes=1)) == Spent(800, 1)
    assert reservations_for([delta], NOW) == (Reservation(delta.key, 1, 1, NOW),)


# ---- property: a sequence of accepted reservations never overspends ----------------

MAX_AMOUNT, MAX_COUNT = 1_000, 8
WINDOW_LIMIT = limit(per=["key", "asset"], max_amount=MAX_AMOUNT, max_count=MAX_COUNT)

reserve = st.tuples(st.just("reserve"), st.lists(st.integers(0, 600), min_size=1, max_size=6))
release = st.tuples(st.just("release"), st.integers(0, 10_000))
advance = st.tuples(st.just("advance"), st.integers(1, 3_000))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(reserve, release, advance), max_size=60))
def test_reservations_never_exceed_the_limit(ops: list[tuple[str, Any]]) -> None:
    now = NOW
    rows: list[Reservation] = []
    for op, arg in ops:
        if op == "advance":
            now += timedelta(seconds=arg)
        elif op == "reserve":
            batch = [intent(amount) for amount in arg]
            (delta,) = batch_deltas([WINDOW_LIMIT], "svc", frozenset(), batch)
            assert (delta.amount, delta.count) == (sum(arg), len(arg))  # the batch as a whole
            before = usage_of(rows, delta, now)
            breach = check([delta], {delta.key: before})
            fits = (
                before.amount + delta.amount <= MAX_AMOUNT
                and before.count + delta.count <= MAX_COUNT
            )
            assert (breach is None) is fits
            if breach is None:
                rows.extend(reservations_for([delta], now))
            after = usage_of(rows, delta, now)
            assert after.amount <= MAX_AMOUNT
            assert after.count <= MAX_COUNT
        elif rows:
            index = arg % len(rows)
            row = rows[index]
            probe = Delta("lim", row.key, timedelta(hours=1), 0, 0, MAX_AMOUNT, MAX_COUNT)
            before = usage_of(rows, probe, now)
            rows[index] = replace(row, released=True)
            after = usage_of(rows, probe, now)
            in_window = not row.released and row.reserved_at > window_start(probe, now)
            # A release gives back exactly what it held, and only once.
            assert before.amount - after.amount == (row.amount if in_window else 0)
            assert before.count - after.count == (row.count if in_window else 0)
    # Whatever the history, no window ending at any reservation holds more than the limit.
    for row in rows:
        probe = Delta("lim", row.key, timedelta(hours=1), 0, 0, MAX_AMOUNT, MAX_COUNT)
        live = [r for r in rows if not r.released]
        spent = usage_of(
            [r for r in live if r.reserved_at <= row.reserved_at], probe, row.reserved_at
        )
        assert spent.amount <= MAX_AMOUNT
        assert spent.count <= MAX_COUNT
