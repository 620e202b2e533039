"""Prometheus metrics and the orchestrators' health probes, on their own HTTP port.

The port ([metrics] listen) answers GET /metrics (Prometheus), /healthz (live:
the process answers) and /readyz (ready: every health component passes; 503
naming the failing ones otherwise); any other path is 404. It needs no client
certificate, so it says nothing secret: component names and counts only.

One module-level set: several servers in one process (tests) share them.
Labels never carry request ids, addresses or anything secret.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata

import grpc
from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("custos.metrics")

# A `_created` series per labelled child doubles the output and nobody alerts on it.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_SECONDS = Histogram(
    "custos_rpc_seconds",
    "Whole RPC latency (streams: until the stream ends)",
    ["service", "method", "code"],
    buckets=LATENCY_BUCKETS,
)
SIGN_REQUESTS = Counter("custos_sign_requests_total", "SignBatch requests by outcome", ["outcome"])
SIGN_ITEMS = Counter(
    "custos_sign_items_total", "Transactions in SignBatch requests", ["chain", "outcome"]
)
HSM_SECONDS = Histogram(
    "custos_hsm_sign_seconds", "HSM signing call for one batch", buckets=LATENCY_BUCKETS
)
POLICY_DENIALS = Counter("custos_policy_denials_total", "Batches the policy refused", ["rule"])
PENDING_APPROVALS = Gauge("custos_pending_approvals", "Batches waiting for approvers")
TOTP_FAILURES = Counter("custos_totp_failures_total", "Refused TOTP codes", ["reason"])
TOTP_LOCKOUTS = Counter("custos_totp_lockouts_total", "Identities locked out after failures")
AUDIT_APPEND_SECONDS = Histogram(
    "custos_audit_append_seconds", "Durable commit of audited changes", buckets=LATENCY_BUCKETS
)
BACKUP_VERIFIED_AGE = Gauge(
    "custos_backup_verified_age_seconds",
    "Seconds since the newest backup that `custos keys backup verify` found complete (NaN: none)",
)
CHECKPOINT_AGE = Gauge("custos_audit_checkpoint_age_seconds", "Seconds since the last checkpoint")
STATE_INTEGRITY_FAILURES = Counter(
    "custos_state_integrity_failures_total",
    "Stored rows whose HSM authenticator failed (the database was altered)",
    ["table"],
)
WEBHOOK_DELIVERIES = Counter(
    "custos_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, refused: non-2xx, failed: no answer)",
    ["outcome"],
)
COMPONENT_UP = Gauge("custos_component_up", "1 when the component answers", ["component"])
BUILD_INFO = Gauge(
    "custos_build_info", "Always 1; the running versions", ["version", "python", "grpc"]
)


def _version() -> str:
    try:
        return metadata.version("custos")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version(), grpc.__version__).set(1)


def rpc_labels(path: str) -> tuple[str, str]:
    """("custos.v1.Signer", "SignBatch") from "/custos.v1.Signer/SignBatch"."""
    service, _, method = path.lstrip("/").rpartition("/")
    return service, method


def bind_gauge(gauge: Gauge, read: Callable[[], float]) -> None:
    """Compute `gauge` at scrape time (e.g. pending approvals from the store).

    A scrape must answer while the store is down or closed (that is when it
    matters most): a value that cannot be read is NaN, not a failed scrape.
    """

    def guarded() -> float:
        try:
            return read()
        except Exception:  # noqa: BLE001 - the store or HSM is down; health metrics say why
            return math.nan

    gauge.set_function(guarded)


# Readiness: (ready, {component: "ok" | "failing"}) from the health monitor.
Readiness = Callable[[], tuple[bool, Mapping[str, str]]]


def _not_started() -> tuple[bool, Mapping[str, str]]:
    return False, {}


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, content_type, encoder(REGISTRY))
        elif path == "/healthz":
            self._json(200, {"status": "alive"})
        elif path == "/readyz":
            ready, components = self.server.readiness()
            failing = sorted(name for name, state in components.items() if state != "ok")
            body: dict[str, object] = {
                "status": "ready" if ready else "not ready",
                "components": dict(sorted(components.items())),
            }
            if not ready:
                body["failing"] = failing
            self._json(200 if ready else 503, body)
        else:
            self._json(404, {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]})

    def do_HEAD(self) -> None:
        self.do_GET()

    def _json(self, status: int, body: Mapping[str, object]) -> None:
        self._reply(status, "application/json", json.dumps(body).encode() + b"\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Probes arrive every few seconds: not worth a log line each.
        log.debug("metrics http: " + format, *args)


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], readiness: Readiness) -> None:
        self.readiness = readiness
        if ":" in address[0]:  # an IPv6 listen address such as [::]
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


def serve(listen: str, readiness: Readiness = _not_started) -> tuple[int, Callable[[], None]]:
    """Start the HTTP endpoint (e.g. "127.0.0.1:9464"); its port and a stop function."""
    host, _, port = listen.rpartition(":")
    server = _MetricsServer((host.strip("[]") or "0.0.0.0", int(port)), readiness)  # noqa: S104
    thread = threading.Thread(target=server.serve_forever, name="custos-metrics", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return int(server.server_port), stop
