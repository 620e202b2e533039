"""A bad HSM library, token label or PIN stops `custos serve` with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DevEnv

pytestmark = pytest.mark.integration


def _serve(
    config_text: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "custos.toml"
    config.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "signer.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'token_label = "custos-dev"',
            'token_label = "no-such-token"',
            "no token labelled 'no-such-token'",
        ),
        (
            'library = "/usr/lib/softhsm/libsofthsm2.so"',
            'library = "/nonexistent/libpkcs11.so"',
            "cannot load PKCS#11 library",
        ),
    ],
)
def test_bad_hsm_settings_stop_start_up(
    dev_env: DevEnv, tmp_path: Path, old: str, new: str, message: str
) -> None:
    text = dev_env.config_path.read_text()
    assert old in text
    result = _serve(text.replace(old, new), tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_pin_stops_start_up_without_revealing_it(dev_env: DevEnv, tmp_path: Path) -> None:
    pin_file = tmp_path / "wrong.pin"
    pin_file.write_text("wrong-pin-0451")
    text = dev_env.config_path.read_text().replace(
        f'pin_file = "{dev_env.dir / "hsm.pin"}"', f'pin_file = "{pin_file}"'
    )
    result = _serve(text, tmp_path)
    assert result.returncode == 2
    assert "wrong PIN" in result.stderr
    assert "wrong-pin-0451" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_missing_pin_and_bad_config_are_named(dev_env: DevEnv, tmp_path: Path) -> None:
    text = dev_env.config_path.read_text()
    no_pin = text.replace(f'pin_file = "{dev_env.dir / "hsm.pin"}"\n', "")
    result = _serve(no_pin, tmp_path, env={"CUSTOS_HSM_PIN": ""})
    assert result.returncode == 2
    assert "HSM PIN not provided" in result.stderr
    result = _serve(text.replace("[server]", "[server]\nthreads = -1"), tmp_path)
    assert result.returncode == 2
    assert "server.threads" in result.stderr
