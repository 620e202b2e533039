"""Events across replicas: two `custos serve` processes on one PostgreSQL database.

A watcher on one replica sees, in log order and without gaps, what the other
decided; a watcher whose replica is SIGKILLed resumes on the other after the
last sequence number it saw and gets every later event exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from custos.audit.record import AuditRecord
from custos.proto.custos.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.store.factory import open_store
from custos.signer.tools.devsetup import DevCa, subject_string, write_client_profile
from tests import builders
from tests.conftest import DevEnv, ServerProcess
from tests.integration.test_replicas import _configure
from tests.outbox_support import BATCH, LIVENESS_SECONDS, Watch, due, got, watch
from tests.second_impl import evm_sender
from tests.store.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration

ETH = 10**18
PAYMENTS, LIMITED = subject_string("payments"), subject_string("limited")


def _add_service(env: DevEnv, name: str, keys: str) -> None:
    """A second service identity (its own certificate), granted keys matching `keys`."""
    ca = DevCa(env.dir / "pki")
    cert, key = ca.issue(name, server=False)
    write_client_profile(env.dir / "clients" / f"{name}.toml", "", ca.cert_path, cert, key)
    with env.config_path.open("a") as handle:
        handle.write(
            f'\n[[identities]]\nsubject = "{subject_string(name)}"\n'
            f'roles = ["service"]\nkeys = ["{keys}"]\n'
        )


@pytest.fixture
def replicas(
    tmp_path: Path,
    postgres_url: str,
    pg_schema: str,
    fresh_env: Callable[[Path], DevEnv],
) -> Iterator[tuple[ServerProcess, ServerProcess, Callable[[], list[AuditRecord]]]]:
    url = f"{postgres_url}?schema={pg_schema}"
    env = _configure(fresh_env(tmp_path / "env"), url)
    _add_service(env, "limited", "limited-*")
    a, b = ServerProcess(env, "replica-a"), ServerProcess(env, "replica-b")
    a.start()
    b.start()
    reader = open_store(url)

    def records() -> list[AuditRecord]:
        return reader.audit_records(0, 10**7)

    yield a, b, records
    reader.close()
    a.stop()
    b.stop()


def _owners(records: Sequence[AuditRecord]) -> Callable[[AuditRecord], str]:
    requested = {
        r.event.fields["approval_id"]: r.event.actor
        for r in records
        if r.event.kind == "approval.requested"
    }

    def owner(record: AuditRecord) -> str:
        if record.event.kind in ("approval.requested", "sign.signed", "sign.refused"):
            return record.event.actor
        return str(requested.get(record.event.fields.get("approval_id"), ""))

    return owner


def _mine(records: Sequence[AuditRecord], subject: str) -> Callable[[AuditRecord], bool]:
    owner = _owners(records)
    return lambda r: r.event.kind in BATCH and owner(r) == subject


def _decide_things(server: ServerProcess, tag: str) -> dict[str, str]:
    """Signed, held then rejected, refused batches of two services, and key events."""
    officer = keys_pb2_grpc.KeysStub(server.channel("officer"))
    testnet = keys_pb2.NETWORK_CLASS_TESTNET
    key = officer.CreateKey(
        keys_pb2.CreateKeyRequest(key_id=f"{tag}-{uuid.uuid4().hex[:8]}", network_class=testnet)
    )
    limited_key = officer.CreateKey(
        keys_pb2.CreateKeyRequest(key_id=f"limited-{uuid.uuid4().hex[:8]}", network_class=testnet)
    )
    payments = signer_pb2_grpc.SignerStub(server.channel("payments"))
    ids = {}
    for n in range(5):
        ids[f"signed-{n}"] = f"{tag}-s{n}"
        signed = payments.SignBatch(
            pb.SignBatchRequest(
                request_id=ids[f"signed-{n}"], items=[builders.evm_item(key, nonce=n)]
            )
        )
        assert evm_sender(signed.items[0].raw_tx) == builders.address(key, "ethereum", "sepolia")
    ids["held"] = f"{tag}-held"
    held = payments.SignBatch(
        pb.SignBatchRequest(
            request_id=ids["held"], items=[builders.evm_item(key, nonce=9, value=str(ETH))]
        )
    )
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    approver = policy_pb2_grpc.ApprovalsStub(server.channel("approver"))
    digest = approver.GetPending(
        policy_pb2.GetPendingRequest(approval_id=held.approval_id)
    ).request_digest
    approver.Reject(policy_pb2.DecideRequest(approval_id=held.approval_id, request_digest=digest))
    ids["over"] = f"{tag}-over"
    over = [builders.evm_item(key, chain_id=17000, nonce=n, value=str(ETH)) for n in (20, 21)]
    with pytest.raises(grpc.RpcError) as refused:
        payments.SignBatch(pb.SignBatchRequest(request_id=ids["over"], items=over))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ids["limited"] = f"{tag}-limited"
    theirs = signer_pb2_grpc.SignerStub(server.channel("limited")).SignBatch(
        pb.SignBatchRequest(request_id=ids["limited"], items=[builders.evm_item(limited_key)])
    )
    assert evm_sender(theirs.items[0].raw_tx) == builders.address(
        limited_key, "ethereum", "sepolia"
    )
    officer.DisableKey(keys_pb2.SetKeyStateRequest(key_id=key.key_id))
    return ids


def test_a_watcher_on_one_replica_sees_every_event_decided_on_the_other(
    replicas: tuple[ServerProcess, ServerProcess, Callable[[], list[AuditRecord]]],
) -> None:
    a, b, records = replicas
    watchers = {name: watch(a.channel(name)) for name in ("officer", "payments", "limited")}
    ids = _decide_things(b, "rep")
    log = records()
    rules = {
        "officer": lambda r: True,
        "payments": _mine(log, PAYMENTS),
        "limited": _mine(log, LIMITED),
    }
    for name, w in watchers.items():
        expected = due(log, w.start_seq, rules[name])
        w.wait_through(expected[-1][0])
        w.cancel()
        assert got(w.events)[: len(expected)] == expected, name
    mine = {e.request_id for e in watchers["payments"].events}
    theirs = {e.request_id for e in watchers["limited"].events}
    assert ids["limited"] in theirs
    assert ids["limited"] not in mine
    assert {ids["held"], ids["over"], ids["signed-0"]} <= mine
    assert not theirs & {ids["held"], ids["over"], ids["signed-0"]}
    kinds = [e.kind for e in watchers["payments"].events if e.request_id == ids["held"]]
    assert kinds == ["pending", "rejected"]
    officer_kinds = {e.kind for e in watchers["officer"].events}
    assert {"key.created", "key.disabled", "signed", "pending", "rejected", "refused"} <= (
        officer_kinds
    )


def test_sigkill_mid_stream_then_resume_on_the_other_replica_loses_and_repeats_nothing(
    replicas: tuple[ServerProcess, ServerProcess, Callable[[], list[AuditRecord]]],
) -> None:
    a, b, records = replicas
    first = {name: watch(a.channel(name)) for name in ("officer", "payments")}
    stop = threading.Event()
    problems: list[BaseException] = []

    def produce() -> None:
        n = 0
        try:
            while not stop.is_set():
                _decide_things(b, f"kill{n}")
                n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            problems.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for w in first.values():  # mid-stream: some events are through, more are coming
            w.wait(lambda seen: len(seen) > 6)
        assert a.process is not None
        a.process.kill()
        a.process.wait()
        for w in first.values():
            assert w.done.wait(LIVENESS_SECONDS)
            assert w.error is not None
            assert w.error.code() == grpc.StatusCode.UNAVAILABLE
        resumed: dict[str, Watch] = {}
        for name, w in first.items():
            last = w.events[-1].seq if w.events else w.start_seq
            resumed[name] = watch(b.channel(name), after_seq=last)
            assert resumed[name].start_seq == last
        for w in resumed.values():
            w.wait(lambda seen: len(seen) > 6)  # the resumed streams are live too
    finally:
        stop.set()
        producer.join(timeout=300)
    assert not problems, problems
    log = records()
    for name, rule in (("officer", lambda r: True), ("payments", _mine(log, PAYMENTS))):
        expected = due(log, first[name].start_seq, rule)
        resumed[name].wait_through(expected[-1][0])
        resumed[name].cancel()
        joined = got(first[name].events) + got(resumed[name].events)
        assert joined[: len(expected)] == expected, name
        seqs = [seq for seq, _kind, _rid in joined]
        assert len(seqs) == len(set(seqs)), name


def test_cli_watch_resumes_on_another_replica_after_a_sigkill(
    replicas: tuple[ServerProcess, ServerProcess, Callable[[], list[AuditRecord]]],
) -> None:
    """`custos approvals watch --from-seq` behind one address (a proxy, as a load
    balancer would be): A dies, the proxy sends new connections to B, and the
    CLI resumes after the last sequence number it printed."""
    a, b, records = replicas
    proxy = TcpProxy(("127.0.0.1", a.port))
    proxy.start()
    profile = a.env.dir / "clients" / "officer.toml"
    cli_profile = a.env.dir / "clients" / "officer-cli.toml"
    text = profile.read_text()
    endpoint = next(line for line in text.splitlines() if line.startswith("endpoint = "))
    cli_profile.write_text(text.replace(endpoint, f'endpoint = "127.0.0.1:{proxy.port}"'))
    start = len(records()) - 1
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "custos.signer.tools.cli",
            "approvals",
            "watch",
            "--from-seq",
            str(start),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CUSTOS_CLIENT": str(cli_profile)},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(cli.stdout.readline, "")))  # type: ignore[union-attr]
    reader.daemon = True
    reader.start()

    def printed_through(seq: int) -> None:
        deadline = time.monotonic() + LIVENESS_SECONDS
        while not any(_seq_of(line) >= seq for line in list(lines)):
            assert cli.poll() is None, cli.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)

    try:
        _decide_things(b, "cli1")
        printed_through(due(records(), start)[-1][0])
        proxy.target = ("127.0.0.1", b.port)  # new connections go to B from now on
        assert a.process is not None
        a.process.kill()
        a.process.wait()
        _decide_things(b, "cli2")
        expected = due(records(), start)
        printed_through(expected[-1][0])
    finally:
        cli.terminate()
        cli.wait(timeout=30)
        proxy.cut()
    assert lines[0] == f"# watching after seq {start}\n"
    seqs = [_seq_of(line) for line in lines if not line.startswith("#")]
    assert seqs[: len(expected)] == [seq for seq, _kind, _rid in expected]
    # It resumed once, after the last event it had printed.
    resumed = [line for line in lines[1:] if line.startswith("#")]
    assert len(resumed) == 1
    last_before = _seq_of(lines[lines.index(resumed[0]) - 1])
    assert resumed[0] == f"# watching after seq {last_before}\n"
    assert "resuming after seq" in cli.stderr.read()  # type: ignore[union-attr]


def _seq_of(line: str) -> int:
    first = line.split(maxsplit=1)[0] if line.strip() else ""
    return int(first) if first.isdigit() else -1
