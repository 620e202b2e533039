"""The audit key is pinned: start-up refuses a token whose audit key is missing or differs,
and only an explicit set-up command ever creates one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from custos.signer.tools.devsetup import init_dev, init_token
from tests.conftest import DevEnv

pytestmark = pytest.mark.integration


def _custos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


def _config(dev_env: DevEnv, tmp_path: Path, token_dir: Path | None = None) -> tuple[Path, str]:
    """dev_env's config with its own store, on the token in `token_dir` if given."""
    text = dev_env.config_path.read_text()
    old_url = next(line for line in text.splitlines() if line.startswith("url = "))
    text = text.replace(old_url, f'url = "sqlite:///{tmp_path / "custos.db"}"')
    if token_dir is not None:
        text = text.replace(str(dev_env.dir / "hsm.pin"), str(token_dir / "hsm.pin"))
        text = text.replace(str(dev_env.dir / "softhsm2.conf"), str(token_dir / "softhsm2.conf"))
    path = tmp_path / "custos.toml"
    path.write_text(text)
    return path, text


def test_a_config_without_a_pinned_key_is_refused_with_what_to_run(
    dev_env: DevEnv, tmp_path: Path
) -> None:
    path, text = _config(dev_env, tmp_path)
    fingerprint = dev_env.config().audit.key_fingerprint
    assert fingerprint is not None  # custos init pins it
    path.write_text(text.replace(f'key_fingerprint = "{fingerprint}"\n', ""))
    result = _custos("serve", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert "audit.key_fingerprint is not set" in result.stderr
    assert "custos audit init-key --config" in result.stderr
    # The command it names finds the token's key and prints the line to add.
    init = _custos("audit", "init-key", "--config", str(path))
    assert init.returncode == 0, init.stderr
    assert "found" in init.stdout
    assert f'key_fingerprint = "{fingerprint}"' in init.stdout
    pinned = _custos("audit", "init-key", "--config", str(dev_env.config_path))
    assert pinned.returncode == 0, pinned.stderr
    assert "already pins it" in pinned.stdout


def test_a_token_without_the_audit_key_stops_start_up_and_gets_none(
    dev_env: DevEnv, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    init_token(bare)  # the same label, but a token that never had an audit key
    path, _text = _config(dev_env, tmp_path, token_dir=bare)
    result = _custos("serve", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert "the token has no audit key '_audit'" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing was generated silently: the explicit command creates it now, and
    # refuses to call it the pinned one.
    init = _custos("audit", "init-key", "--config", str(path))
    assert "created" in init.stdout
    assert init.returncode == 2
    assert "this is not the token the config was set up with" in init.stderr


def test_a_swapped_token_with_another_audit_key_stops_start_up(
    dev_env: DevEnv, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    init_dev(other, listen="127.0.0.1:0")  # its own token with its own audit key
    path, _text = _config(dev_env, tmp_path, token_dir=other)
    result = _custos("serve", "--config", str(path))
    assert result.returncode == 2, result.stderr
    fingerprint = dev_env.config().audit.key_fingerprint
    assert f"audit.key_fingerprint pins {fingerprint}" in result.stderr
    assert "different audit key" in result.stderr
    assert "Traceback" not in result.stderr
