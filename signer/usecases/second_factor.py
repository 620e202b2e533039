"""TOTP second factors: enrollment by their owner, secrets sealed under an HSM key, checks.

A second factor belongs to its owner (issue 9 item 9): an identity enrolls
its own secret over its own client certificate, and only it ever sees the
otpauth:// URI. A certificate alone is not enough to (re-)enroll, or a stolen
certificate would bring its own second factor: the first enrollment redeems
a one-time token that an officer issued (the officer never sees the secret),
and a later one also accepts the owner's current code. Re-enrolling keeps
the failure count and any lockout; lifting a lockout is a separate, audited
officer action.

The secret is stored only sealed with AES-256-GCM by a key that never leaves
the HSM, bound to the identity's subject. A check unseals it for that one
comparison and updates the identity's TOTP state (last step, failures, lock)
in one transaction, so a code is accepted once even when two requests race.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from custos.audit.record import AuditEvent
from custos.policies import totp
from custos.signer.edge import metrics
from custos.signer.edge.errors import CustosError, FailedPrecondition, NotFound, PermissionDenied
from custos.signer.store.base import Store
from custos.signer.usecases.clock import Clock

TOTP_WRAP_KEY = "_totp-wrap"
TOKEN_LIFETIME = timedelta(hours=24)


class Sealer(Protocol):
    """The HSM operations a second factor needs (hsm.pool.SigningPool provides them)."""

    def ensure_aes_key(self, key_id: str) -> None: ...
    def seal(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes: ...
    def unseal(self, key_id: str, sealed: bytes, aad: bytes) -> bytes: ...


def _raw(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {"last_step": None, "failures": [], "locked_until": None}


def _with_state(raw: dict[str, Any], state: totp.TotpState) -> str:
    """The stored JSON with `state`'s fields replaced and anything else (a token) kept."""
    return json.dumps(
        {
            **raw,
            "last_step": state.last_step,
            "failures": list(state.failures),
            "locked_until": state.locked_until,
        },
        sort_keys=True,
    )


def _state(raw: dict[str, Any]) -> totp.TotpState:
    return totp.TotpState(raw["last_step"], tuple(raw["failures"]), raw["locked_until"])


