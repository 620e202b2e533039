"""Assembles the service from its configuration and runs the gRPC server."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from custos.audit.record import AuditEvent
from custos.hsm.errors import KeyNotFound
from custos.hsm.pool import SigningPool
from custos.proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    signer_pb2,
    signer_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from custos.signer.chains.limits import ChainLimits
from custos.signer.chains.registry import Adapters, make_adapters
from custos.signer.edge import metrics, reflection
from custos.signer.edge.auth import Authorizer
from custos.signer.edge.config import Config
from custos.signer.edge.errors import ConfigError, CustosError
from custos.signer.edge.events import EventBus
from custos.signer.edge.health import HealthMonitor
from custos.signer.edge.interceptors import EdgeInterceptor, StreamLimiter
from custos.signer.edge.jsonrpc import JsonRpcServer
from custos.signer.edge.policy_services import ApprovalsService, PoliciesService
from custos.signer.edge.services import AuditService, KeysService, SignerService
from custos.signer.edge.webhook_service import WebhooksService
from custos.signer.store.factory import open_store
from custos.signer.usecases.approval_desk import ApprovalDesk
from custos.signer.usecases.auditlog import AuditGate, AuditLog, key_fingerprint
from custos.signer.usecases.authenticity import (
    StoreGuard,
    audit_alarm,
    open_authenticator,
    scan_audit_log,
)
from custos.signer.usecases.backups import BACKUP_KEY_ID, BackupMaker, VerifiedBackupAge
from custos.signer.usecases.budget_ledger import BudgetLedger
from custos.signer.usecases.ceremonies import KeyCeremonies
from custos.signer.usecases.clock import utcnow
from custos.signer.usecases.custody import Custody
from custos.signer.usecases.delivery import DeliverySigner
from custos.signer.usecases.key_import import KeyImports
from custos.signer.usecases.keys import KeyManager
from custos.signer.usecases.pipeline import SigningPipeline
from custos.signer.usecases.policy_governor import PolicyGovernor
from custos.signer.usecases.review import Reviewer, signed_transport
from custos.signer.usecases.second_factor import SecondFactor
from custos.signer.usecases.wallets import WalletManager
from custos.signer.usecases.webhook_worker import WebhookDispatcher
from custos.signer.usecases.webhooks import WebhookRegistry

log = logging.getLogger("custos.server")

SERVICE_NAMES = (
    signer_pb2.DESCRIPTOR.services_by_name["Signer"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["Keys"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name,
    policy_pb2.DESCRIPTOR.services_by_name["Policies"].full_name,
    policy_pb2.DESCRIPTOR.services_by_name["Approvals"].full_name,
    webhooks_pb2.DESCRIPTOR.services_by_name["Webhooks"].full_name,
)


def _read(path: object) -> bytes:
    try:
        with open(str(path), "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def _pinned_key(pool: SigningPool, key_id: str, pinned: str, what: str, section: str) -> bytes:
    """The token's Ed25519 `what` key, once it matches the fingerprint the config pins.

    Never generated here: a missing key is a set-up step (`custos SECTION
    init-key`), not something to paper over with a fresh key nobody pinned.
    """
    try:
        public = pool.ed25519_public_key(key_id)
    except KeyNotFound:
        raise ConfigError(
            f"the token has no {what} key {key_id!r}: the token is not the one this "
            "service was set up with, or the key was deleted. Create a key only for a new "
            f"deployment: `custos {section} init-key --config CONFIG`"
        ) from None
    found = key_fingerprint(public)
    if found != pinned:
        raise ConfigError(
            f"the token's {what} key {key_id!r} has fingerprint {found}, but "
            f"{section}.key_fingerprint pins {pinned}: the token holds a "
            f"different {what} key (swapped or replaced token); refusing to start"
        )
    return public


def _pinned_audit_key(pool: SigningPool, config: Config) -> bytes:
    audit = config.audit
    assert audit.key_fingerprint is not None  # checked before the pool opens
    return _pinned_key(pool, audit.key_id, audit.key_fingerprint, "audit", "audit")


def _event_signer(pool: SigningPool, config: Config) -> DeliverySigner | None:
    """The signer of deliveries when [events] pins its key; None: no deliveries."""
    events = config.events
    if events.key_fingerprint is None:
        return None
    public = _pinned_key(pool, events.key_id, events.key_fingerprint, "event-signing", "events")
    return DeliverySigner(public, functools.partial(pool.sign_eddsa, events.key_id))


def _longest_window_ms(governor: PolicyGovernor) -> int:
    """How long the budget ledger keeps entries at first: the active policy's longest window."""
    try:
        limits = governor.active().compiled.limits
    except CustosError:  # no usable policy yet: the ledger learns windows as it is asked
        return 0
    return max((int(lim.window.total_seconds() * 1000) for lim in limits), default=0)


