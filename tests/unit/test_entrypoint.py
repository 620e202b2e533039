"""The container entrypoint script (the image itself cannot be built on these machines)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.sh"


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A PATH with a `custos` that records its arguments and an `id` that says uid 10001."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "custos").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "id").write_text("#!/bin/sh\necho 10001\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def _run(
    fake_bin: Path, *args: str, config: Path | None, uid: str = "10001"
) -> subprocess.CompletedProcess[str]:
    (fake_bin / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin"}
    if config is not None:
        env["CUSTOS_CONFIG"] = str(config)
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, check=False
    )


def _calls(fake_bin: Path) -> list[str]:
    path = fake_bin.parent / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_default_migrates_then_serves(fake_bin: Path, tmp_path: Path) -> None:
    config = tmp_path / "custos.toml"
    config.write_text("")
    result = _run(fake_bin, config=config)
    assert result.returncode == 0, result.stderr
    assert _calls(fake_bin) == [f"db upgrade --config {config}", f"serve --config {config}"]


def test_serve_passes_extra_arguments(fake_bin: Path, tmp_path: Path) -> None:
    config = tmp_path / "custos.toml"
    config.write_text("")
    assert _run(fake_bin, "serve", "--grace", "30", config=config).returncode == 0
    assert _calls(fake_bin)[-1] == f"serve --config {config} --grace 30"


def test_other_commands_pass_through(fake_bin: Path) -> None:
    assert _run(fake_bin, "audit", "tail", "-n", "5", config=None).returncode == 0
    assert _calls(fake_bin) == ["audit tail -n 5"]


def test_missing_config_and_root_are_refused(fake_bin: Path, tmp_path: Path) -> None:
    missing = _run(fake_bin, config=tmp_path / "nope.toml")
    assert missing.returncode == 64
    assert "not found" in missing.stderr
    config = tmp_path / "custos.toml"
    config.write_text("")
    root = _run(fake_bin, config=config, uid="0")
    assert root.returncode == 77
    assert "root" in root.stderr
    assert _calls(fake_bin) == []


def test_dev_init_refuses_root_and_an_existing_config(fake_bin: Path, tmp_path: Path) -> None:
    config = tmp_path / "custos.toml"
    root = _run(fake_bin, "dev-init", config=config, uid="0")
    assert root.returncode == 77
    config.write_text("# edited by hand\n")
    existing = _run(fake_bin, "dev-init", config=config)
    assert existing.returncode == 73
    assert config.read_text() == "# edited by hand\n"
    assert _calls(fake_bin) == []


def test_script_is_posix_sh() -> None:
    assert subprocess.run(["/bin/sh", "-n", str(ENTRYPOINT)], check=False).returncode == 0
    assert os.access(ENTRYPOINT, os.X_OK)
