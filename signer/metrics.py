"""Prometheus metrics, served on their own HTTP port ([metrics] listen).

One module-level set: several servers in one process (tests) share them.
Labels never carry request ids, addresses or anything secret.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_SECONDS = Histogram(
    "custos_rpc_seconds", "Whole RPC latency", ["method", "code"], buckets=LATENCY_BUCKETS
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
CHECKPOINT_AGE = Gauge("custos_audit_checkpoint_age_seconds", "Seconds since the last checkpoint")
STATE_INTEGRITY_FAILURES = Counter(
    "custos_state_integrity_failures_total",
    "Stored rows whose HSM authenticator failed (the database was altered)",
    ["table"],
)
COMPONENT_UP = Gauge("custos_component_up", "1 when the component answers", ["component"])


def bind_gauge(gauge: Gauge, read: Callable[[], float]) -> None:
    """Compute `gauge` at scrape time (e.g. pending approvals from the store)."""
    gauge.set_function(read)


def serve(listen: str) -> tuple[int, Callable[[], None]]:
    """Start the metrics HTTP endpoint (e.g. "127.0.0.1:9464"); its port and a stop function."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104
    return int(server.server_port), server.shutdown
