"""Signed deliveries (signer.usecases.delivery) with the token's event-signing key, checked by a
receiver that verifies with `cryptography` (a second Ed25519 implementation)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from custos.signer.edge.errors import ConfigError
from custos.signer.usecases.auditlog import key_fingerprint
from custos.signer.usecases.delivery import DeliveryError, DeliverySigner, post_signed
from tests.conftest import DevEnv, RunningServer
from tests.webhook_receiver import Receiver, start_receiver, verify_delivery

BODY = b'{"seq": 7, "kind": "signed"}'


@pytest.fixture
def signer(server: RunningServer) -> DeliverySigner:
    event_signer = server.server.event_signer  # type: ignore[attr-defined]
    assert isinstance(event_signer, DeliverySigner)
    return event_signer


@pytest.fixture
def receiver(tmp_path: Path, signer: DeliverySigner) -> Iterator[Receiver]:
    receiver, httpd = start_receiver(tmp_path, signer.public_key_pem())
    yield receiver
    httpd.shutdown()


def test_a_delivery_is_signed_by_the_pinned_hsm_key(
    dev_env: DevEnv, signer: DeliverySigner, receiver: Receiver
) -> None:
    result = post_signed(
        receiver.url,
        BODY,
        signer,
        timeout_s=30,
        ca_file=str(receiver.ca_file),
        now=lambda: 1_700_000_000,
    )
    assert (result.status, result.body, result.ok) == (200, b"ok", True)
    (delivery,) = receiver.requests
    assert delivery.verified
    assert delivery.body == BODY
    assert delivery.headers["X-Custos-Timestamp"] == "1700000000"
    # The key id is the fingerprint the config pins, of the key receivers verify with.
    pinned = dev_env.config().events.key_fingerprint
    assert delivery.headers["X-Custos-Key-Id"] == pinned
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    raw = load_pem_public_key(signer.public_key_pem()).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert key_fingerprint(raw) == pinned


def test_an_altered_body_or_timestamp_fails_verification(signer: DeliverySigner) -> None:
    headers = signer.sign(BODY, 1_700_000_000)
    pem = signer.public_key_pem()
    assert verify_delivery(pem, headers, BODY)
    assert not verify_delivery(pem, headers, BODY.replace(b"7", b"8"))
    assert not verify_delivery(pem, headers, BODY + b" ")
    later = {**headers, "X-Custos-Timestamp": "1700000001"}
    assert not verify_delivery(pem, later, BODY)
    forged = {**headers, "X-Custos-Signature": "A" * 88}
    assert not verify_delivery(pem, forged, BODY)


def test_a_receiver_the_ca_does_not_vouch_for_gets_nothing(
    signer: DeliverySigner, receiver: Receiver
) -> None:
    with pytest.raises(DeliveryError, match="certificate did not verify"):
        post_signed(receiver.url, BODY, signer, timeout_s=30, ca_file=None, now=lambda: 1)
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:1/hook", "https"),
        ("https://user:pw@localhost/hook", "credentials"),
        ("https:///nohost", "host"),
        ("https://localhost/a b", "spaces"),
    ],
)
def test_only_plain_https_urls(signer: DeliverySigner, url: str, why: str) -> None:
    with pytest.raises(DeliveryError, match=why):
        post_signed(url, BODY, signer, timeout_s=5, ca_file=None, now=lambda: 1)


def test_a_receiver_that_never_answers_times_out(signer: DeliverySigner) -> None:
    # Accepts connections (the kernel's backlog) but never speaks TLS.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"https://localhost:{silent.getsockname()[1]}/hook"
        with pytest.raises(DeliveryError, match="no answer within 1 s"):
            post_signed(url, BODY, signer, timeout_s=1, ca_file=None, now=lambda: 1)


def test_start_up_refuses_a_token_whose_event_key_is_not_the_pinned_one(
    dev_env: DevEnv, tmp_path: Path
) -> None:
    from custos.signer.edge.server import CustosServer

    config = dev_env.config()
    config = config.model_copy(
        update={
            "store": config.store.model_copy(update={"url": f"sqlite:///{tmp_path / 'c.db'}"}),
            "events": config.events.model_copy(update={"key_fingerprint": "0" * 64}),
        }
    )
    with pytest.raises(ConfigError, match="event-signing key '_events' has fingerprint"):
        CustosServer(config, dev_env.pin())


def test_events_init_key_pins_the_key_of_an_existing_install(
    dev_env: DevEnv, tmp_path: Path
) -> None:
    import subprocess
    import sys

    pinned = dev_env.config().events.key_fingerprint
    text = dev_env.config_path.read_text()
    without = text.replace(f'[events]\nkey_fingerprint = "{pinned}"\n', "")
    assert "[events]" not in without
    config = dev_env.config_path.with_name("before-webhooks.toml")
    config.write_text(without)
    run = [
        sys.executable,
        "-m",
        "custos.signer.tools.cli",
        "events",
        "init-key",
        "--config",
        str(config),
    ]
    first = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    # The token already has the key (custos init made it): found, not made again.
    assert first.stdout.splitlines()[0] == "event-signing key found in the token"
    assert first.stdout.endswith(f'[events]\nkey_fingerprint = "{pinned}"\n')
    config.write_text(without + '\n[events]\nkey_fingerprint = "' + "0" * 64 + '"\n')
    wrong = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert wrong.returncode != 0
    assert "this is not the token the config was set up with" in wrong.stderr


def test_a_claim_lease_shorter_than_two_renewals_is_refused() -> None:
    from pydantic import ValidationError

    from custos.signer.edge.config import EventsConfig

    with pytest.raises(ValidationError, match="at least twice claim_check_seconds"):
        EventsConfig(claim_check_seconds=10, claim_lease_seconds=15)
    assert EventsConfig(claim_check_seconds=1, claim_lease_seconds=2).claim_lease_seconds == 2
