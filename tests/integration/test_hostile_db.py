"""A hostile database: plain SQL against the store of a running `custos serve` (invariant 8).

The attacker can read and write every table but holds neither the HSM nor a
client certificate. Run on SQLite and PostgreSQL. In every case: no signature
leaves, the client gets a clear error (DATA_LOSS naming the row), an alarm is
recorded, and health says NOT_SERVING where the service cannot go on.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.audit.record import AuditRecord
from custos.proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from tests import builders
from tests.conftest import DevEnv, ServerProcess
from tests.second_impl import evm_sender

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Hostile:
    """A server process and raw SQL access to its store."""

    server: ServerProcess
    sql: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]

    def keys(self) -> keys_pb2_grpc.KeysStub:
        return keys_pb2_grpc.KeysStub(self.server.channel("officer"))

    def create_key(self, key_id: str) -> keys_pb2.Key:
        return self.keys().CreateKey(
            keys_pb2.CreateKeyRequest(key_id=key_id, network_class=keys_pb2.NETWORK_CLASS_TESTNET)
        )

    def sign(
        self, key: keys_pb2.Key, key_id: str | None = None, request_id: str = ""
    ) -> pb.SignBatchResponse:
        item = builders.evm_item(key)
        if key_id is not None:
            item.key_id = key_id
        return self.sign_items([item], request_id)

    def sign_items(
        self, items: Sequence[pb.SignItem], request_id: str = ""
    ) -> pb.SignBatchResponse:
        stub = signer_pb2_grpc.SignerStub(self.server.channel("payments"))
        request = pb.SignBatchRequest(request_id=request_id or f"h-{uuid.uuid4().hex}", items=items)
        response = stub.SignBatch(request)
        for signed in response.items:  # what does leave is checked by a second implementation
            assert evm_sender(signed.raw_tx) == signed.address
        return response

    def refused(
        self,
        key: keys_pb2.Key,
        key_id: str | None = None,
        items: Sequence[pb.SignItem] = (),
    ) -> grpc.RpcError:
        """Sign and expect a refusal: no signature in a response, none stored, none audited."""
        request_id = f"h-{uuid.uuid4().hex}"
        if not items:
            item = builders.evm_item(key)
            item.key_id = key_id or item.key_id
            items = [item]
        with pytest.raises(grpc.RpcError) as caught:
            self.sign_items(items, request_id)
        assert caught.value.code() is grpc.StatusCode.DATA_LOSS, caught.value.details()
        assert "nothing was signed" in caught.value.details()
        signed = [r for r in self.records() if r.event.kind == "sign.signed"]
        assert all(r.event.fields.get("request_id") != request_id for r in signed)
        return caught.value

    def records(self) -> list[AuditRecord]:
        return [AuditRecord.decode(bytes(r[0])) for r in self.sql("SELECT record FROM audit_log")]

    def health(self) -> int:
        stub = health_pb2_grpc.HealthStub(self.server.channel("auditor"))
        return int(stub.Check(health_pb2.HealthCheckRequest()).status)

    def restart(self) -> None:
        self.server.stop()
        self.server.start()


def _sqlite(path: Path) -> Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]:
    def run(query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        try:
            return db.execute(query, params).fetchall()
        finally:
            db.close()

    return run


def _postgres(url: str, schema: str) -> Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]:
    def run(query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
            cur = conn.execute(query.replace("?", "%s").encode(), params)
            return cur.fetchall() if cur.description else []

    return run


@pytest.fixture(params=["sqlite", "postgres"])
def hostile(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_env: Callable[[Path], DevEnv]
) -> Iterator[Hostile]:
    env = fresh_env(tmp_path / "env")
    env_dir, config = env.dir, env.config_path
    if request.param == "sqlite":
        sql = _sqlite(env_dir / "custos.db")
    else:
        url = request.getfixturevalue("postgres_url")
        schema = request.getfixturevalue("pg_schema")
        text = config.read_text()
        old = next(line for line in text.splitlines() if line.startswith("url = "))
        config.write_text(text.replace(old, f'url = "{url}?schema={schema}"'))
        sql = _postgres(url, schema)
    server = ServerProcess(env)
    server.start()
    yield Hostile(server, sql)
    server.stop()


def _row(h: Hostile, key_id: str) -> tuple[Any, ...]:
    [row] = h.sql(
        "SELECT key_id, public_key, state, created_by, created_at_ms, version, mac,"
        " network_class FROM keys WHERE key_id = ?",
        [key_id],
    )
    return row


def _put_row(h: Hostile, key_id: str, row: tuple[Any, ...]) -> None:
    h.sql("DELETE FROM keys WHERE key_id = ?", [key_id])
    h.sql(
        "INSERT INTO keys (key_id, public_key, state, created_by, created_at_ms, version, mac,"
        " network_class) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [key_id, *row[1:]],
    )


def test_key_records_cannot_be_altered_moved_forged_or_replayed(hostile: Hostile) -> None:
    h = hostile
    names = ("good", "off", "pub", "net", "origin", "moved", "old")
    keys = {name: h.create_key(f"{name}-key") for name in names}
    assert len(h.sign(keys["good"]).items) == 1

    # A disabled key enabled by hand.
    h.keys().DisableKey(keys_pb2.SetKeyStateRequest(key_id="off-key"))
    h.sql("UPDATE keys SET state = 'enabled' WHERE key_id = 'off-key'", [])
    error = h.refused(keys["off"])
    assert "keys row 'off-key' does not match its authenticator" in error.details()

    # Another public key written into a row (one the attacker's key would match).
    good_public = _row(h, "good-key")[1]
    h.sql("UPDATE keys SET public_key = ? WHERE key_id = 'pub-key'", [good_public])
    h.refused(keys["pub"])

    # A testnet key relabelled mainnet (other policy rules would judge it).
    h.sql("UPDATE keys SET network_class = 'mainnet' WHERE key_id = 'net-key'", [])
    h.refused(keys["net"])

    # A generated key relabelled imported (key_origins rules would judge it otherwise).
    h.sql("UPDATE keys SET origin = 'imported' WHERE key_id = 'origin-key'", [])
    h.refused(keys["origin"])

    # A row moved to another id: good-key's row, tag and all, under moved-key.
    _put_row(h, "moved-key", _row(h, "good-key"))
    h.refused(keys["good"], key_id="moved-key")

    # Forged rows: no tag, a random tag.
    for forged, mac in (("forged-a", None), ("forged-b", b"\x07" * 32)):
        h.sql(
            "INSERT INTO keys (key_id, public_key, state, created_by, created_at_ms, version, mac,"
            " network_class) VALUES (?, ?, 'enabled', 'officer', 1, 1, ?, 'testnet')",
            [forged, good_public, mac],
        )
        h.refused(keys["good"], key_id=forged)

    # An older version of a row put back: enabled v1 over disabled v2.
    enabled_v1 = _row(h, "old-key")
    h.keys().DisableKey(keys_pb2.SetKeyStateRequest(key_id="old-key"))
    _put_row(h, "old-key", enabled_v1)
    error = h.refused(keys["old"])
    assert "older than version 2" in error.details()

    # Officers' reads are checked too; untouched keys still sign; the service goes on.
    with pytest.raises(grpc.RpcError) as caught:
        h.keys().GetKey(keys_pb2.GetKeyRequest(key_id="pub-key"))
    assert caught.value.code() is grpc.StatusCode.DATA_LOSS
    assert len(h.sign(keys["good"]).items) == 1
    assert h.health() == SERVING

    # After a restart the replay is still refused: the audit log names version 2.
    h.restart()
    error = h.refused(keys["old"])
    assert "older than version 2" in error.details()
    alarms = {r.event.fields["row"] for r in h.records() if r.event.kind == "state.tampered"}
    assert {
        "off-key",
        "pub-key",
        "net-key",
        "origin-key",
        "moved-key",
        "forged-a",
        "forged-b",
        "old-key",
    } <= alarms


def _policy(h: Hostile) -> tuple[Any, ...]:
    [row] = h.sql(
        "SELECT version, hash, document_yaml, state, record, activated_at_ms, rev, mac"
        " FROM policy_versions",
        [],
    )
    return row


def _restore_policy(h: Hostile, row: tuple[Any, ...]) -> None:
    h.sql("DELETE FROM policy_versions", [])
    h.sql(
        "INSERT INTO policy_versions"
        " (version, hash, document_yaml, state, record, activated_at_ms, rev, mac)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        list(row),
    )


def _not_serving(h: Hostile, key: keys_pb2.Key, why: str) -> None:
    """After a restart on the tampered store: up, but NOT_SERVING, and signing nothing."""
    h.restart()
    assert h.health() == NOT_SERVING
    error = h.refused(key)
    assert "policy_versions" in error.details()
    log = (h.server.env.dir / f"{h.server.name}.log").read_text()
    assert why in log


def test_the_policy_cannot_be_swapped_repointed_forged_or_deleted(hostile: Hostile) -> None:
    h = hostile
    key = h.create_key("policy-key")
    h.sign(key)
    original = _policy(h)
    assert h.health() == SERVING

    # Another policy text under the approved hash: everything allowed, say.
    h.sql("UPDATE policy_versions SET document_yaml = document_yaml || '# more' ", [])
    _not_serving(h, key, "policy_versions row 1 does not match its authenticator")

    # The active-version label moved away from the active version.
    _restore_policy(h, original)
    h.sql("UPDATE policy_versions SET state = 'superseded'", [])
    _not_serving(h, key, "the store marks none as active")

    # A forged newer version, marked active.
    _restore_policy(h, original)
    forged = (2, original[1], original[2], "active", original[4], original[5], 1, b"\x01" * 32)
    h.sql("UPDATE policy_versions SET state = 'superseded'", [])
    h.sql(
        "INSERT INTO policy_versions"
        " (version, hash, document_yaml, state, record, activated_at_ms, rev, mac)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        list(forged),
    )
    _not_serving(h, key, "policy_versions row 2 does not match its authenticator")

    # The untouched store serves again after a restart.
    _restore_policy(h, original)
    h.restart()
    assert h.health() == SERVING
    assert len(h.sign(key).items) == 1

    # The policy table emptied: the bootstrap file is not installed again.
    h.sql("DELETE FROM policy_versions", [])
    h.server.stop()
    with pytest.raises(AssertionError) as failed:
        h.server.start()
    assert "records the activation of version 1" in str(failed.value)
    assert "refusing to install the bootstrap file" in str(failed.value)

    # Without a bootstrap file it starts, NOT_SERVING: the log says a policy was active.
    config = h.server.env.config_path
    text = config.read_text()
    config.write_text(text.replace(text[text.index("[policy]") :].split("\n\n")[0], ""))
    _not_serving(h, key, "newer versions were deleted or replaced")


ETH = 10**18
# The development policy limits Holesky native payments to 1 ETH per key and hour.
HOLESKY_BUCKET = "holesky-hourly-per-key|key={}|asset=ethereum:holesky:native"
FEE = 60_000 * 30_000_000_000  # builders.evm_item's maximum fee, charged to the limit too


def _holesky(key: keys_pb2.Key, value: int, nonce: int) -> pb.SignItem:
    return builders.evm_item(key, chain_id=17000, nonce=nonce, value=str(value))


def _over_limit(h: Hostile, item: pb.SignItem) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        h.sign_items([item])
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert "velocity limit 'holesky-hourly-per-key' exceeded" in caught.value.details()


def test_deleting_or_editing_budget_reservations_frees_no_budget(hostile: Hostile) -> None:
    h = hostile
    attacks = {
        "deleted": "DELETE FROM reservations WHERE bucket = ?",
        "lowered": "UPDATE reservations SET amount = '0', count = 0 WHERE bucket = ?",
        "released": "UPDATE reservations SET released = TRUE WHERE bucket = ?",
        "aged": "UPDATE reservations SET reserved_at_ms = reserved_at_ms - 7200000"
        " WHERE bucket = ?",
    }
    keys = {name: h.create_key(f"budget-{name}") for name in (*attacks, "honest")}
    # 3 x 0.3 ETH (and the fees) of each key's 1 ETH per hour.
    for key in keys.values():
        for nonce in range(3):
            h.sign_items([_holesky(key, 3 * ETH // 10, nonce)])
    for name, query in attacks.items():
        h.sql(query, [HOLESKY_BUCKET.format(f"budget-{name}")])

    def refused_everywhere() -> None:
        for name in attacks:
            # Another 0.3 ETH fits what the rows say now, not what was spent.
            error = h.refused(keys[name], items=[_holesky(keys[name], 3 * ETH // 10, 3)])
            bucket = HOLESKY_BUCKET.format(f"budget-{name}")
            assert f"reservations row {bucket!r}" in error.details()
            assert f"the audit log proves {3 * (3 * ETH // 10 + FEE)} (count 3)" in error.details()
        # The untouched key's limit answers as ever; the service goes on.
        _over_limit(h, _holesky(keys["honest"], 3 * ETH // 10, 3))
        assert h.health() == SERVING

    refused_everywhere()
    # After a restart the ledger is replayed from the verified log: still refused.
    h.restart()
    refused_everywhere()
    alarms = {
        r.event.fields["row"]
        for r in h.records()
        if r.event.kind == "state.tampered" and r.event.fields["table"] == "reservations"
    }
    assert alarms == {HOLESKY_BUCKET.format(f"budget-{name}") for name in attacks}


def test_a_rejected_held_batch_gives_its_budget_back(hostile: Hostile) -> None:
    """The legitimate release path through the server: the ledger agrees with the rows."""
    h = hostile
    key = h.create_key("budget-held")
    large = builders.evm_item(key, chain_id=11155111, value=str(2 * ETH))  # needs approvers
    held = h.sign_items([large, _holesky(key, 9 * ETH // 10, 0)])
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    _over_limit(h, _holesky(key, 3 * ETH // 10, 1))  # 0.9 ETH of it is reserved

    approvals = policy_pb2_grpc.ApprovalsStub(h.server.channel("approver"))
    pending = approvals.GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    approvals.Reject(
        policy_pb2.DecideRequest(
            approval_id=held.approval_id, request_digest=pending.request_digest
        )
    )
    # Its budget is back, the rows and the log agree: no alarm, the limit holds.
    assert len(h.sign_items([_holesky(key, 9 * ETH // 10, 1)]).items) == 1
    _over_limit(h, _holesky(key, 3 * ETH // 10, 2))
    h.restart()
    assert len(h.sign_items([_holesky(key, ETH // 20, 2)]).items) == 1
    _over_limit(h, _holesky(key, 3 * ETH // 10, 3))
    assert all(r.event.kind != "state.tampered" for r in h.records())


def test_a_failed_batch_gives_its_budget_back(hostile: Hostile) -> None:
    """A batch claimed and reserved whose signing fails: sign.failed releases it in rows and log.

    Signing is made to fail by stopping the audit log (its checkpoint rows deleted
    while it runs); once they are back, a restart replays the failed attempt.
    """
    h = hostile
    key = h.create_key("budget-failed")
    audit = audit_pb2_grpc.AuditStub(h.server.channel("officer"))
    audit.CreateCheckpoint(audit_pb2.CreateCheckpointRequest())
    checkpoints = h.sql("SELECT size, root, note FROM audit_checkpoints", [])
    h.sql("DELETE FROM audit_checkpoints", [])
    deadline = time.monotonic() + 120
    while h.health() != NOT_SERVING:
        assert time.monotonic() < deadline, "the deleted checkpoints were never noticed"
        time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as caught:
        h.sign_items([_holesky(key, 9 * ETH // 10, 0)], "budget-failed-1")
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    mine = [
        r.event.kind for r in h.records() if r.event.fields.get("request_id") == "budget-failed-1"
    ]
    assert mine == ["sign.authorized", "sign.failed"]

    for row in checkpoints:
        h.sql("INSERT INTO audit_checkpoints (size, root, note) VALUES (?, ?, ?)", list(row))
    h.restart()
    assert h.health() == SERVING
    # The failed attempt's 0.9 ETH is back: rows and the replayed log agree.
    assert len(h.sign_items([_holesky(key, 9 * ETH // 10, 0)]).items) == 1
    _over_limit(h, _holesky(key, 3 * ETH // 10, 1))
    assert all(r.event.kind != "state.tampered" for r in h.records())
