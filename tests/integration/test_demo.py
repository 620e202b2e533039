"""`custos demo` end to end, and its result.json checked by second implementations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.second_impl import bitcoin_prevout, evm_sender, tron_signer, verify_bitcoin

pytestmark = pytest.mark.integration


def test_demo_runs_twice_and_its_result_verifies(tmp_path: Path) -> None:
    for _ in range(2):  # running it twice works (keys and PKI are reused)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "custos.signer.tools.cli",
                "demo",
                "--dir",
                str(tmp_path),
                "--listen",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env={k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"},
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "replayed=True, same tx ids=True" in out.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    items = {item["chain"]: item for item in result["items"]}
    assert set(items) == {"bitcoin", "ethereum", "bsc", "tron"}
    btc = items["bitcoin"]
    prevouts = []
    for p in btc["prevouts"]:
        # python-bitcointx reads what each input spends from the previous tx it carried.
        txid, value, script = bitcoin_prevout(bytes.fromhex(p["prev_tx"]), p["vout"])
        assert (txid, value, script.hex()) == (p["txid"], p["value"], p["script_pubkey"])
        prevouts.append((value, script))
    assert verify_bitcoin(btc["raw_tx"], prevouts) == btc["tx_id"]
    for chain in ("ethereum", "bsc"):
        assert evm_sender(items[chain]["raw_tx"]) == items[chain]["address"]
    flow = result["approval_flow"]
    assert flow["events"] == ["pending", "approved", "signed"]
    assert evm_sender(flow["raw_tx"]) == flow["address"]
    tron = items["tron"]["raw_tx"]
    assert set(tron) >= {"txID", "raw_data", "raw_data_hex", "signature"}
    assert tron_signer(json.dumps(tron)) == items["tron"]["address"]
