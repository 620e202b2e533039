"""Webhooks through the real server: registration (officers only, checked input), signed
deliveries in order across a receiver outage, replay, a tampered endpoint row, and two
replicas on PostgreSQL with the delivering one SIGKILLed.

The receiver (tests/webhook_receiver.py) verifies every delivery with `cryptography`
against the key GetEventKey publishes; the expected sequence numbers come from the
audit log read directly from the store.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc, webhooks_pb2, webhooks_pb2_grpc
from custos.signer.store.base import Store
from custos.signer.store.factory import open_store
from tests.conftest import DevEnv, RunningServer, ServerProcess, server_with_policy
from tests.integration.test_cli import _custos
from tests.integration.test_replicas import _configure
from tests.webhook_receiver import Receiver, start_receiver

pytestmark = pytest.mark.integration

KINDS = ["key.created", "key.disabled"]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    receiver, httpd = start_receiver(tmp_path, b"")  # the key is set once a server publishes it
    yield receiver
    httpd.shutdown()


def _fast_retries(ca_file: Path) -> dict[str, Any]:
    return {
        "ca_file": ca_file,
        "retry_initial_seconds": 0.1,
        "retry_max_seconds": 0.5,
        "claim_check_seconds": 0.5,
        "claim_lease_seconds": 3.0,
        "delivery_timeout_seconds": 30.0,
    }


@pytest.fixture
def server(dev_env: DevEnv, tmp_path: Path, receiver: Receiver) -> Iterator[RunningServer]:
    config = dev_env.config()
    events = config.events.model_copy(update=_fast_retries(receiver.ca_file))
    policy = (dev_env.dir / "policy.yaml").read_text()
    with server_with_policy(dev_env, tmp_path, policy, events=events) as running:
        receiver.public_key_pem = _published_key(running.channel("auditor"))
        yield running


def _published_key(channel: grpc.Channel) -> bytes:
    key = webhooks_pb2_grpc.WebhooksStub(channel).GetEventKey(webhooks_pb2.GetEventKeyRequest())
    return key.public_key_pem.encode()


def _hooks(channel: grpc.Channel) -> webhooks_pb2_grpc.WebhooksStub:
    return webhooks_pb2_grpc.WebhooksStub(channel)


def _create_keys(channel: grpc.Channel, prefix: str, count: int) -> None:
    keys = keys_pb2_grpc.KeysStub(channel)
    for n in range(count):
        keys.CreateKey(
            keys_pb2.CreateKeyRequest(
                key_id=f"{prefix}-{n}", network_class=keys_pb2.NETWORK_CLASS_TESTNET
            )
        )


def _due(store: Store, from_seq: int) -> list[int]:
    """Sequence numbers of the log's records of KINDS from `from_seq`, read from the store."""
    audit_kinds = {"key.created", "key.disabled"}
    return [r.seq for r in store.audit_records(from_seq, 10**7) if r.event.kind in audit_kinds]


def _store(server: RunningServer) -> Store:
    store: Store = server.server.store  # type: ignore[attr-defined]
    return store


