"""Health of the HSM, the store and the audit log, probed in the background and on failures.

The gRPC health service reports SERVING only while the HSM and the store
answer and the audit log passed its integrity checks (signer.usecases.auditlog). A request that
fails with UNAVAILABLE flips it at once; the probe flips it back when the
component answers again. The metrics port's HTTP /readyz reads the same state
(`readiness`), and says not ready once shutdown begins (`drain`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from custos.signer.edge import metrics
from custos.signer.edge.errors import CustosError

log = logging.getLogger("custos.health")

Probe = Callable[[], None]


class HealthMonitor:
    """Runs `probes` every `interval` seconds and reports the overall state."""

    def __init__(
        self, probes: dict[str, Probe], publish: Callable[[bool], None], interval: float = 5.0
    ) -> None:
        self._probes = probes
        self._publish = publish
        self._interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="custos-health", daemon=True)
        self.healthy = False
        # Each component's last probe, for the HTTP /readyz probe; empty until the first.
        self._states: Mapping[str, str] = {}
        self._draining = False

    def start(self) -> None:
        self.check()
        self._thread.start()

    def check(self) -> bool:
        failed = []
        for name, probe in self._probes.items():
            try:
                probe()
            except Exception as exc:  # noqa: BLE001 - any failure means not serving
                failed.append(name)
                # A domain error's text is caller-safe (it says what is wrong with the
                # audit log); infrastructure errors are named by type only.
                why = str(exc) if isinstance(exc, CustosError) else type(exc).__name__
                log.warning("health probe %s failed: %s", name, why)
        healthy = not failed
        for name in self._probes:
            metrics.COMPONENT_UP.labels(name).set(0 if name in failed else 1)
        if healthy != self.healthy:
            log.info("health: %s", "serving" if healthy else f"not serving ({', '.join(failed)})")
        self.healthy = healthy
        # One assignment: /readyz threads read a whole probe round, never half of one.
        self._states = {name: "failing" if name in failed else "ok" for name in self._probes}
        self._publish(healthy)
        return healthy

    def readiness(self) -> tuple[bool, Mapping[str, str]]:
        """Ready (every component passed its last probe) and each component's state."""
        states = self._states
        if self._draining:
            return False, {**states, "server": "shutting down"}
        return bool(states) and all(state == "ok" for state in states.values()), states

    def drain(self) -> None:
        """Not ready from now on: load balancers stop sending while calls finish."""
        self._draining = True

    def report_failure(self, _exc: BaseException) -> None:
        """Called when a request hit an unavailable component: re-probe now."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stop.is_set():
                self.check()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
