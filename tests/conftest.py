"""Shared fixtures: a real SoftHSM token and dev PKI in a temp dir, a real mTLS server."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from custos.audit.checkpoint import load_public_key_pem
from custos.audit.verify import verify_export
from custos.proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    signer_pb2_grpc,
)
from custos.signer.edge.config import Config, load_config, read_pin
from custos.signer.tools.client import ClientProfile
from custos.signer.tools.demo import read_port_file
from custos.signer.tools.devsetup import DevCa, init_dev, subject_string, write_client_profile
from tests.store.postgres_fixtures import pg_schema, postgres_url  # noqa: F401 - fixtures

SOFTHSM_LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"


def _require_softhsm() -> None:
    if not (Path(SOFTHSM_LIBRARY).exists() and shutil.which("softhsm2-util")):
        if os.environ.get("CI") == "true":
            pytest.fail("SoftHSM2 is not installed (apt-get install -y softhsm2)")
        pytest.skip("SoftHSM2 is not installed")


@dataclass
class DevEnv:
    """A development environment made by `custos init` in a temp dir."""

    dir: Path
    config_path: Path

    def config(self) -> Config:
        return load_config(self.config_path)

    def pin(self) -> str:
        return read_pin(self.config().hsm)

    def profile(self, name: str) -> ClientProfile:
        return ClientProfile.load(self.dir / "clients" / f"{name}.toml")


@pytest.fixture(scope="session")
def dev_env(tmp_path_factory: pytest.TempPathFactory) -> DevEnv:
    _require_softhsm()
    directory = tmp_path_factory.mktemp("custos-dev")
    config_path = init_dev(directory, listen="127.0.0.1:0")
    # Two more client certificates from the same CA: one granted only "limited-*"
    # keys, one whose subject is not configured at all.
    ca = DevCa(directory / "pki")
    for name in ("limited", "stranger"):
        cert, key = ca.issue(name, server=False)
        write_client_profile(directory / "clients" / f"{name}.toml", "", ca.cert_path, cert, key)
    with config_path.open("a") as handle:
        handle.write(
            f'\n[[identities]]\nsubject = "{subject_string("limited")}"\n'
            'roles = ["service"]\nkeys = ["limited-*"]\n'
        )
    # The in-process server and direct token tests load SoftHSM in this process.
    os.environ["SOFTHSM2_CONF"] = str(directory / "softhsm2.conf")
    return DevEnv(directory, config_path)


@dataclass
class RunningServer:
    env: DevEnv
    port: int
    server: object

    def channel(self, identity: str) -> grpc.Channel:
        return self.env.profile(identity).channel(f"127.0.0.1:{self.port}")

    def signer(self, identity: str = "payments") -> signer_pb2_grpc.SignerStub:
        return signer_pb2_grpc.SignerStub(self.channel(identity))

    def keys(self, identity: str = "officer") -> keys_pb2_grpc.KeysStub:
        return keys_pb2_grpc.KeysStub(self.channel(identity))

    def create_key(
        self,
        key_id: str,
        network_class: keys_pb2.NetworkClass = keys_pb2.NETWORK_CLASS_TESTNET,
    ) -> keys_pb2.Key:
        """A key of `network_class` (test networks unless told: most tests sign for them)."""
        return self.keys().CreateKey(
            keys_pb2.CreateKeyRequest(key_id=key_id, network_class=network_class)
        )


@pytest.fixture(scope="session")
def server(dev_env: DevEnv) -> Iterator[RunningServer]:
    from custos.signer.edge.server import CustosServer

    config = dev_env.config()
    instance = CustosServer(config.model_copy(), dev_env.pin())
    instance.start()
    yield RunningServer(dev_env, instance.port, instance)
    instance.stop(grace=2)


@contextmanager
def server_with_policy(
    env: DevEnv, directory: Path, policy_yaml: str, **sections: object
) -> Iterator[RunningServer]:
    """An in-process server on the shared token with its own store, audit witness and
    bootstrap policy (`sections`: other config sections to replace)."""
    from custos.signer.edge.server import CustosServer

    bootstrap = directory / "policy.yaml"
    bootstrap.write_text(policy_yaml)
    config = env.config()
    config = config.model_copy(
        update={
            "store": config.store.model_copy(
                update={"url": f"sqlite:///{directory / 'custos.db'}"}
            ),
            "policy": config.policy.model_copy(update={"bootstrap": bootstrap}),
            # Its own witness too: the shared one vouches for the session server's
            # (longer) log, and this server's checkpoints must not overwrite it.
            "audit": config.audit.model_copy(
                update={"witness_file": directory / "audit-witness.note"}
            ),
            **sections,
        }
    )
    instance = CustosServer(config, env.pin())
    instance.start()
    try:
        yield RunningServer(env, instance.port, instance)
    finally:
        instance.stop(grace=2)


class ServerProcess:
    """`custos serve` as a real child process on a dev environment (`name`: its files)."""

    def __init__(self, env: DevEnv, name: str = "server") -> None:
        self.env = env
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        port_file = self.env.dir / f"{self.name}.port"
        port_file.unlink(missing_ok=True)
        log = (self.env.dir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "custos.signer.tools.cli",
                "serve",
                "--config",
                str(self.env.config_path),
                "--port-file",
                str(port_file),
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while (port := read_port_file(port_file)) is None:
            assert self.process.poll() is None, self.log_text()[-3000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        self.port = port

    def log_text(self) -> str:
        return (self.env.dir / f"{self.name}.log").read_text(errors="replace")

    def channel(self, identity: str) -> grpc.Channel:
        return self.env.profile(identity).channel(f"127.0.0.1:{self.port}")

    def verified_log(self) -> list[bytes]:
        """Checkpoint the log now, export it and verify it offline; the exported records."""
        officer = audit_pb2_grpc.AuditStub(self.channel("officer"))
        auditor = audit_pb2_grpc.AuditStub(self.channel("auditor"))
        checkpoint = officer.CreateCheckpoint(audit_pb2.CreateCheckpointRequest())
        key = auditor.GetAuditKey(audit_pb2.GetAuditKeyRequest())
        lines = [
            line
            for chunk in auditor.Export(audit_pb2.ExportRequest(to_seq=checkpoint.size))
            for line in chunk.lines.splitlines()
        ]
        report = verify_export(
            lines, load_public_key_pem(key.public_key_pem.encode()), [checkpoint.note], key.key_name
        )
        assert report.ok, report.problems
        return lines

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# Files of an environment that name its directory (init_dev writes absolute paths).
_PATH_FILES = ("custos.toml", "softhsm2.conf", "clients/*.toml")


@pytest.fixture(scope="session")
def env_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `custos init` environment for the session, copied by `fresh_env`."""
    _require_softhsm()
    directory = tmp_path_factory.mktemp("env-template") / "env"
    init_dev(directory, listen="127.0.0.1:0")
    return directory.resolve()


