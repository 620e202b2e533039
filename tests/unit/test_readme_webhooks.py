"""The README's receiver snippet verifies real deliveries and refuses altered ones."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custos.signer.usecases.delivery import DeliverySigner
from custos.signer.usecases.webhook_worker import SEQUENCE_HEADER

README = Path(__file__).resolve().parents[2] / "README.md"


def _snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Webhooks") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


def test_the_readme_receiver_accepts_each_delivery_once_and_refuses_forgeries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signer = DeliverySigner(raw, private.sign)
    (tmp_path / "custos-events.pem").write_bytes(signer.public_key_pem())
    monkeypatch.chdir(tmp_path)
    receiver: dict[str, object] = {}
    exec(compile(_snippet(), "README.md", "exec"), receiver)  # noqa: S102 - our own README
    check = receiver["check"]
    assert callable(check)
    now = int(time.time())

    def delivery(seq: int, at: int = now) -> tuple[dict[str, str], bytes]:
        body = json.dumps({"seq": seq, "kind": "signed"}).encode()
        return {**signer.sign(body, at), SEQUENCE_HEADER: str(seq)}, body

    headers, body = delivery(5)
    assert check(headers, body) == "process"
    assert check(headers, body) == "repeat"
    assert check(*delivery(6)) == "process"
    assert check(headers, body.replace(b"5", b"7")) == "refuse"  # altered body
    assert check({**headers, "X-Custos-Timestamp": str(now + 1)}, body) == "refuse"
    assert check(*delivery(8, at=now - 3600)) == "refuse"  # an old copy
    other = DeliverySigner(raw, Ed25519PrivateKey.generate().sign)  # a forger's key
    forged_body = json.dumps({"seq": 9}).encode()
    assert check(other.sign(forged_body, now), forged_body) == "refuse"
