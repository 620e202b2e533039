"""The `custos` CLI as a user runs it, against a real server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import builders
from tests.conftest import ServerProcess
from tests.second_impl import evm_sender

pytestmark = pytest.mark.integration


def _custos(server: ServerProcess, identity: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = server.env.dir / "clients" / f"{identity}.toml"
    text = profile.read_text().replace(
        'endpoint = "127.0.0.1:0"', f'endpoint = "127.0.0.1:{server.port}"'
    )
    profile.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "signer.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CUSTOS_CLIENT": str(profile)},
        check=False,
    )


def test_help_is_there_for_every_command() -> None:
    for args in ([], ["keys"], ["sign"], ["serve"], ["init"]):
        out = subprocess.run(
            [sys.executable, "-m", "signer.cli", *args, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "usage: custos" in out.stdout


def test_keys_and_sign_commands(own_server: ServerProcess, tmp_path: Path) -> None:
    own_server.start()
    # The class is required: no default for what a key can sign, for its whole life.
    classless = _custos(own_server, "officer", "keys", "create", "cli-key")
    assert classless.returncode == 2
    assert "--network-class" in classless.stderr
    created = _custos(
        own_server, "officer", "keys", "create", "cli-key", "--network-class", "testnet"
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["key_id"] == "cli-key"
    assert key["state"] == "KEY_STATE_ENABLED"
    assert key["network_class"] == "NETWORK_CLASS_TESTNET"
    assert {a["network"] for a in key["addresses"]} >= {"testnet", "sepolia", "nile"}
    assert "mainnet" not in {a["network"] for a in key["addresses"]}
    listed = json.loads(_custos(own_server, "officer", "keys", "list").stdout)
    assert [k["key_id"] for k in listed["keys"]] == ["cli-key"]
    disabled = json.loads(_custos(own_server, "officer", "keys", "disable", "cli-key").stdout)
    assert disabled["state"] == "KEY_STATE_DISABLED"
    enabled = json.loads(_custos(own_server, "officer", "keys", "enable", "cli-key").stdout)
    assert enabled["state"] == "KEY_STATE_ENABLED"
    shown = json.loads(_custos(own_server, "officer", "keys", "show", "cli-key").stdout)
    eth = next(a["address"] for a in shown["addresses"] if a["chain"] == "ethereum")

    batch = tmp_path / "batch.json"
    batch.write_text(
        json.dumps(
            {
                "request_id": "cli-1",
                "items": [
                    {
                        "key_id": "cli-key",
                        "evm": {
                            "chain_id": 11155111,
                            "type": "EVM_TX_TYPE_EIP1559",
                            "nonce": 0,
                            "to": builders.EVM_DEST,
                            "value": "1",
                            "gas_limit": 21000,
                            "max_fee_per_gas": "30000000000",
                            "max_priority_fee_per_gas": "1",
                        },
                    }
                ],
            }
        )
    )
    signed = _custos(own_server, "payments", "sign", str(batch))
    assert signed.returncode == 0, signed.stderr
    item = json.loads(signed.stdout)["items"][0]
    assert evm_sender(item["raw_tx"]) == eth
    fetched = json.loads(_custos(own_server, "payments", "get", "cli-1").stdout)
    assert fetched["items"][0]["raw_tx"] == item["raw_tx"]

    denied = _custos(own_server, "payments", "keys", "create", "nope", "--network-class", "mainnet")
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr
    batch.write_text("{not json")
    bad = _custos(own_server, "payments", "sign", str(batch))
    assert bad.returncode == 2
    assert "not a SignBatchRequest" in bad.stderr