def copy_env(template: Path, directory: Path) -> DevEnv:
    """A copy of `template` at `directory`, its paths rewritten to point there."""
    shutil.copytree(template, directory)
    directory = directory.resolve()
    for pattern in _PATH_FILES:
        for path in directory.glob(pattern):
            path.write_text(path.read_text().replace(str(template), str(directory)))
    return DevEnv(directory, directory / "custos.toml")


def probe_often(env: DevEnv, seconds: float = 0.25) -> DevEnv:
    """`env` with health probes every `seconds` instead of 5: for tests that wait
    for a recovery, which only the next probe can see."""
    with env.config_path.open("a", encoding="utf-8") as config:
        config.write(f"\n[health]\nprobe_interval_seconds = {seconds}\n")
    return env


@pytest.fixture
def fresh_env(env_template: Path) -> Callable[[Path], DevEnv]:
    """Makes an environment of the test's own at a directory: its own token files,
    store and PKI files, copied from the session's template.

    `custos init` takes seconds (a token, key generation in the HSM, a child
    process for the state key); a copy takes milliseconds. The copies share the
    template's keys, certificates and PINs: a test that needs two environments
    with different keys (a foreign token, another CA) calls init_dev itself.
    """
    return functools.partial(copy_env, env_template)


@pytest.fixture
def own_server(tmp_path: Path, fresh_env: Callable[[Path], DevEnv]) -> Iterator[ServerProcess]:
    """A server process with its own token, store and PKI (for tests that break things)."""
    proc = ServerProcess(fresh_env(tmp_path / "env"))
    yield proc
    proc.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the whole run: no server log of any test may contain any token's PIN."""
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    pins = {
        p.read_text().strip()
        for name in ("hsm.pin", "hsm.so-pin")
        for p in base.rglob(name)
        if p.is_file()
    }
    leaks = [
        str(log)
        for log in base.rglob("*.log")
        if log.is_file() and any(pin and pin in log.read_text(errors="replace") for pin in pins)
    ]
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nSECRET LEAK: a PIN appears in {leaks}")
