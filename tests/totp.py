"""Fresh TOTP codes for tests against a real server, which runs on the real clock.

The server accepts the codes of steps s-1, s and s+1 during step s, and each step's
code once per identity. A test that hands out the previous step's code near the end
of a step loses it to the clock when the call takes a few seconds (a CLI run on a
busy machine does): `TotpCodes` never hands out a code that could lapse on the way,
and waits for the clock when an identity has used every step that is valid now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import pyotp

STEP_SECONDS = 30
# A code of the previous step is handed out only with this much of the current step
# left: the longest a test takes between asking for a code and the server checking it.
LAPSE_MARGIN_SECONDS = 12.0


class TotpCodes:
    """One fresh code per call for each identity (`uris`: name -> otpauth URI)."""

    def __init__(
        self,
        uris: Mapping[str, str],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._totp = {name: pyotp.parse_uri(uri) for name, uri in uris.items()}
        self._next: dict[str, int] = {}
        self._clock = clock
        self._sleep = sleep

    def code(self, name: str) -> str:
        now = self._clock()
        current = int(now) // STEP_SECONDS
        step = max(self._next.get(name, current - 1), current - 1)
        if step < current and STEP_SECONDS - now % STEP_SECONDS < LAPSE_MARGIN_SECONDS:
            step = current  # the previous step's code could lapse before it arrives
        while step > int(self._clock()) // STEP_SECONDS + 1:
            self._sleep(0.25)  # every valid step used: the next one comes with the clock
        self._next[name] = step + 1
        return str(self._totp[name].at(step * STEP_SECONDS))

    def add(self, name: str, uri: str) -> None:
        self._totp[name] = pyotp.parse_uri(uri)
