"""TOTP: RFC 6238 codes with one step of drift, single use, lockout, and no secret leaks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from custos.policies.totp import (
    INVALID,
    LOCKED,
    REPLAYED,
    TotpConfig,
    TotpResult,
    TotpSecret,
    TotpState,
    verify,
)

SECRET_TEXT = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SECRET = TotpSecret(SECRET_TEXT)
T0 = datetime(2024, 5, 6, 12, 0, 10, tzinfo=UTC)  # 10 s into a 30 s step


def code_at(when: datetime) -> str:
    return pyotp.TOTP(SECRET_TEXT).at(when)


def test_rfc6238_vector() -> None:
    # RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits) from the ASCII key "1234567890" x2.
    secret = TotpSecret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
    config = TotpConfig(digits=8)
    result = verify(secret, "94287082", datetime.fromtimestamp(59, UTC), TotpState(), config)
    assert result.ok


@pytest.mark.parametrize(
    ("offset_steps", "ok"), [(0, True), (-1, True), (1, True), (-2, False), (2, False)]
)
def test_drift_of_one_step_either_side(offset_steps: int, ok: bool) -> None:
    code = code_at(T0 + timedelta(seconds=30 * offset_steps))
    result = verify(SECRET, code, T0, TotpState())
    assert result.ok is ok
    assert result.reason == (None if ok else INVALID)


def test_result_unpacks_as_ok_state_reason() -> None:
    ok, state, reason = verify(SECRET, code_at(T0), T0, TotpState())
    assert (ok, reason) == (True, None)
    assert state == TotpState(last_step=int(T0.timestamp()) // 30)


def test_a_code_is_accepted_once() -> None:
    first = verify(SECRET, code_at(T0), T0, TotpState())
    assert first.ok
    again = verify(SECRET, code_at(T0), T0 + timedelta(seconds=5), first.state)
    assert (again.ok, again.reason) == (False, REPLAYED)
    # An older (still in drift) code after a newer one was used is a replay too.
    newer = verify(
        SECRET, code_at(T0 + timedelta(seconds=30)), T0 + timedelta(seconds=30), TotpState()
    )
    older = verify(SECRET, code_at(T0), T0 + timedelta(seconds=30), newer.state)
    assert (older.ok, older.reason) == (False, REPLAYED)
    # The next step's code works.
    later = T0 + timedelta(seconds=30)
    assert verify(SECRET, code_at(later), later, first.state).ok


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "12345a", "\uff11\uff12\uff13\uff14\uff15\uff16", " 123456"]
)
def test_malformed_codes_are_invalid(code: str) -> None:
    result = verify(SECRET, code, T0, TotpState())
    assert (result.ok, result.reason) == (False, INVALID)
    assert result.state.failures == (int(T0.timestamp()),)


def _fail(state: TotpState, at: datetime) -> TotpResult:
    return verify(SECRET, "000000" if code_at(at) != "000000" else "111111", at, state)


def test_five_failures_in_fifteen_minutes_lock_for_fifteen_minutes() -> None:
    state = TotpState()
    for i in range(4):
        result = _fail(state, T0 + timedelta(minutes=3 * i))
        assert result.reason == INVALID
        state = result.state
        assert state.locked_until is None
    fifth = T0 + timedelta(minutes=14)
    result = _fail(state, fifth)
    assert result.reason == INVALID
    assert result.state.locked_until == int(fifth.timestamp()) + 900
    state = result.state
    # Locked: even the right code is refused, and the state does not change.
    during = fifth + timedelta(minutes=14, seconds=59)
    locked = verify(SECRET, code_at(during), during, state)
    assert (locked.ok, locked.reason, locked.state) == (False, LOCKED, state)
    # Recovery: after the lockout the right code works and clears the record.
    after = fifth + timedelta(minutes=15)
    recovered = verify(SECRET, code_at(after), after, state)
    assert recovered.ok
    assert recovered.state.failures == ()
    assert recovered.state.locked_until is None


def test_failures_spread_over_more_than_the_window_do_not_lock() -> None:
    state = TotpState()
    for i in range(10):
        state = _fail(state, T0 + timedelta(minutes=4 * i)).state
        assert state.locked_until is None
        assert len(state.failures) <= 4


def test_replays_count_as_failures_and_success_resets() -> None:
    state = verify(SECRET, code_at(T0), T0, TotpState()).state
    for i in range(3):
        state = verify(SECRET, code_at(T0), T0 + timedelta(seconds=i), state).state
    assert len(state.failures) == 3
    later = T0 + timedelta(seconds=30)
    state = verify(SECRET, code_at(later), later, state).state
    assert state.failures == ()


def test_lockout_is_configurable() -> None:
    config = TotpConfig(max_failures=2, failure_window_seconds=60, lockout_seconds=30)
    wrong = "000000" if code_at(T0) != "000000" else "111111"
    state = verify(SECRET, wrong, T0, TotpState(), config).state
    assert state.locked_until is None
    state = verify(SECRET, wrong, T0 + timedelta(seconds=1), state, config).state
    assert state.locked_until == int(T0.timestamp()) + 31


def test_secrets_and_codes_never_show() -> None:
    code = code_at(T0)
    assert SECRET_TEXT not in repr(SECRET)
    assert SECRET_TEXT not in str(SECRET)
    assert SECRET_TEXT not in f"{SECRET!r} {SECRET}"
    for state in (TotpState(), verify(SECRET, code, T0, TotpState()).state):
        for result in (verify(SECRET, code, T0, state), verify(SECRET, "999999", T0, state)):
            assert code not in repr(result)
            assert "999999" not in repr(result)
            assert SECRET_TEXT not in repr(result)
    with pytest.raises(ValueError, match="not valid base32") as info:
        TotpSecret("not-base32-!!-SECRETISH")
    assert "SECRETISH" not in str(info.value)
    with pytest.raises(ValueError, match="at least 80 bits"):
        TotpSecret("JBSWY3DP")


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        verify(SECRET, code_at(T0), T0.replace(tzinfo=None), TotpState())


def test_secret_helpers() -> None:
    fresh = TotpSecret.generate()
    assert fresh != SECRET
    assert TotpSecret(SECRET_TEXT.lower()) == SECRET
    assert len({SECRET, TotpSecret(SECRET_TEXT)}) == 1
    assert fresh.reveal() in fresh.provisioning_uri("ann@custos")
    assert SECRET.reveal() == SECRET_TEXT
