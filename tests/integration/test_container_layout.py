"""The image's path from nothing to a running server, without building the image.

docker/entrypoint.sh runs here as it does in the container, with the real
`custos` and SoftHSM: `dev-init` builds the token, PKI and config in the two
volume folders, then the default command migrates and serves from that config,
and the image's HEALTHCHECK script finds it ready on the metrics port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.signer.edge.config import load_config
from custos.signer.tools.client import ClientProfile
from tests.conftest import _require_softhsm

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"


class Volumes:
    """/etc/custos and /var/lib/custos as temp folders, and the entrypoint's environment."""

    def __init__(self, base: Path) -> None:
        self.etc = base / "etc-custos"
        self.data = base / "var-lib-custos"
        self.etc.mkdir()
        self.data.mkdir()
        self.config = self.etc / "custos.toml"
        bin_dir = base / "bin"
        bin_dir.mkdir()
        # The image's `custos` console script, and an `id` saying the image's user.
        (bin_dir / "custos").write_text(
            f'#!/bin/sh\nexec {sys.executable} -m custos.signer.tools.cli "$@"\n'
        )
        (bin_dir / "id").write_text("#!/bin/sh\necho 10001\n")
        for tool in bin_dir.iterdir():
            tool.chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "CUSTOS_CONFIG": str(self.config),
            "CUSTOS_DATA": str(self.data),
        }

    def entrypoint(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(ENTRYPOINT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def volumes(tmp_path: Path) -> Volumes:
    _require_softhsm()
    return Volumes(tmp_path)


def _paths(config: dict[str, object]) -> Iterator[str]:
    for value in config.values():
        if isinstance(value, dict):
            yield from _paths(value)
        elif isinstance(value, str) and value.startswith(("/", "sqlite:///")):
            yield value


def test_dev_init_builds_the_config_and_token_the_entrypoint_serves(volumes: Volumes) -> None:
    result = volumes.entrypoint("dev-init")
    assert result.returncode == 0, result.stderr
    config = load_config(volumes.config)  # valid for the server, every section checked
    assert config.server.listen == "0.0.0.0:50051"
    assert config.metrics.listen == "0.0.0.0:9464"  # the HEALTHCHECK's default port
    raw = tomllib.loads(volumes.config.read_text())
    # Every file the config names lives in the volumes (nothing from the build host).
    assert len(list(_paths(raw))) >= 6  # TLS files, PIN file, SOFTHSM2_CONF, store, policy
    for path in _paths(raw):
        local = path.removeprefix("sqlite:///")
        if local.startswith("/usr/lib/"):  # the image's SoftHSM library
            continue
        assert Path(local).is_relative_to(volumes.data), path
    assert Path(config.hsm.library) == Path("/usr/lib/softhsm/libsofthsm2.so")
    # The token is in the data volume, found through the configured SOFTHSM2_CONF.
    conf = Path(config.hsm.environment["SOFTHSM2_CONF"])
    tokendir = re.search(r"directories.tokendir = (\S+)", conf.read_text())
    assert tokendir is not None
    assert Path(tokendir[1]).is_relative_to(volumes.data)
    slots = subprocess.run(
        [str(shutil.which("softhsm2-util")), "--show-slots"],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert config.hsm.token_label in slots
    assert config.hsm.pin_file is not None
    assert stat.S_IMODE(Path(config.hsm.pin_file).stat().st_mode) == 0o600
    profiles = sorted((volumes.data / "dev" / "clients").glob("*.toml"))
    assert profiles
    for profile in profiles:
        assert ClientProfile.load(profile).endpoint == "localhost:50051"
    # No PIN in what dev-init printed.
    assert Path(config.hsm.pin_file).read_text().strip() not in result.stdout + result.stderr

    before = volumes.config.read_bytes()
    again = volumes.entrypoint("dev-init")
    assert again.returncode == 73
    assert "never overwrites" in again.stderr
    assert volumes.config.read_bytes() == before


def test_entrypoint_migrates_serves_and_reports_ready(volumes: Volumes, tmp_path: Path) -> None:
    assert volumes.entrypoint("dev-init").returncode == 0
    # Any free ports here (other tests run beside this one); the layout is dev-init's.
    text = volumes.config.read_text()
    text = text.replace('"0.0.0.0:50051"', '"127.0.0.1:0"').replace(
        '"0.0.0.0:9464"', '"127.0.0.1:0"'
    )
    volumes.config.write_text(text)
    port_file = tmp_path / "port"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["/bin/sh", str(ENTRYPOINT), "serve", "--port-file", str(port_file)],
            env=volumes.env,
            stdout=log,
            stderr=log,
        )
    try:
        grpc_port, metrics_port = _wait_for_ports(process, port_file, log_path)
        officer = ClientProfile.load(volumes.data / "dev" / "clients" / "officer.toml")
        health = health_pb2_grpc.HealthStub(officer.channel(f"localhost:{grpc_port}"))
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        for path, expected in (("/readyz", 0), ("/healthz", 0), ("/nothing", 1)):
            probe = subprocess.run(
                [sys.executable, str(HEALTHCHECK)],
                env={
                    **os.environ,
                    "CUSTOS_HEALTHCHECK_URL": f"http://127.0.0.1:{metrics_port}{path}",
                },
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert probe.returncode == expected, (path, probe.stdout, probe.stderr)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # `db upgrade` ran before serve (the entrypoint's default), and serve stopped cleanly.
    assert process.returncode == 0, log_path.read_text()[-3000:]


def _wait_for_ports(
    process: subprocess.Popen[bytes], port_file: Path, log_path: Path
) -> tuple[int, int]:
    """The gRPC port (port file) and the metrics port (its log line), once both exist."""
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "server did not start: " + log_path.read_text()[-3000:]
        metrics_port = None
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            found = re.fullmatch(r"metrics on port (\d+)", str(record.get("msg", "")))
            if found:
                metrics_port = int(found[1])
        written = port_file.read_text().strip() if port_file.exists() else ""
        if metrics_port and written.isdigit():  # the file may exist before its digits do
            return int(written), metrics_port
        time.sleep(0.1)