def _deliveries(outcome: str) -> float:
    """custos_webhook_deliveries_total{outcome} of the in-process server."""
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("custos_webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_registration_is_for_officers_and_bad_input_names_the_field(
    server: RunningServer, receiver: Receiver
) -> None:
    officer = _hooks(server.channel("officer"))
    add = webhooks_pb2.AddWebhookRequest
    for name in ("payments", "approver", "auditor"):
        code, _ = _code(
            lambda n=name: _hooks(server.channel(n)).AddWebhook(add(url=receiver.url, kinds=KINDS))
        )  # type: ignore[misc]
        assert code == grpc.StatusCode.PERMISSION_DENIED, name
    bad: list[tuple[webhooks_pb2.AddWebhookRequest, str]] = [
        (add(url="http://localhost/hook", kinds=KINDS), "url: must be an https:// URL"),
        (add(url="https://user:pw@localhost/h", kinds=KINDS), "url: must not carry credentials"),
        (add(url="not a url", kinds=KINDS), "url:"),
        (add(url=receiver.url, kinds=[]), "kinds: name at least one event kind"),
        (add(url=receiver.url, kinds=["signed", "nope"]), "kinds: unknown event kind 'nope'"),
        (add(url=receiver.url, kinds=KINDS, from_seq=10**9), "from_seq: must be between 0 and"),
    ]
    for request, message in bad:
        code, details = _code(lambda r=request: officer.AddWebhook(r))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert details.startswith(message), details
    code, details = _code(
        lambda: officer.RemoveWebhook(webhooks_pb2.RemoveWebhookRequest(webhook_id="wh-none"))
    )
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "webhook_id: no webhook 'wh-none'")
    # Nothing half-written: no endpoint, and no audit record of one.
    listed = _hooks(server.channel("auditor")).ListWebhooks(webhooks_pb2.ListWebhooksRequest())
    assert list(listed.webhooks) == []
    records = _store(server).audit_records(0, 10**7)
    assert not [r for r in records if r.event.kind.startswith("webhook.")]
    # A registered endpoint; a replay from beyond the log is refused by name.
    hook = officer.AddWebhook(add(url=receiver.url, kinds=KINDS))
    code, details = _code(
        lambda: officer.ReplayWebhook(
            webhooks_pb2.ReplayWebhookRequest(webhook_id=hook.webhook_id, from_seq=10**9)
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("from_seq: must be between 0 and")
    code, _ = _code(
        lambda: _hooks(server.channel("payments")).RemoveWebhook(
            webhooks_pb2.RemoveWebhookRequest(webhook_id=hook.webhook_id)
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_every_event_once_in_order_across_a_receiver_outage_then_a_replay(
    server: RunningServer, receiver: Receiver
) -> None:
    officer = server.channel("officer")
    hook = _hooks(officer).AddWebhook(webhooks_pb2.AddWebhookRequest(url=receiver.url, kinds=KINDS))
    start = hook.next_seq
    refused_before = _deliveries("refused")
    _create_keys(officer, "before-outage", 2)
    receiver.wait_for(lambda r: len(r.accepted()) == 2)
    receiver.status = 503  # the receiver is down: every attempt fails, nothing is skipped
    _create_keys(officer, "during-outage", 3)
    receiver.wait_for(lambda r: len(r.requests) >= 2 + 3)  # retried while it is down
    receiver.status = 200
    _create_keys(officer, "after-outage", 2)
    expected = _due(_store(server), start)
    assert len(expected) == 7
    receiver.wait_for(lambda r: len(r.accepted()) >= len(expected))
    # One server, nothing lost in between: no delivery even needs deduplication.
    assert receiver.sequences() == expected
    assert all(d.verified for d in receiver.requests)
    refused = [d for d in receiver.requests if d.headers["X-Answered"] == "503"]
    assert len(refused) >= 3
    assert _deliveries("refused") - refused_before == len(refused)  # the metric counts them
    assert {int(d.headers["X-Custos-Sequence"]) for d in refused} <= set(expected[2:])
    # The cursor moves past the last event once its 2xx is in.
    _wait_for_cursor(_hooks(officer), expected[-1] + 1)
    # Replay from the third event: those events again, in order, then nothing else.
    _hooks(officer).ReplayWebhook(
        webhooks_pb2.ReplayWebhookRequest(webhook_id=hook.webhook_id, from_seq=expected[2])
    )
    receiver.wait_for(lambda r: len(r.accepted()) >= len(expected) + 5)
    assert receiver.sequences() == expected + expected[2:]
    assert receiver.deduplicated() == expected
    kinds = [r.event.kind for r in _store(server).audit_records(start, 10**7)]
    assert "webhook.replayed" in kinds


def test_an_endpoint_row_redirected_in_the_database_gets_nothing(
    server: RunningServer, receiver: Receiver, tmp_path: Path
) -> None:
    officer = server.channel("officer")
    hook = _hooks(officer).AddWebhook(webhooks_pb2.AddWebhookRequest(url=receiver.url, kinds=KINDS))
    _create_keys(officer, "tamper-a", 1)
    receiver.wait_for(lambda r: len(r.accepted()) == 1)
    attacker, httpd = start_receiver(tmp_path / "attacker", receiver.public_key_pem)
    try:
        with sqlite3.connect(tmp_path / "custos.db") as db:
            db.execute(
                "UPDATE webhooks SET url = ? WHERE webhook_id = ?", (attacker.url, hook.webhook_id)
            )
        _create_keys(officer, "tamper-b", 2)
        # The delivery thread sees the row change and stops; the dispatcher checks the
        # row's tag before delivering again, refuses it and raises the alarm.
        wait_for_record(_store(server), "state.tampered")
        auditor = _hooks(server.channel("auditor"))
        assert list(auditor.ListWebhooks(webhooks_pb2.ListWebhooksRequest()).webhooks) == []
    finally:
        httpd.shutdown()
    assert attacker.requests == []
    assert len(receiver.accepted()) == 1


def _wait_for_cursor(hooks: webhooks_pb2_grpc.WebhooksStub, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        (listed,) = hooks.ListWebhooks(webhooks_pb2.ListWebhooksRequest()).webhooks
        if listed.next_seq >= at_least:
            return
        assert time.monotonic() < deadline, f"cursor stuck at {listed.next_seq}"
        time.sleep(0.1)


def wait_for_record(store: Store, kind: str, row: str | None = None) -> None:
    """Until the log holds a `kind` record (about `row`, for state.tampered)."""
    deadline = time.monotonic() + 120
    while not any(
        r.event.kind == kind and row in (None, r.event.fields.get("row"))
        for r in store.audit_records(0, 10**7)
    ):
        assert time.monotonic() < deadline, f"no {kind} record"
        time.sleep(0.2)


def test_a_forged_endpoint_or_a_removed_one_put_back_gets_nothing(
    server: RunningServer, receiver: Receiver, tmp_path: Path
) -> None:
    officer = server.channel("officer")
    hook = _hooks(officer).AddWebhook(webhooks_pb2.AddWebhookRequest(url=receiver.url, kinds=KINDS))
    _create_keys(officer, "resurrect-a", 1)
    receiver.wait_for(lambda r: len(r.accepted()) == 1)
    database = tmp_path / "custos.db"
    with sqlite3.connect(database) as db:
        (old_row,) = db.execute("SELECT * FROM webhooks").fetchall()
    _hooks(officer).RemoveWebhook(webhooks_pb2.RemoveWebhookRequest(webhook_id=hook.webhook_id))
    attacker, httpd = start_receiver(tmp_path / "attacker", receiver.public_key_pem)
    try:
        forged = list(old_row)
        forged[0], forged[1] = "wh-0000000000000000", attacker.url
        with sqlite3.connect(database) as db:
            marks = ", ".join("?" * len(old_row))
            db.execute(f"INSERT INTO webhooks VALUES ({marks})", old_row)  # noqa: S608
            db.execute(f"INSERT INTO webhooks VALUES ({marks})", forged)  # noqa: S608
        _create_keys(officer, "resurrect-b", 2)
        store = _store(server)
        # Refused by their tags (the put-back row by the floor its removal raised).
        wait_for_record(store, "state.tampered", hook.webhook_id)
        wait_for_record(store, "state.tampered", "wh-0000000000000000")
        auditor = _hooks(server.channel("auditor"))
        assert list(auditor.ListWebhooks(webhooks_pb2.ListWebhooksRequest()).webhooks) == []
    finally:
        httpd.shutdown()
    assert attacker.requests == []
    assert len(receiver.requests) == 1


# -- two replicas on PostgreSQL -------------------------------------------------------------


@pytest.fixture
def replicas(
    tmp_path: Path,
    postgres_url: str,
    pg_schema: str,
    receiver: Receiver,
    fresh_env: Callable[[Path], DevEnv],
) -> Iterator[tuple[ServerProcess, ServerProcess, Store]]:
    url = f"{postgres_url}?schema={pg_schema}"
    env = _configure(fresh_env(tmp_path / "env"), url)
    text = env.config_path.read_text()
    settings = "".join(
        f'{name} = "{value}"\n' if isinstance(value, Path) else f"{name} = {value}\n"
        for name, value in _fast_retries(receiver.ca_file).items()
    )
    env.config_path.write_text(text.replace("[events]\n", f"[events]\n{settings}"))
    a, b = ServerProcess(env, "replica-a"), ServerProcess(env, "replica-b")
    a.start()
    b.start()
    receiver.public_key_pem = _published_key(a.channel("auditor"))
    reader = open_store(url)
    yield a, b, reader
    reader.close()
    a.stop()
    b.stop()


def _deliverer(
    a: ServerProcess, b: ServerProcess, hooks: webhooks_pb2_grpc.WebhooksStub
) -> tuple[ServerProcess, ServerProcess]:
    """(the replica delivering to the one endpoint, the other), once one has claimed it."""
    deadline = time.monotonic() + 120
    while True:
        (hook,) = hooks.ListWebhooks(webhooks_pb2.ListWebhooksRequest()).webhooks
        pid = hook.delivering_replica.split("/")[1] if hook.delivering_replica else ""
        for mine, other in ((a, b), (b, a)):
            assert mine.process is not None
            if pid == str(mine.process.pid):
                return mine, other
        assert time.monotonic() < deadline, "no replica claimed the endpoint"
        time.sleep(0.2)


def test_two_replicas_deliver_each_event_once_in_order_across_an_outage_and_a_sigkill(
    replicas: tuple[ServerProcess, ServerProcess, Store], receiver: Receiver
) -> None:
    a, b, store = replicas
    hooks = _hooks(a.channel("officer"))
    hook = hooks.AddWebhook(webhooks_pb2.AddWebhookRequest(url=receiver.url, kinds=KINDS))
    deliverer, other = _deliverer(a, b, hooks)
    # Events decided on the replica that does not deliver: it reaches the receiver anyway.
    producer = other.channel("officer")
    _create_keys(producer, "first", 2)
    receiver.wait_for(lambda r: len(r.accepted()) == 2)
    receiver.status = 503
    _create_keys(producer, "outage", 3)
    receiver.wait_for(lambda r: len(r.requests) >= 2 + 3)
    receiver.status = 200
    receiver.wait_for(lambda r: len(r.accepted()) >= 3)
    # SIGKILL the delivering replica mid-stream; the other takes the endpoint over
    # once the claim's lease runs out and resumes from the stored cursor.
    _create_keys(producer, "racing", 3)
    assert deliverer.process is not None
    deliverer.process.kill()
    deliverer.process.wait()
    _create_keys(producer, "after-kill", 3)
    expected = _due(store, hook.next_seq)
    assert len(expected) == 11
    receiver.wait_for(lambda r: expected[-1] in r.sequences())
    assert receiver.deduplicated() == expected
    assert all(d.verified for d in receiver.requests)
    survivor = _hooks(other.channel("auditor"))
    _wait_for_cursor(survivor, expected[-1] + 1)
    (listed,) = survivor.ListWebhooks(webhooks_pb2.ListWebhooksRequest()).webhooks
    assert other.process is not None
    assert listed.delivering_replica.split("/")[1] == str(other.process.pid)


# -- the command line ----------------------------------------------------------------------


def test_cli_adds_lists_replays_and_removes_and_prints_the_public_key(
    own_server: ServerProcess, receiver: Receiver
) -> None:
    own_server.start()
    added = _custos(
        own_server, "officer", "webhooks", "add", receiver.url, "--kind", "signed",
        "--kind", "key.created", "--from-seq", "0", "-o", "json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    hook = json.loads(added.stdout)
    assert hook["kinds"] == ["key.created", "signed"]
    assert hook["created_by"] == "CN=officer,O=Custos Dev"
    listed = _custos(own_server, "auditor", "webhooks", "list")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["WEBHOOK", "ID", "NEXT", "SEQ", "KINDS", "URL"]
    assert row.split()[0] == hook["webhook_id"]
    assert row.split()[-1] == receiver.url
    bad = _custos(own_server, "officer", "webhooks", "add", "http://x/", "--kind", "signed")
    assert bad.returncode != 0
    assert "url: must be an https:// URL" in bad.stderr
    assert "Traceback" not in bad.stderr
    denied = _custos(own_server, "payments", "webhooks", "remove", hook["webhook_id"])
    assert denied.returncode != 0
    assert "needs one of the roles officer" in denied.stderr
    replayed = _custos(
        own_server, "officer", "webhooks", "replay", hook["webhook_id"], "--from-seq", "1"
    )
    assert replayed.returncode == 0, replayed.stderr
    assert re.search(r"^next seq +1$", replayed.stdout, re.M)
    removed = _custos(own_server, "officer", "webhooks", "remove", hook["webhook_id"])
    assert removed.stdout == f"removed {hook['webhook_id']}\n"
    assert _custos(own_server, "auditor", "webhooks", "list").stdout.splitlines()[1:] == []
    # The same key from the server (any role) and from the token (the operator's config).
    served = _custos(own_server, "payments", "events", "public-key")
    assert served.returncode == 0, served.stderr
    config = str(own_server.env.config_path)
    from_token = _custos(own_server, "officer", "events", "public-key", "--config", config)
    assert from_token.returncode == 0, from_token.stderr
    assert served.stdout == from_token.stdout
    assert served.stdout.startswith("-----BEGIN PUBLIC KEY-----\n")
    fingerprint = own_server.env.config().events.key_fingerprint
    assert served.stdout.endswith(f"# X-Custos-Key-Id: {fingerprint}\n")
