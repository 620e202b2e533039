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
        [sys.executable, "-m", "custos.signer.tools.cli", "serve", "--config", str(config)],
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


SO_CREATES_BACKUP_KEY = """
import json, sys
import pkcs11
from pkcs11 import Attribute, KeyType
from custos.hsm import backup
from custos.hsm.backup import BackupKeyMode
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
so = token.open(so_pin=sys.argv[3], rw=True)
facts = {}
try:
    so.generate_key(KeyType.AES, 256, store=True, template={Attribute.PRIVATE: True})
except pkcs11.PKCS11Error as exc:
    facts["so_private_object"] = type(exc).__name__
backup.install_backup_key(so, "_backup", bytearray(32), BackupKeyMode.TRUSTED)
print(json.dumps(facts))
"""


def test_trusted_backup_mode_on_softhsm_refuses_to_start(tmp_path: Path) -> None:
    """backup.mode = "trusted" never degrades to "private": on SoftHSM start-up stops,
    first for want of the SO's backup key, then because the only one SoftHSM's SO can
    make is a public object (measured: a private one gives CKR_USER_NOT_LOGGED_IN)."""
    import json

    from custos.signer.edge.config import load_config
    from custos.signer.tools.devsetup import init_dev

    env = DevEnv(tmp_path / "t", init_dev(tmp_path / "t", listen="127.0.0.1:0"))
    text = env.config_path.read_text() + '\n[backup]\nmode = "trusted"\n'
    first = _serve(text, tmp_path)
    assert first.returncode == 2, first.stderr
    message = json.loads(first.stderr.strip().splitlines()[-1])["msg"]
    assert "backup.mode = \"trusted\": the token has no backup key '_backup'" in message
    assert "Traceback" not in first.stderr

    config = load_config(env.config_path)
    so_pin = (env.dir / "hsm.so-pin").read_text().strip()
    made = subprocess.run(
        [
            *(sys.executable, "-c", SO_CREATES_BACKUP_KEY),
            *(str(config.hsm.library), config.hsm.token_label, so_pin),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **config.hsm.environment},
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {"so_private_object": "UserNotLoggedIn"}
    second = _serve(text, tmp_path)
    assert second.returncode == 2, second.stderr
    message = json.loads(second.stderr.strip().splitlines()[-1])["msg"]
    assert "backup key '_backup' is a public object (CKA_PRIVATE false)" in message
    assert 'use mode = "private" there' in message