class CustosServer:
    """The running service: HSM sessions, store, pipeline and the gRPC server."""

    def __init__(self, config: Config, pin: str) -> None:
        # Before the library loads; spawned signing workers inherit it too.
        os.environ.update(config.hsm.environment)
        if config.audit.key_fingerprint is None:
            raise ConfigError(
                "audit.key_fingerprint is not set: the audit key must be pinned. Run "
                "`custos audit init-key --config CONFIG` and add the line it prints "
                "to the [audit] section"
            )
        tls = config.tls
        credentials = grpc.ssl_server_credentials(
            [(_read(tls.server_key), _read(tls.server_cert))],
            root_certificates=_read(tls.ca_cert),
            require_client_auth=True,
        )
        try:
            self.store = open_store(config.store.url)
        except ValueError as exc:
            raise ConfigError(f"store.url: {exc}") from exc
        audit_key, second_factor = self._open_state(config, pin)
        self.audit = AuditLog(
            self.store,
            config.audit,
            audit_key,
            functools.partial(self.pool.sign_eddsa, config.audit.key_id),
        )
        # Budget rows carry no tag: what the verified log proves they hold is their floor.
        self.ledger = BudgetLedger(
            _longest_window_ms(self.governor),
            refresh=self.audit.catch_up,
            alarm=self.integrity.alarm,
        )
        self.audit.reader = self.ledger
        self.store.floor_budget(self.ledger)
        events = EventBus()
        limits = ChainLimits(**config.limits.model_dump())
        authorizer = Authorizer(config.identities)
        adapters = make_adapters(limits)
        self.wallets = WalletManager(self.store, self.pool, integrity=self.integrity)
        pipeline = SigningPipeline(
            self.store,
            AuditGate(self.pool, self.audit),  # no signature while the log fails its checks
            adapters,
            max_batch_items=config.server.max_batch_items,
            max_batch_work_units=limits.max_batch_work_units,
            lease_ms=config.server.lease_seconds * 1000,
            governor=self.governor,
            events=events,
            integrity=self.integrity,
            identities=authorizer.identity_of,
            reviewer=Reviewer(
                config.review,
                signed_transport(self.event_signer) if self.event_signer is not None else None,
            ),
            wallets=self.wallets,
            hd_signer=AuditGate(self.pool, self.audit, hd=self.pool),
        )
        self.desk = ApprovalDesk(
            self.store,
            pipeline,
            governor=self.governor,
            second_factor=second_factor,
            events=events,
            clock=utcnow,
            sweep_seconds=config.policy.approval_check_seconds,
        )
        self._health = health.HealthServicer()
        self.monitor = HealthMonitor(
            {
                "hsm": self.pool.check,
                "store": self.store.ping,
                "audit": self.audit.probe,
                "policy": self.governor.check_integrity,
            },
            self._publish_health,
            interval=config.health.probe_interval_seconds,
        )
        # Wake the monitor at once (its own thread: two concurrent HSM pings could
        # each hold a worker the other waits for).
        self.audit.on_failure = self.monitor.report_failure
        options = [
            # grpc enables SO_REUSEPORT by default: a second process could then bind
            # the same port and take half of the connections. The port is ours alone.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", config.server.max_message_bytes),
            ("grpc.max_send_message_length", config.server.max_message_bytes),
        ]
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=config.server.threads, thread_name_prefix="custos-rpc"
            ),
            interceptors=[
                EdgeInterceptor(
                    authorizer,
                    self.monitor.report_failure,
                    StreamLimiter(config.server.max_streams, config.server.max_streams_per_caller),
                )
            ],
            options=options,
        )
        self.webhooks = WebhookRegistry(
            self.store,
            self.integrity,
            self.event_signer,
            lambda: time.time_ns() // 1_000_000,
        )
        # Deliveries only with a pinned event-signing key ([events] key_fingerprint).
        self.dispatcher = (
            None
            if self.event_signer is None
            else WebhookDispatcher(self.store, self.webhooks, self.event_signer, config.events)
        )
        self._add_services(pipeline, second_factor, adapters)
        self._metrics_listen = config.metrics.listen
        self.metrics_port = 0
        self._stop_metrics: Callable[[], None] = lambda: None
        try:
            self.port = self._grpc.add_secure_port(config.server.listen, credentials)
        except RuntimeError:  # grpcio >= 1.60 raises where older versions returned 0
            self.port = 0
        if self.port == 0:
            self._grpc.stop(None)
            self.pool.close()
            self.store.close()
            raise ConfigError(
                f"server.listen: cannot listen on {config.server.listen}: the address is in "
                "use (is another Custos or other server running on this port?) or not "
                "available; stop it or choose another server.listen"
            )
        self._jsonrpc = self._open_jsonrpc(config, authorizer, pipeline)

    def _open_state(self, config: Config, pin: str) -> tuple[bytes, SecondFactor]:
        """The HSM pool, the state authenticator and the policy governor; the pinned
        audit public key and the second-factor desk."""
        # Replicas starting together must not each create the token's set-up keys
        # (two audit keys with one id) or each install the first policy version.
        with self.store.exclusive("setup"):
            # Every HSM call runs in the pool's worker processes; a bad library,
            # label or PIN fails here with a clear message.
            trusted = config.backup.mode == "trusted"
            self.pool = SigningPool(
                str(config.hsm.library),
                config.hsm.token_label,
                pin,
                config.signing_workers,
                wrap_with_trusted=trusted,
            )
            try:
                if trusted:
                    # Fail closed: never fall back to the weaker mode on its own.
                    problem = self.pool.trusted_backup_problem(BACKUP_KEY_ID)
                    if problem is not None:
                        raise ConfigError(f'backup.mode = "trusted": {problem}')
                audit_key = _pinned_audit_key(self.pool, config)
                self.event_signer = _event_signer(self.pool, config)
                # Stored state is trusted only with its HSM tag (invariant 8); the
                # audit log says which row versions and activations must not be undercut.
                self.integrity = open_authenticator(
                    lambda key_id: functools.partial(self.pool.hmac_many, key_id),
                    config.integrity.key_id,
                    config.integrity.key_check,
                    audit_alarm(self.store.append_audit),
                )
                logged = scan_audit_log(self.store.audit_rows)
                logged.seed(self.integrity)
                self.store.guard_rows(StoreGuard(self.integrity))
                second_factor = SecondFactor(self.store, self.pool, utcnow)
                self.governor = PolicyGovernor(
                    self.store, config.policy.bootstrap, integrity=self.integrity, logged=logged
                )
            except BaseException:
                self.pool.close()  # a clear start-up error, no orphaned workers
                raise
        return audit_key, second_factor

    def _add_services(
        self,
        pipeline: SigningPipeline,
        second_factor: SecondFactor,
        adapters: Adapters,
    ) -> None:
        signer_pb2_grpc.add_SignerServicer_to_server(SignerService(pipeline), self._grpc)
        keys = KeyManager(self.store, self.pool, integrity=self.integrity)
        imports = KeyImports(self.store, self.pool, integrity=self.integrity)
        custody = Custody(self.pool, BackupMaker(self.store, self.pool, self.integrity))
        key_ceremonies = KeyCeremonies(
            self.store,
            keys,
            self.governor,
            integrity=self.integrity,
            imports=imports,
            custody=custody,
            wallets=self.wallets,
        )
        keys_pb2_grpc.add_KeysServicer_to_server(
            KeysService(keys, key_ceremonies, second_factor, imports, self.wallets), self._grpc
        )
        audit_pb2_grpc.add_AuditServicer_to_server(AuditService(self.audit, self.store), self._grpc)
        policy_pb2_grpc.add_PoliciesServicer_to_server(
            PoliciesService(self.governor, second_factor), self._grpc
        )
        policy_pb2_grpc.add_ApprovalsServicer_to_server(
            ApprovalsService(self.desk, self.store, adapters, self.wallets), self._grpc
        )
        webhooks_pb2_grpc.add_WebhooksServicer_to_server(WebhooksService(self.webhooks), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable((*SERVICE_NAMES, health.SERVICE_NAME), self._grpc)

    @property
    def jsonrpc_port(self) -> int:
        """The JSON-RPC signer's port; 0 when [jsonrpc] is not enabled."""
        return self._jsonrpc.port if self._jsonrpc is not None else 0

    def _open_jsonrpc(
        self, config: Config, authorizer: Authorizer, pipeline: SigningPipeline
    ) -> JsonRpcServer | None:
        """The JSON-RPC signer's listener when [jsonrpc] enables it (bound, not serving)."""
        if not config.jsonrpc.enabled:
            return None
        try:
            return JsonRpcServer(config.jsonrpc, config.tls, authorizer, pipeline, self.store)
        except ConfigError:
            self._grpc.stop(None)
            self.pool.close()
            self.store.close()
            raise

    def _publish_health(self, healthy: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if healthy
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            self._health.set(name, status)

    def _bind_metrics(self) -> None:
        metrics.bind_gauge(
            metrics.PENDING_APPROVALS, lambda: len(self.store.list_pending(("pending",)))
        )
        metrics.bind_gauge(metrics.CHECKPOINT_AGE, self.audit.checkpoint_age)
        metrics.bind_gauge(metrics.BACKUP_VERIFIED_AGE, VerifiedBackupAge(self.store))
        if self._metrics_listen:
            self.metrics_port, self._stop_metrics = metrics.serve(
                self._metrics_listen, self.monitor.readiness
            )
            log.info("metrics on port %d", self.metrics_port)

    def start(self) -> None:
        # Before anything is appended: the log must extend what was signed before.
        self.audit.verify_at_start()
        self.store.append_audit([AuditEvent("service.started", "system", {"port": self.port})])
        self._bind_metrics()
        self.monitor.start()
        self.audit.start()
        self.desk.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        self._grpc.start()
        log.info("custos listening on port %d", self.port)
        if self._jsonrpc is not None:
            self._jsonrpc.start()
            log.info("json-rpc signer listening on port %d", self.jsonrpc_port)

    def wait(self) -> None:
        self._grpc.wait_for_termination()

    def stop(self, grace: float = 10.0) -> None:
        self._health.enter_graceful_shutdown()
        self.monitor.drain()
        if self._jsonrpc is not None:
            self._jsonrpc.stop()
        self._grpc.stop(grace).wait()
        self._stop_metrics()
        self.desk.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        self.monitor.stop()
        try:
            self.store.append_audit([AuditEvent("service.stopped", "system", {})])
            self.audit.stop()  # writes the final checkpoint
        finally:
            self.pool.close()
            self.store.close()
