"""TOTP second factors (RFC 6238): pure verification and lockout state transitions.

The caller loads an identity's TotpState, calls `verify`, and stores the
returned state in the same transaction that acts on the result, so that a
code is used once (`last_step`) and failures add up across replicas. Neither
a code nor a secret ever appears in a reason, an exception or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import pyotp

INVALID = "invalid"
REPLAYED = "replayed"
LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class TotpConfig:
    """RFC 6238 parameters and the lockout policy."""

    step_seconds: int = 30
    digits: int = 6
    drift_steps: int = 1  # steps accepted either side of the current one
    max_failures: int = 5
    failure_window_seconds: int = 15 * 60
    lockout_seconds: int = 15 * 60


@dataclass(frozen=True, slots=True)
class TotpState:
    """Per identity: last accepted time step, recent failure times, lock end (epoch seconds)."""

    last_step: int | None = None
    failures: tuple[int, ...] = ()
    locked_until: int | None = None


class TotpResult(NamedTuple):
    """verify's outcome: unpacks as (ok, state, reason); reason is None when ok."""

    ok: bool
    state: TotpState
    reason: str | None


class TotpSecret:
    """A base32 TOTP secret whose repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, base32: str) -> None:
        value = base32.strip().replace(" ", "").upper()
        try:
            raw = base64.b32decode(value + "=" * (-len(value) % 8))
        except (binascii.Error, ValueError):
            # No echo of the input: it is (nearly) a secret even when malformed.
            raise ValueError("TOTP secret is not valid base32") from None
        if len(raw) < 10:
            raise ValueError("TOTP secret must be at least 80 bits (RFC 4226)")
        self._value = value

    @classmethod
    def generate(cls) -> TotpSecret:
        """A fresh random 160-bit secret."""
        return cls(pyotp.random_base32())

    def reveal(self) -> str:
        """The base32 text, for enrolment (QR code) and for wrapping under an HSM key only."""
        return self._value

    def provisioning_uri(self, name: str, issuer: str = "Custos") -> str:
        """otpauth:// URI for authenticator apps (contains the secret)."""
        return pyotp.TOTP(self._value).provisioning_uri(name=name, issuer_name=issuer)

    def __repr__(self) -> str:
        return "TotpSecret(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TotpSecret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("TotpSecret", self._value))


def _fail(now: int, state: TotpState, config: TotpConfig, reason: str) -> TotpResult:
    recent = tuple(t for t in state.failures if t > now - config.failure_window_seconds)
    recent += (now,)
    if len(recent) >= config.max_failures:
        locked = TotpState(state.last_step, (), now + config.lockout_seconds)
        return TotpResult(False, locked, reason)
    return TotpResult(False, TotpState(state.last_step, recent, None), reason)


def verify(
    secret: TotpSecret,
    code: str,
    now: datetime,
    state: TotpState,
    config: TotpConfig | None = None,
) -> TotpResult:
    """Check a code at `now`; returns the identity's next state whatever the outcome.

    Reasons: "locked" (too many recent failures; the state is unchanged),
    "replayed" (the code's step is not after the last accepted one) and
    "invalid". Replays and invalid codes both count as failures.
    """
    if now.tzinfo is None:
        # A naive time would be read as local time and shift every step.
        raise ValueError("now must be an aware datetime")
    config = config or TotpConfig()
    t = int(now.timestamp())
    if state.locked_until is not None:
        if t < state.locked_until:
            return TotpResult(False, state, LOCKED)
        state = TotpState(last_step=state.last_step)  # lock served: failures forgotten
    if len(code) != config.digits or not (code.isascii() and code.isdigit()):
        return _fail(t, state, config, INVALID)
    generator = pyotp.TOTP(secret.reveal(), digits=config.digits, interval=config.step_seconds)
    current = t // config.step_seconds
    steps = range(current - config.drift_steps, current + config.drift_steps + 1)
    # Compare against every candidate step so timing does not tell which one matched.
    matches = [s for s in steps if hmac.compare_digest(generator.generate_otp(s), code)]
    if not matches:
        return _fail(t, state, config, INVALID)
    fresh = [s for s in matches if state.last_step is None or s > state.last_step]
    if not fresh:
        return _fail(t, state, config, REPLAYED)
    # The earliest fresh step: taking a later one would burn the next code too.
    return TotpResult(True, TotpState(last_step=min(fresh)), None)
