"""Configuration validation names the offending key; the PIN never comes from the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from custos.signer.edge.config import load_config, read_pin
from custos.signer.edge.errors import ConfigError

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
        (lambda t: t + "\n[health]\nprobe_interval_seconds = 0\n", "health.probe_interval"),
        (lambda t: t + "\n[health]\nprobe_every = 1\n", "health.probe_every"),
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


def test_health_probe_interval_defaults_to_five_seconds_and_can_be_set(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, VALID)).health.probe_interval_seconds == 5.0
    text = VALID + "\n[health]\nprobe_interval_seconds = 0.25\n"
    assert load_config(_write(tmp_path, text)).health.probe_interval_seconds == 0.25


def test_limits_default_to_the_adapters_defaults_and_can_be_set(tmp_path: Path) -> None:
    from dataclasses import asdict

    from custos.signer.chains.limits import DEFAULT_LIMITS

    config = load_config(_write(tmp_path, VALID))
    assert config.limits.model_dump() == asdict(DEFAULT_LIMITS)
    text = VALID + "\n[limits]\nbitcoin_max_inputs = 50\nethereum_max_gas_limit = 30000000\n"
    limits = load_config(_write(tmp_path, text)).limits
    assert (limits.bitcoin_max_inputs, limits.ethereum_max_gas_limit) == (50, 30_000_000)


@pytest.mark.parametrize(
    ("line", "path_named"),
    [
        ("bitcoin_max_inputs = 0", "limits.bitcoin_max_inputs"),
        ("max_batch_work_units = 10", "limits.max_batch_work_units"),
        ("tron_max_fee_limit_sun = 15000000001", "limits.tron_max_fee_limit_sun"),
        ("evm_max_gas = 1", "limits.evm_max_gas"),
    ],
)
def test_bad_limit_names_the_key(tmp_path: Path, line: str, path_named: str) -> None:
    with pytest.raises(ConfigError, match=path_named.replace(".", r"\.")):
        load_config(_write(tmp_path, VALID + f"\n[limits]\n{line}\n"))
