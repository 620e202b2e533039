"""`custos init`: a development environment in one directory.

Creates a SoftHSM2 token in DIR/tokens (PINs in 0600 files), a development CA
with a server certificate and one client certificate per role, the server's
config file and one client profile per identity. Running it again keeps what
exists: the token, the CA, the certificates and the policy always, the config
and the client profiles unless `force` (an operator may have edited them).
Nothing here is for production: a real deployment brings its own HSM, CA and
identities.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from custos.signer.edge.config import AuditConfig, EventsConfig
from custos.signer.edge.errors import ConfigError
from custos.signer.usecases.auditlog import key_fingerprint, setup_ed25519_keys

TOKEN_LABEL = "custos-dev"  # noqa: S105 - a label, not a secret
ORG = "Custos Dev"
SOFTHSM_LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"
AUDIT_KEY_ID = AuditConfig().key_id
EVENTS_KEY_ID = EventsConfig().key_id


@dataclass(frozen=True)
class DevIdentity:
    name: str
    roles: tuple[str, ...]
    keys: tuple[str, ...] = ()
    wallets: tuple[str, ...] = ()


DEV_IDENTITIES = (
    DevIdentity("officer", ("officer",)),
    DevIdentity("officer2", ("officer",)),
    DevIdentity("payments", ("service",), ("*",), ("*",)),
    DevIdentity("approver", ("approver",)),
    DevIdentity("approver2", ("approver",)),
    DevIdentity("auditor", ("auditor",)),
)

# The first policy version of a development environment. Sepolia payments of
# 1 ETH or more wait for two approvers with TOTP codes; Holesky native payments
# are limited to 1 ETH per key and hour (to watch a velocity limit at work);
# everything else the caller's key grants allow is signed.
DEV_POLICY = """\
version: 1
description: Development policy written by custos init
governance:
  officers: ["{officer}", "{officer2}"]
  approvals_required: 1
  activation_delay: 0s
  proposal_expires_after: 7d
# Key ceremonies: 0 lets one officer create, import, disable and enable keys and
# wallets, make the import and backup keys and back up alone, for development only;
# retiring (final) and exporting a key or a wallet still need the other officer's approval.
ceremonies: {{create_key: 0, import_key: 0, disable_key: 0, enable_key: 0, retire_key: 1,
             import_key_init: 0, backup_key_init: 0, backup: 0, export_key: 1,
             create_wallet: 0, import_wallet: 0, export_wallet: 1}}
identity_groups:
  approvers: ["{approver}", "{approver2}"]
address_book:
  cooling_off: 24h
  groups: []
  entries: []
rules:
  - id: large-sepolia-payments
    description: 1 ETH or more on Sepolia needs two approvers with TOTP
    match:
      chains: [ethereum]
      networks: [sepolia]
      assets: [native]
      amount: {{min: "1000000000000000000"}}
    action: require_approval
    approval: {{approvals: 2, group: approvers, totp: true, expires_after: 30m}}
  - id: development-default
    description: Everything else the caller's key grants allow
    match: {{}}
    action: allow
  - id: development-messages
    description: Messages with the caller's keys; typed-data permits need a rule naming the token
    match: {{message_signing: true}}
    action: allow
limits:
  - id: holesky-hourly-per-key
    window: 1h
    per: [key, asset]
    scope: {{chains: [ethereum], networks: [holesky], assets: [native]}}
    max_amount: "1000000000000000000"
    max_count: 1000
