"""The TOML configuration, validated at start-up.

Unknown keys and bad values are rejected with the key's path named. The HSM
PIN never lives in this file: it comes from an environment variable or a file
named here (hsm.pin_env / hsm.pin_file).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from custos.signer.edge.errors import ConfigError

Role = Literal["service", "approver", "officer", "auditor"]
NAME_RULE = "letters, digits and _.:- , at most 64, starting with a letter or digit"
# policies.document.Name: what a policy's `review:` can name.
REVIEW_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    listen: str = "127.0.0.1:50051"
    threads: int = Field(default=32, ge=1, le=1024)
    max_batch_items: int = Field(default=1000, ge=1, le=10_000)
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # A crashed attempt's claim on a request id expires after this; see Store.claim_batch.
    lease_seconds: int = Field(default=60, ge=1, le=3600)
    # Open streams (WatchEvents, StreamRecords, Export, health Watch, reflection)
    # each hold a thread while open: at most half the threads, so unary calls and
    # health checks always have threads left; and a share of it per caller.
    max_streams: int = Field(default=16, ge=1)
    max_streams_per_caller: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _threads_left_for_unary_calls(self) -> ServerConfig:
        if self.max_streams > self.threads // 2:
            raise ValueError(
                f"max_streams ({self.max_streams}) must be at most half of threads "
                f"({self.threads}): the other threads serve unary calls and health checks"
            )
        if self.max_streams_per_caller > self.max_streams:
            raise ValueError(
                f"max_streams_per_caller ({self.max_streams_per_caller}) must be at most "
                f"max_streams ({self.max_streams})"
            )
        return self


class TlsConfig(_Section):
    ca_cert: Path
    server_cert: Path
    server_key: Path


class HsmConfig(_Section):
    library: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    token_label: str = Field(min_length=1, max_length=32)
    pin_env: str | None = "CUSTOS_HSM_PIN"
    pin_file: Path | None = None
    workers: int = Field(default=0, ge=0, le=256, description="0 = one per CPU core")
    # Variables the PKCS#11 library reads (e.g. SOFTHSM2_CONF), set before it loads.
    environment: dict[str, str] = Field(default_factory=dict)


class BackupConfig(_Section):
    """How keys are made wrappable for backups (hsm.backup.BackupKeyMode).

    "private" (the default): the backup key is a private user object and keys
    are extractable only wrapped. "trusted": for HSMs that can: keys carry
    CKA_WRAP_WITH_TRUSTED and the security officer makes a private, CKA_TRUSTED
    backup key; start-up checks the token and refuses to start when it cannot
    (SoftHSM cannot, see README).
    """

    mode: Literal["private", "trusted"] = "private"


class StoreConfig(_Section):
    # sqlite:///PATH (one process) or postgresql://USER@HOST:PORT/DB?schema=NAME (replicas).
    url: str = "sqlite:///custos.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must be sqlite:///PATH or postgresql://...")
        return value


class AuditConfig(_Section):
    # First line of every checkpoint: names this log, so a checkpoint of one log
    # can never pass for another's.
    origin: str = Field(default="custos.local/audit", min_length=1, pattern=r"^[^\n]+$")
    key_name: str = Field(default="custos-audit", pattern=r"^[^\s+]+$")
    key_id: str = Field(default="_audit", min_length=1, max_length=64)
    checkpoint_every_records: int = Field(default=1000, ge=1)
    checkpoint_every_seconds: float = Field(default=60.0, gt=0)
    # SHA-256 (hex) of the audit key's raw 32-byte Ed25519 public key, pinned at
    # set-up (`custos init`, `custos audit init-key`): start-up refuses a token
    # whose audit key is missing or differs. None only so that init-key can read
    # a config that does not pin one yet; `serve` refuses it.
    key_fingerprint: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # Where the service keeps the latest checkpoint it signed or verified, outside
    # the database, so that a rollback of the store (records and checkpoint rows)
    # is detected across restarts. Default: beside the config, one file per store.
    witness_file: Path | None = None


class IntegrityConfig(_Section):
    # The HSM-resident HMAC-SHA256 key that authenticates stored state (DESIGN
    # invariant 8). Created only by a set-up step (`custos init`, `custos integrity
    # init-key`); start-up fails when the token lacks it.
    key_id: str = Field(default="_state", min_length=1, max_length=64)
    # Hex HMAC of a fixed message under that key, written at set-up: start-up fails
    # when the token's key gives another (a different or replaced key). None only so
    # that init-key can read a config that does not pin one yet; `serve` refuses it.
    key_check: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class EventsConfig(_Section):
    """[events]: the event-signing key and webhook deliveries (signer.usecases.delivery,
    signer.usecases.webhooks)."""

    # The HSM-resident Ed25519 key that signs every delivery. Made only by set-up
    # (`custos init`, `custos events init-key`) and pinned here like the audit key:
    # start-up refuses a token whose key is missing or differs. Unset: no
    # deliveries (webhooks cannot be registered), nothing else changes.
    key_id: str = Field(default="_events", min_length=1, max_length=64)
    key_fingerprint: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # The CAs that may vouch for receivers' certificates (PEM); unset: the system's.
    ca_file: Path | None = None
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Failed deliveries are retried after 1, 2, 4, ... seconds, at most this long apart.
    retry_initial_seconds: float = Field(default=1.0, gt=0, le=3600)
    retry_max_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # One replica delivers to an endpoint at a time, under a claim it renews every
    # claim_check_seconds; a replica that dies loses it after claim_lease_seconds,
    # and another replica resumes the endpoint's deliveries from its cursor.
    claim_check_seconds: float = Field(default=2.0, gt=0, le=3600)
    claim_lease_seconds: float = Field(default=30.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _renewed_within_lease(self) -> EventsConfig:
        if self.claim_check_seconds * 2 > self.claim_lease_seconds:
            raise ValueError(
                "claim_lease_seconds must be at least twice claim_check_seconds: a claim is "
                "renewed every claim_check_seconds and must not lapse between renewals"
            )
        return self


class PolicyConfig(_Section):
    # The first policy version, installed when the store has none. Later versions
    # go through proposals approved by officers (custos policy propose/approve).
    bootstrap: Path | None = None
    approval_check_seconds: float = Field(default=1.0, gt=0)


class HealthConfig(_Section):
    # How often the HSM, store, audit and policy probes run. A failed call flips
    # health to NOT_SERVING at once; recovery is seen only by the next probe.
    probe_interval_seconds: float = Field(default=5.0, gt=0, le=3600)


class MetricsConfig(_Section):
    # Prometheus endpoint on its own port, e.g. "127.0.0.1:9464"; empty: off.
    listen: str = ""


class LimitsConfig(_Section):
    """[limits]: bounds on each item's size and work and on a batch's (signer/chains/limits.py).

    Defaults are those of ChainLimits (a test checks they agree). Every bound is
    at least 1: a limit cannot be switched off, only raised.
    """

    max_batch_work_units: int = Field(default=400_000_000, ge=10_000_000, le=10**11)
    max_lock_ahead_seconds: int = Field(default=86_400, ge=0, le=366 * 86_400)
    max_lock_ahead_blocks: int = Field(default=144, ge=0, le=52_560)
    bitcoin_max_inputs: int = Field(default=1000, ge=1, le=10_000)
    bitcoin_max_outputs: int = Field(default=1000, ge=1, le=100_000)
    bitcoin_max_prev_tx_bytes: int = Field(default=400_000, ge=1000, le=4_000_000)
    bitcoin_max_sighash_bytes: int = Field(default=16_000_000, ge=100_000, le=10**10)
    bitcoin_max_psbt_bytes: int = Field(default=4_000_000, ge=1000, le=64 * 1024 * 1024)
    ethereum_max_gas_limit: int = Field(default=2**24, ge=21_000, le=2**63 - 1)
    bsc_max_gas_limit: int = Field(default=2**24, ge=21_000, le=2**63 - 1)
    evm_max_data_bytes: int = Field(default=131_072, ge=0, le=16 * 1024 * 1024)
    evm_max_access_list_addresses: int = Field(default=256, ge=0, le=100_000)
    evm_max_access_list_storage_keys: int = Field(default=4096, ge=0, le=1_000_000)
    evm_max_fee_per_gas_gwei: int = Field(default=10_000, ge=1, le=10**9)
    evm_max_value_ether: int = Field(default=1_000_000_000, ge=1, le=10**12)
    tron_max_fee_limit_sun: int = Field(default=15_000_000_000, ge=1, le=15_000_000_000)
    tron_max_amount_sun: int = Field(default=10**17, ge=1, le=2**63 - 1)
    message_max_bytes: int = Field(default=65_536, ge=1, le=16 * 1024 * 1024)
    typed_data_max_bytes: int = Field(default=65_536, ge=100, le=16 * 1024 * 1024)
    typed_data_max_depth: int = Field(default=16, ge=3, le=64)


class JsonRpcConfig(_Section):
    """[jsonrpc]: the Ethereum JSON-RPC remote signer (signer/edge/jsonrpc.py), off unless enabled.

    HTTPS with the [tls] files: the same CA, a client certificate required, the
    same identities. Its own port ("127.0.0.1:0" picks a free one, logged).
    """

    enabled: bool = False
    listen: str = "127.0.0.1:9000"
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_batch_requests: int = Field(default=16, ge=1, le=1000)
    threads: int = Field(default=8, ge=1, le=256)
    idle_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9000")
        return value


class ReviewEndpointConfig(_Section):
    """One external review endpoint a policy's `review` rules may name
    (signer/usecases/review.py)."""

    url: str = Field(pattern=r"^https://[^\s#@]+$", max_length=2048)
    # The CAs that may vouch for the endpoint's certificate; absent: the system's.
    ca_file: Path | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=30)


class ReviewConfig(_Section):
    """[review]: where `review` rules send batches. Endpoints are named here, by the
    operator, and policies name them: an officer quorum decides which batches are
    reviewed, the operator decides where the service may send them."""

    # One answer must come within this (per endpoint unless it sets its own);
    # no answer in time denies the batch.
    timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    max_request_bytes: int = Field(default=1024 * 1024, ge=4096, le=16 * 1024 * 1024)
    endpoints: dict[str, ReviewEndpointConfig] = Field(default_factory=dict)

    @field_validator("endpoints")
    @classmethod
    def _names(cls, value: dict[str, ReviewEndpointConfig]) -> dict[str, ReviewEndpointConfig]:
        for name in value:
            if not REVIEW_ENDPOINT_NAME.fullmatch(name):
                raise ValueError(f"{name!r}: endpoint names are policy names ({NAME_RULE})")
        return value


class IdentityConfig(_Section):
    subject: str = Field(min_length=1, description="RFC 4514 subject of the client certificate")
    roles: list[Role] = Field(min_length=1)
    keys: list[str] = Field(default_factory=list, description="key id patterns (fnmatch)")
    wallets: list[str] = Field(
        default_factory=list, description="HD wallet id patterns (fnmatch): every key of each"
    )


class Config(_Section):
    server: ServerConfig = ServerConfig()
    tls: TlsConfig
    hsm: HsmConfig
    store: StoreConfig = StoreConfig()
    backup: BackupConfig = BackupConfig()
    audit: AuditConfig = AuditConfig()
    events: EventsConfig = EventsConfig()
    policy: PolicyConfig = PolicyConfig()
    integrity: IntegrityConfig = IntegrityConfig()
    health: HealthConfig = HealthConfig()
    metrics: MetricsConfig = MetricsConfig()
    limits: LimitsConfig = LimitsConfig()
    jsonrpc: JsonRpcConfig = JsonRpcConfig()
    review: ReviewConfig = ReviewConfig()
    identities: list[IdentityConfig] = Field(default_factory=list)

    @field_validator("identities")
    @classmethod
    def _unique_subjects(cls, value: list[IdentityConfig]) -> list[IdentityConfig]:
        subjects = [identity.subject for identity in value]
        duplicates = sorted({s for s in subjects if subjects.count(s) > 1})
        if duplicates:
            raise ValueError(f"duplicate subjects: {', '.join(duplicates)}")
        return value

    @property
    def sqlite_path(self) -> Path:
        return Path(self.store.url.removeprefix("sqlite:///"))

    @property
    def signing_workers(self) -> int:
        return self.hsm.workers or os.cpu_count() or 1


def _absolute(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def load_config(path: Path) -> Config:
    """Read and validate `path`; relative paths inside are relative to its directory."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(f"{path}: invalid configuration:\n  " + "\n  ".join(problems)) from None
    base = path.resolve().parent
    tls = config.tls.model_copy(
        update={
            name: _absolute(base, getattr(config.tls, name))
            for name in ("ca_cert", "server_cert", "server_key")
        }
    )
    hsm = config.hsm
    if hsm.pin_file is not None:
        hsm = hsm.model_copy(update={"pin_file": _absolute(base, hsm.pin_file)})
    policy = config.policy
    if policy.bootstrap is not None:
        policy = policy.model_copy(update={"bootstrap": _absolute(base, policy.bootstrap)})
    store = config.store
    if store.url.startswith("sqlite:///"):
        store = store.model_copy(
            update={"url": "sqlite:///" + str(_absolute(base, config.sqlite_path))}
        )
    audit = config.audit.model_copy(
        update={
            "witness_file": _absolute(base, config.audit.witness_file or _witness_name(store.url))
        }
    )
    review = config.review.model_copy(
        update={
            "endpoints": {
                name: endpoint.model_copy(update={"ca_file": _absolute(base, endpoint.ca_file)})
                if endpoint.ca_file is not None
                else endpoint
                for name, endpoint in config.review.endpoints.items()
            }
        }
    )
    events = config.events
    if events.ca_file is not None:
        events = events.model_copy(update={"ca_file": _absolute(base, events.ca_file)})
    return config.model_copy(
        update={
            "tls": tls,
            "hsm": hsm,
            "store": store,
            "policy": policy,
            "audit": audit,
            "review": review,
            "events": events,
        }
    )


def _witness_name(store_url: str) -> Path:
    # One file per store: two stores (e.g. two PostgreSQL schemas) configured from
    # one directory must not judge each other's logs.
    return Path(f"audit-witness-{hashlib.sha256(store_url.encode()).hexdigest()[:16]}.note")


def read_pin(hsm: HsmConfig) -> str:
    """The HSM user PIN, from hsm.pin_file or the hsm.pin_env variable."""
    if hsm.pin_file is not None:
        try:
            pin = hsm.pin_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"hsm.pin_file: cannot read {hsm.pin_file}: {exc.strerror}") from exc
        if not pin:
            raise ConfigError(f"hsm.pin_file: {hsm.pin_file} is empty")
        return pin
    if hsm.pin_env and os.environ.get(hsm.pin_env):
        return os.environ[hsm.pin_env]
    raise ConfigError(f"HSM PIN not provided: set ${hsm.pin_env} or hsm.pin_file")
