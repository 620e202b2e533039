"""TOTP second factors: enrollment with secrets sealed under an HSM key, and checks.

The secret is generated here, shown once (otpauth:// URI), and stored only
sealed with AES-256-GCM by a key that never leaves the HSM, bound to the
identity's subject. A check unseals it for that one comparison and updates
the identity's TOTP state (last step, failures, lock) in one transaction, so
a code is accepted once even when two requests race.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from audit.record import AuditEvent
from policies import totp
from signer import metrics
from signer.errors import NotFound, PermissionDenied
from signer.store.base import Store

TOTP_WRAP_KEY = "_totp-wrap"


class Sealer(Protocol):
    """The HSM operations a second factor needs (hsm.pool.SigningPool provides them)."""

    def ensure_aes_key(self, key_id: str) -> None: ...
    def seal(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes: ...
    def unseal(self, key_id: str, sealed: bytes, aad: bytes) -> bytes: ...


def _state_json(state: totp.TotpState) -> str:
    return json.dumps(
        {
            "last_step": state.last_step,
            "failures": list(state.failures),
            "locked_until": state.locked_until,
        }
    )


def _state(text: str) -> totp.TotpState:
    raw = json.loads(text)
    return totp.TotpState(raw["last_step"], tuple(raw["failures"]), raw["locked_until"])


class SecondFactor:
    """Enrolls identities and checks their codes."""

    def __init__(
        self,
        store: Store,
        hsm: Sealer,
        clock: Callable[[], datetime],
        config: totp.TotpConfig | None = None,
    ) -> None:
        self._store = store
        self._hsm = hsm
        self._clock = clock
        self._config = config or totp.TotpConfig()
        hsm.ensure_aes_key(TOTP_WRAP_KEY)

    def enroll(self, officer: str, subject: str) -> str:
        """A new secret for `subject` (replacing any old one); the otpauth URI, shown once."""
        secret = totp.TotpSecret.generate()
        sealed = self._hsm.seal(TOTP_WRAP_KEY, secret.reveal().encode(), subject.encode())
        event = AuditEvent("totp.enrolled", officer, {"subject": subject})
        self._store.put_totp(subject, sealed, _state_json(totp.TotpState()), event)
        return secret.provisioning_uri(subject)

    def check(self, subject: str, code: str) -> None:
        """Accept `code` once for `subject`; else PermissionDenied saying why (never the code)."""
        stored = self._store.get_totp(subject)
        if stored is None:
            raise NotFound(f"{subject} has no TOTP enrollment; an officer must enroll it")
        sealed, _ = stored
        secret = totp.TotpSecret(self._hsm.unseal(TOTP_WRAP_KEY, sealed, subject.encode()).decode())
        now = self._clock()

        def change(text: str) -> tuple[str, list[AuditEvent], totp.TotpResult]:
            result = totp.verify(secret, code, now, _state(text), self._config)
            events = []
            if not result.ok:
                events.append(AuditEvent("totp.failed", subject, {"reason": result.reason}))
                metrics.TOTP_FAILURES.labels(result.reason or "invalid").inc()
                if result.state.locked_until is not None and result.reason != totp.LOCKED:
                    events.append(
                        AuditEvent("totp.locked", subject, {"until": result.state.locked_until})
                    )
                    metrics.TOTP_LOCKOUTS.inc()
            return _state_json(result.state), events, result

        result = self._store.update_totp_state(subject, change)
        if not result.ok:
            raise PermissionDenied(f"TOTP code refused: {result.reason}")
