"""Configuration validation names the offending key; the PIN never comes from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer.config import load_config, read_pin
from signer.errors import ConfigError

VALID = """
[tls]
ca_cert = "pki/ca.pem"
server_cert = "pki/server.pem"
server_key = "pki/server.key"

[hsm]
token_label = "custos"
pin_env = "TEST_CUSTOS_PIN"

[[identities]]
subject = "CN=svc"
roles = ["service"]
keys = ["hot-*"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custos.toml"
    path.write_text(text)
    return path


def test_valid_config_resolves_relative_paths(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, VALID))
    assert config.tls.ca_cert == tmp_path / "pki" / "ca.pem"
    assert config.sqlite_path == tmp_path / "custos.db"
    assert config.identities[0].keys == ["hot-*"]


@pytest.mark.parametrize(
    ("edit", "path_named"),
    [
        (lambda t: t + "\n[server]\nthreads = 0\n", "server.threads"),
        (lambda t: t + "\n[server]\nlisten_port = 5\n", "server.listen_port"),
        (lambda t: t.replace('token_label = "custos"', "token_label = 5"), "hsm.token_label"),
        (lambda t: t.replace('roles = ["service"]', 'roles = ["root"]'), "identities.0.roles.0"),
        (lambda t: t + '\n[store]\nurl = "mysql://x"\n', "store.url"),
        (lambda t: t.replace("[hsm]\n", '[hsm]\npin = "1234"\n'), "hsm.pin"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, edit: object, path_named: str) -> None:
    with pytest.raises(ConfigError, match=path_named.replace(".", r"\.")):
        load_config(_write(tmp_path, edit(VALID)))  # type: ignore[operator]


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[tls\n"))


def test_pin_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(_write(tmp_path, VALID))
    monkeypatch.delenv("TEST_CUSTOS_PIN", raising=False)
    with pytest.raises(ConfigError, match=r"TEST_CUSTOS_PIN") as info:
        read_pin(config.hsm)
    monkeypatch.setenv("TEST_CUSTOS_PIN", "s3cret-pin")
    assert read_pin(config.hsm) == "s3cret-pin"
    assert "s3cret" not in str(info.value)
    (tmp_path / "pin").write_text("from-file\n")
    with_file = load_config(_write(tmp_path, VALID.replace("[hsm]\n", '[hsm]\npin_file = "pin"\n')))
    assert read_pin(with_file.hsm) == "from-file"
