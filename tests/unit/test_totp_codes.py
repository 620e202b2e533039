"""tests.totp.TotpCodes: every code it hands out is still valid after the margin, and
never reused, whatever the clock says when it is asked (a fake clock and sleep)."""

from __future__ import annotations

import pyotp
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.totp import LAPSE_MARGIN_SECONDS, STEP_SECONDS, TotpCodes

SECRET = pyotp.random_base32()
URI = pyotp.TOTP(SECRET).provisioning_uri(name="t", issuer_name="custos-test")


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(min_value=1e9, max_value=2e9),
    gaps=st.lists(st.floats(min_value=0, max_value=40), min_size=1, max_size=12),
)
def test_codes_stay_valid_for_the_margin_and_are_never_reused(
    start: float, gaps: list[float]
) -> None:
    clock = FakeClock(start)
    codes = TotpCodes({"a": URI}, clock=clock, sleep=clock.sleep)
    totp = pyotp.TOTP(SECRET)
    used: set[int] = set()
    for gap in gaps:
        clock.now += gap
        code = codes.code("a")
        # The step it belongs to, and that step is valid now and after the margin.
        current = int(clock.now) // STEP_SECONDS
        step = next(s for s in (current - 1, current, current + 1) if totp.at(s * 30) == code)
        assert step not in used
        used.add(step)
        later = int(clock.now + LAPSE_MARGIN_SECONDS - 0.001) // STEP_SECONDS
        assert later - 1 <= step <= later + 1


def test_it_waits_for_the_clock_once_every_valid_step_is_used() -> None:
    clock = FakeClock(1_000_000_015.0)  # 25 s into a step: the previous one lapses soon
    codes = TotpCodes({"a": URI}, clock=clock, sleep=clock.sleep)
    codes.code("a"), codes.code("a")  # steps s and s+1
    assert clock.now == 1_000_000_015.0
    codes.code("a")  # s+2 is valid only from step s+1 on
    assert int(clock.now) // STEP_SECONDS == 1_000_000_015 // STEP_SECONDS + 1