def _token_hash(token: str) -> str:
    return hashlib.sha256(b"custos/totp-enrollment/v1\0" + token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    subject: str
    token: str  # shown once to the officer, who hands it to the subject out of band
    expires_at: datetime


class SecondFactor:
    """Enrolls identities and checks their codes."""

    def __init__(
        self,
        store: Store,
        hsm: Sealer,
        clock: Clock,
        config: totp.TotpConfig | None = None,
    ) -> None:
        self._store = store
        self._hsm = hsm
        self._clock = clock
        self._config = config or totp.TotpConfig()
        hsm.ensure_aes_key(TOTP_WRAP_KEY)

    def issue_token(self, officer: str, subject: str) -> IssuedToken:
        """A one-time token with which `subject` enrolls itself (the officer sees no secret)."""
        if officer == subject:
            # Else one stolen officer certificate would enroll its own second factor.
            raise PermissionDenied("subject: an officer cannot issue an enrollment token to itself")
        token = secrets.token_urlsafe(24)
        expires = self._clock() + TOKEN_LIFETIME
        event = AuditEvent(
            "totp.token_issued", officer, {"subject": subject, "expires": expires.isoformat()}
        )

        def change(
            row: tuple[bytes, str] | None,
        ) -> tuple[tuple[bytes, str], list[AuditEvent], None]:
            sealed, text = row if row is not None else (b"", None)
            raw = _raw(text)
            raw["token"] = {
                "sha256": _token_hash(token),
                "expires": int(expires.timestamp()),
                "by": officer,
            }
            return (sealed, json.dumps(raw, sort_keys=True)), [event], None

        self._store.change_totp(subject, change)
        return IssuedToken(subject, token, expires)

    def enroll(self, subject: str, *, token: str = "", code: str = "") -> str:
        """A new secret for `subject`, asked for by `subject` itself; the otpauth URI, shown once.

        Needs an unused enrollment token an officer issued, or (to rotate an
        enrolled secret) the current code. Failures and lockouts carry over.
        """
        secret = totp.TotpSecret.generate()
        sealed = self._hsm.seal(TOTP_WRAP_KEY, secret.reveal().encode(), subject.encode())
        stored = self._store.get_totp(subject)
        old_secret = None
        if code and stored is not None and stored[0]:
            old_secret = totp.TotpSecret(
                self._hsm.unseal(TOTP_WRAP_KEY, stored[0], subject.encode()).decode()
            )
        now = self._clock()

        def change(
            row: tuple[bytes, str] | None,
        ) -> tuple[tuple[bytes, str] | None, list[AuditEvent], CustosError | None]:
            raw = _raw(row[1] if row else None)
            if token:
                issued = raw.get("token") or {}
                if not hmac.compare_digest(
                    str(issued.get("sha256", "")), _token_hash(token)
                ) or now.timestamp() >= issued.get("expires", 0):
                    event = AuditEvent("totp.enroll_refused", subject, {"reason": "token"})
                    refused = PermissionDenied(
                        "enrollment_token: not a valid, unused token for this identity"
                    )
                    return None, [event], refused
                raw.pop("token")
                via = "token"
            elif code:
                if old_secret is None or row is None or not row[0]:
                    return None, [], NotFound(f"{subject} has no TOTP enrollment to rotate")
                result = totp.verify(old_secret, code, now, _state(raw), self._config)
                if not result.ok:
                    events = self._failure_events(subject, result)
                    return (row[0], _with_state(raw, result.state)), events, _refusal(result)
                via = "code"
            else:
                return (
                    None,
                    [],
                    FailedPrecondition(
                        "enrollment_token: required (an officer issues one: custos totp issue"
                        " SUBJECT); an enrolled identity may give its current code instead"
                    ),
                )
            event = AuditEvent("totp.enrolled", subject, {"subject": subject, "via": via})
            # The last step belonged to the old secret; failures and a lock stay.
            kept = _state(raw)
            fresh = totp.TotpState(None, kept.failures, kept.locked_until)
            return (sealed, _with_state(raw, fresh)), [event], None

        error = self._store.change_totp(subject, change)
        if error is not None:
            raise error
        return secret.provisioning_uri(subject)

    def unlock(self, officer: str, subject: str) -> None:
        """Lift a lockout and forget recent failures (an officer's audited action)."""
        if officer == subject:
            raise PermissionDenied("subject: an officer cannot unlock itself")

        def change(
            row: tuple[bytes, str] | None,
        ) -> tuple[tuple[bytes, str] | None, list[AuditEvent], CustosError | None]:
            if row is None or not row[0]:
                return None, [], NotFound(f"{subject} has no TOTP enrollment")
            raw = _raw(row[1])
            state = _state(raw)
            cleared = totp.TotpState(last_step=state.last_step)
            event = AuditEvent(
                "totp.unlocked",
                officer,
                {"subject": subject, "was_locked": state.locked_until is not None},
            )
            return (row[0], _with_state(raw, cleared)), [event], None

        error = self._store.change_totp(subject, change)
        if error is not None:
            raise error

    def check(self, subject: str, code: str) -> None:
        """Accept `code` once for `subject`; else PermissionDenied saying why (never the code)."""
        stored = self._store.get_totp(subject)
        if stored is None or not stored[0]:
            raise NotFound(f"{subject} has no TOTP enrollment; it must enroll itself")
        sealed, _ = stored
        secret = totp.TotpSecret(self._hsm.unseal(TOTP_WRAP_KEY, sealed, subject.encode()).decode())
        now = self._clock()

        def change(
            row: tuple[bytes, str] | None,
        ) -> tuple[tuple[bytes, str] | None, list[AuditEvent], totp.TotpResult | None]:
            if row is None or row[0] != sealed:
                return None, [], None  # re-enrolled meanwhile: this secret is gone
            raw = _raw(row[1])
            result = totp.verify(secret, code, now, _state(raw), self._config)
            return (
                (row[0], _with_state(raw, result.state)),
                self._failure_events(subject, result),
                result,
            )

        result = self._store.change_totp(subject, change)
        if result is None:
            raise PermissionDenied("TOTP code refused: the enrollment changed, try again")
        if not result.ok:
            raise _refusal(result)

    def _failure_events(self, subject: str, result: totp.TotpResult) -> list[AuditEvent]:
        events = []
        if not result.ok:
            events.append(AuditEvent("totp.failed", subject, {"reason": result.reason}))
            metrics.TOTP_FAILURES.labels(result.reason or "invalid").inc()
            if result.state.locked_until is not None and result.reason != totp.LOCKED:
                events.append(
                    AuditEvent("totp.locked", subject, {"until": result.state.locked_until})
                )
                metrics.TOTP_LOCKOUTS.inc()
        return events


def _refusal(result: totp.TotpResult) -> PermissionDenied:
    return PermissionDenied(f"TOTP code refused: {result.reason}")