"""


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def subject_string(common_name: str) -> str:
    """The RFC 4514 subject string the server will see for this dev identity."""
    return _name(common_name).rfc4514_string()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class DevCa:
    """A throw-away certificate authority for development and tests."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.cert_path = directory / "ca.pem"
        key_path = directory / "ca.key"
        if self.cert_path.exists() and key_path.exists():
            self.key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            return
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = _name("Custos Dev CA")
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        _write_private(key_path, _pem_key(self.key))
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool) -> tuple[Path, Path]:
        """Certificate and key files for `common_name`; reused when present."""
        cert_path, key_path = self.dir / f"{common_name}.pem", self.dir / f"{common_name}.key"
        if cert_path.exists() and key_path.exists():
            return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())  # type: ignore[arg-type]
        _write_private(key_path, _pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path


def softhsm_env(directory: Path) -> dict[str, str]:
    return {**os.environ, "SOFTHSM2_CONF": str(directory / "softhsm2.conf")}


def init_token(directory: Path, label: str = TOKEN_LABEL) -> Path:
    """A SoftHSM2 token in DIR/tokens with random PINs; returns the user PIN file."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    pin_file = directory / "hsm.pin"
    if pin_file.exists() and any(tokens.iterdir()):
        return pin_file
    util = shutil.which("softhsm2-util")
    if util is None:
        raise ConfigError("softhsm2-util not found: apt-get install -y softhsm2")
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    # Dev only: softhsm2-util takes PINs as arguments, visible to local `ps` for a moment.
    result = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        env=softhsm_env(directory),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ConfigError(f"softhsm2-util could not create the token: {result.stderr.strip()}")
    _write_private(pin_file, pin.encode())
    _write_private(directory / "hsm.so-pin", so_pin.encode())
    return pin_file


def client_profile_text(endpoint: str, ca: Path, cert: Path, key: Path) -> str:
    return f'endpoint = "{endpoint}"\nca_cert = "{ca}"\ncert = "{cert}"\nkey = "{key}"\n'


def write_client_profile(path: Path, endpoint: str, ca: Path, cert: Path, key: Path) -> None:
    path.write_text(client_profile_text(endpoint, ca, cert, key))


@dataclass
class DevInit:
    """What init_dev_report did: the config, every client profile, and which files it wrote."""

    config: Path
    profiles: list[Path] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)  # created, or rewritten with force
    kept: list[Path] = field(default_factory=list)  # existed with other content: left alone

    def put(self, path: Path, text: str, *, force: bool) -> None:
        """Write `path` unless it exists with other content (an operator's edits) and not force."""
        if path.exists():
            if path.read_text() == text:
                return
            if not force:
                self.kept.append(path)
                return
        path.write_text(text)
        self.written.append(path)


def init_dev(directory: Path, listen: str = "127.0.0.1:50051") -> Path:
    """Create (or complete) a development environment; returns the config path.

    For callers that own the directory (the demo, tests): the config and the
    client profiles are rewritten to match `listen`. `custos init` uses
    init_dev_report, which keeps edited files.
    """
    return init_dev_report(directory, listen, force=True).config


def init_dev_report(directory: Path, listen: str, *, force: bool) -> DevInit:
    """Create (or complete) a development environment; edited files are kept unless `force`."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    pin_file = init_token(directory)
    ca = DevCa(directory / "pki")
    server_cert, server_key = ca.issue("localhost", server=True)
    clients = directory / "clients"
    clients.mkdir(exist_ok=True)
    report = DevInit(directory / "custos.toml")
    identity_blocks = []
    for identity in DEV_IDENTITIES:
        cert, key = ca.issue(identity.name, server=False)
        profile = clients / f"{identity.name}.toml"
        report.profiles.append(profile)
        report.put(profile, client_profile_text(listen, ca.cert_path, cert, key), force=force)
        roles = ", ".join(f'"{r}"' for r in identity.roles)
        keys = ", ".join(f'"{k}"' for k in identity.keys)
        wallets = ", ".join(f'"{w}"' for w in identity.wallets)
        identity_blocks.append(
            f'[[identities]]\nsubject = "{subject_string(identity.name)}"\n'
            f"roles = [{roles}]\nkeys = [{keys}]\n"
            + (f"wallets = [{wallets}]\n" if identity.wallets else "")
        )
    policy = directory / "policy.yaml"
    if not policy.exists():  # the first version only: later ones are proposed, not edited here
        policy.write_text(
            DEV_POLICY.format(
                **{
                    name: subject_string(name)
                    for name in ("officer", "officer2", "approver", "approver2")
                }
            )
        )
        report.written.append(policy)
    # The audit key is made here, at set-up, and pinned in the config: the
    # service itself never creates one (a missing or different key stops it).
    # So is the event-signing key that signs webhook deliveries (signer.usecases.delivery).
    (audit_key, _), (event_key, _) = setup_ed25519_keys(
        SOFTHSM_LIBRARY,
        TOKEN_LABEL,
        pin_file.read_text().strip(),
        {"SOFTHSM2_CONF": str(directory / "softhsm2.conf")},
        [AUDIT_KEY_ID, EVENTS_KEY_ID],
    )
    text = (
        "# Development configuration written by `custos init`.\n"
        f'[server]\nlisten = "{listen}"\n\n'
        f'[tls]\nca_cert = "{ca.cert_path}"\nserver_cert = "{server_cert}"\n'
        f'server_key = "{server_key}"\n\n'
        f'[hsm]\nlibrary = "{SOFTHSM_LIBRARY}"\ntoken_label = "{TOKEN_LABEL}"\n'
        f'pin_file = "{pin_file}"\n\n'
        f'[hsm.environment]\nSOFTHSM2_CONF = "{directory / "softhsm2.conf"}"\n\n'
        f'[store]\nurl = "sqlite:///{directory / "custos.db"}"\n\n'
        f'[policy]\nbootstrap = "{policy}"\n\n'
        f'[audit]\nkey_fingerprint = "{key_fingerprint(audit_key)}"\n\n'
        f'[events]\nkey_fingerprint = "{key_fingerprint(event_key)}"\n\n'
        # Port 0: any free port, logged at start (several dev servers may run at once).
        '[metrics]\nlisten = "127.0.0.1:0"\n\n' + "\n".join(identity_blocks)
    )
    # The state-authentication key: made by `custos integrity init-key` (idempotent),
    # which reads the HSM settings from a config: a provisional one beside it.
    provisional = directory / ".custos-init.toml"
    provisional.write_text(text)
    try:
        key_check = _init_state_key(provisional)
    finally:
        provisional.unlink(missing_ok=True)
    text += f'\n[integrity]\nkey_check = "{key_check}"\n'
    report.put(report.config, text, force=force)
    return report


def _init_state_key(config: Path) -> str:
    """Create the state-authentication key (`custos integrity init-key`); its check value.

    In a child process: the PKCS#11 library reads SOFTHSM2_CONF once per process,
    and this process may set up several environments (tests) or none at all.
    """
    command = ["integrity", "init-key", "--quiet", "--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *command],
        capture_output=True,
        text=True,
        check=False,
    )
    line = result.stdout.strip().rpartition("\n")[2]
    if result.returncode != 0 or not line.startswith("key_check = "):
        raise ConfigError(f"cannot create the state-authentication key: {result.stderr.strip()}")
    return line.removeprefix("key_check = ").strip('"')
