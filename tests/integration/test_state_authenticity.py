"""signer.usecases.authenticity with the real state key of a SoftHSM token (made by `custos
init`)."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pkcs11
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pkcs11 import Attribute, ObjectClass

from custos.audit.record import AuditRecord
from custos.hsm.errors import KeyExists, KeyNotFound
from custos.hsm.pkcs11_token import Pkcs11Token
from custos.hsm.pool import SigningPool
from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc, signer_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.edge import metrics
from custos.signer.edge.errors import ConfigError, TamperedState
from custos.signer.usecases.authenticity import (
    KEY_CHECK_MESSAGE,
    Fact,
    StateAuthenticator,
    key_check_value,
    open_authenticator,
)
from tests import builders
from tests.conftest import SOFTHSM_LIBRARY, DevEnv, RunningServer, ServerProcess
from tests.second_impl import evm_sender

pytestmark = pytest.mark.integration

KEY_ID = "_state"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def pool(dev_env: DevEnv) -> Iterator[SigningPool]:
    p = SigningPool(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin(), workers=1)
    yield p
    p.close()


@pytest.fixture
def integrity(pool: SigningPool) -> StateAuthenticator:
    return StateAuthenticator(lambda messages: pool.hmac_many(KEY_ID, messages))


def _fact(key_id: str = "hot-1", version: int = 1, state: str = "enabled") -> Fact:
    return Fact(
        "keys", (key_id,), version, (("public_key", b"\x04" * 65), ("state", state), ("n", 7))
    )


def _failures(table: str) -> float:
    return metrics.STATE_INTEGRITY_FAILURES.labels(table)._value.get()


def test_state_key_is_a_sensitive_never_extractable_secret(dev_env: DevEnv) -> None:
    token = Pkcs11Token(SOFTHSM_LIBRARY, "custos-dev", dev_env.pin())
    key = token._find(ObjectClass.SECRET_KEY, KEY_ID.encode())
    assert key is not None, "custos init creates the state key"
    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.NEVER_EXTRACTABLE] is True
    assert key[Attribute.TOKEN] is True
    with pytest.raises(pkcs11.PKCS11Error):
        key[Attribute.VALUE]
    with pytest.raises(KeyExists):
        token.create_hmac_key(KEY_ID)  # never replaced by a second set-up


def test_tags_are_hmac_sha256_in_the_token_and_batched(pool: SigningPool) -> None:
    tags = pool.hmac_many(KEY_ID, [b"a", b"b", b"a"])
    assert [len(t) for t in tags] == [32, 32, 32]
    assert tags[0] == tags[2] != tags[1]
    assert pool.hmac_many(KEY_ID, []) == []
    with pytest.raises(KeyNotFound):
        pool.hmac_many("_no_such_state_key", [b"a"])


def test_verify_accepts_own_tags_and_caches_them(integrity: StateAuthenticator) -> None:
    facts = [_fact("a"), _fact("b"), _fact("c")]
    tags = integrity.tags(facts)
    calls = integrity.hsm_calls
    integrity.verify(list(zip(facts, tags, strict=True)))
    assert integrity.hsm_calls == calls, "tags made here are cached as verified"
    fresh = StateAuthenticator(integrity._mac_many)
    fresh.verify(list(zip(facts, tags, strict=True)))
    assert fresh.hsm_calls == 1, "three unknown rows cost one HSM round trip"
    fresh.verify(list(zip(facts, tags, strict=True)))
    assert fresh.hsm_calls == 1, "a hot row costs no HSM call the second time"


@pytest.mark.parametrize(
    ("changed", "what"),
    [
        (_fact(state="disabled"), "a field altered"),
        (_fact("hot-2"), "the row moved to another id"),
        (_fact(version=2), "another version"),
        (Fact("policy_versions", ("hot-1",), 1, _fact().fields), "another table"),
        (Fact("keys", ("hot-1",), 1, (*_fact().fields, ("extra", None))), "a field added"),
    ],
)
def test_a_tag_does_not_fit_any_other_row(
    integrity: StateAuthenticator, changed: Fact, what: str
) -> None:
    tag = integrity.tag(_fact())
    before = _failures(changed.table)
    with pytest.raises(TamperedState) as caught:
        integrity.check(changed, tag)
    assert caught.value.table == changed.table, what
    assert "integrity check" in str(caught.value)
    assert _failures(changed.table) == before + 1


def test_missing_or_forged_tags_are_refused(integrity: StateAuthenticator) -> None:
    fact = _fact("forged")
    for stored in (None, b"", b"\x00" * 32, hmac.new(b"guess", fact.encode(), "sha256").digest()):
        with pytest.raises(TamperedState, match="keys row 'forged'"):
            integrity.check(fact, stored)


def test_a_cached_row_with_another_tag_is_checked_again(integrity: StateAuthenticator) -> None:
    fact = _fact("cached")
    integrity.tag(fact)
    with pytest.raises(TamperedState):
        integrity.check(fact, b"\x01" * 32)


def test_older_versions_are_refused_once_a_newer_one_was_seen(
    integrity: StateAuthenticator,
) -> None:
    v1, v2 = _fact("replay", 1), _fact("replay", 2, state="disabled")
    t1, t2 = integrity.tags([v1, v2])
    integrity.check(v1, t1)  # authentic, and nothing newer seen yet
    integrity.check(v2, t2)
    with pytest.raises(TamperedState, match="older than version 2"):
        integrity.check(v1, t1)
    integrity.raise_floor("keys", ("other",), 5)
    with pytest.raises(TamperedState, match="older than version 5"):
        integrity.check(_fact("other", 4), integrity.tag(_fact("other", 4)))


def test_the_alarm_hears_every_failure(pool: SigningPool) -> None:
    heard: list[TamperedState] = []
    integrity = StateAuthenticator(lambda m: pool.hmac_many(KEY_ID, m), alarm=heard.append)
    with pytest.raises(TamperedState):
        integrity.verify([(_fact("x"), None), (_fact("y"), None)])
    assert [exc.key for exc in heard] == [("x",), ("y",)]


def test_encoding_is_unambiguous() -> None:
    pairs = [
        (Fact("t", ("ab", "c"), 1, ()), Fact("t", ("a", "bc"), 1, ())),
        (Fact("t", ("1",), 1, ()), Fact("t", (1,), 1, ())),
        (Fact("t", (b"x",), 1, ()), Fact("t", ("x",), 1, ())),
        (Fact("t", (True,), 1, ()), Fact("t", (1,), 1, ())),
        (Fact("t", (None,), 1, ()), Fact("t", ("",), 1, ())),
        (Fact("t", ("k",), 1, (("a", "b"),)), Fact("t", ("k", "a"), 1, (("b", None),))),
        (Fact("t", ("k",), 12, ()), Fact("t", ("k",), 1, (("2", None),))),
    ]
    for one, other in pairs:
        assert one.encode() != other.encode(), (one, other)


def test_key_check_pins_the_key(pool: SigningPool) -> None:
    check = key_check_value(lambda m: pool.hmac_many(KEY_ID, m))
    assert check == pool.hmac_many(KEY_ID, [KEY_CHECK_MESSAGE])[0].hex()
    assert check != hashlib.sha256(KEY_CHECK_MESSAGE).hexdigest()

    def mac_for(key_id: str):  # type: ignore[no-untyped-def]
        return lambda m: pool.hmac_many(key_id, m)

    open_authenticator(mac_for, KEY_ID, check, lambda _e: None)
    with pytest.raises(ConfigError, match="not the one the config pins"):
        open_authenticator(mac_for, KEY_ID, "0" * 64, lambda _e: None)
    with pytest.raises(ConfigError, match="no state-authentication key '_missing'"):
        open_authenticator(mac_for, "_missing", check, lambda _e: None)
    with pytest.raises(ConfigError, match=r"integrity\.key_check: not set"):
        open_authenticator(mac_for, KEY_ID, None, lambda _e: None)


def _serve_fails(env: DevEnv, tmp: Path, extra: str) -> str:
    config = tmp / "custos.toml"
    text = env.config_path.read_text()
    text = text[: text.index("\n[integrity]")] + extra
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_serve_refuses_a_missing_unpinned_or_different_state_key(
    own_server: object, tmp_path: Path
) -> None:
    env = own_server.env  # type: ignore[attr-defined]
    check = env.config().integrity.key_check
    assert check is not None, "custos init pins the key"
    err = _serve_fails(env, tmp_path, f'\n[integrity]\nkey_id = "_gone"\nkey_check = "{check}"\n')
    assert "no state-authentication key '_gone'" in err
    assert "custos integrity init-key" in err
    assert "integrity.key_check: not set" in _serve_fails(env, tmp_path, "\n")
    err = _serve_fails(env, tmp_path, f'\n[integrity]\nkey_check = "{"ab" * 32}"\n')
    assert "not the one the config pins" in err


def test_init_key_is_idempotent_and_prints_the_pinned_check(dev_env: DevEnv) -> None:
    command = ["integrity", "init-key", "--config", str(dev_env.config_path)]
    result = subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "already in the token" in result.stdout
    assert f'key_check = "{dev_env.config().integrity.key_check}"' in result.stdout


def _cli(env: DevEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *args, "--config", str(env.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_store_from_before_is_refused_until_sealed_once(own_server: ServerProcess) -> None:
    server = own_server
    server.start()
    key = keys_pb2_grpc.KeysStub(server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="upgraded", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    server.stop()
    # What the migration leaves: every row without a tag.
    db = sqlite3.connect(server.env.dir / "custos.db", isolation_level=None)
    for table in ("keys", "policy_versions", "pending", "totp"):
        db.execute(f"UPDATE {table} SET mac = NULL")  # noqa: S608
    db.close()

    server.start()
    health = health_pb2_grpc.HealthStub(server.channel("auditor"))
    assert health.Check(health_pb2.HealthCheckRequest()).status == NOT_SERVING
    signer = signer_pb2_grpc.SignerStub(server.channel("payments"))
    with pytest.raises(grpc.RpcError) as caught:
        signer.SignBatch(pb.SignBatchRequest(request_id="up-1", items=[builders.evm_item(key)]))
    assert caught.value.code() is grpc.StatusCode.DATA_LOSS
    server.stop()

    sealed = _cli(server.env, "integrity", "seal")
    assert sealed.returncode == 0, sealed.stderr
    assert "sealed 1 row(s) of keys: upgraded" in sealed.stdout
    assert "sealed 1 row(s) of policy_versions: 1" in sealed.stdout
    again = _cli(server.env, "integrity", "seal")
    assert again.returncode == 2
    assert "already holds authenticated rows" in again.stderr

    server.start()  # on another port: new stubs
    health = health_pb2_grpc.HealthStub(server.channel("auditor"))
    signer = signer_pb2_grpc.SignerStub(server.channel("payments"))
    assert health.Check(health_pb2.HealthCheckRequest()).status == SERVING
    response = signer.SignBatch(
        pb.SignBatchRequest(request_id="up-2", items=[builders.evm_item(key)])
    )
    assert evm_sender(response.items[0].raw_tx) == response.items[0].address
    assert any(
        AuditRecord.decode(data).event.kind == "state.sealed" for data in server.verified_log()
    )


def test_the_signing_hot_path_costs_no_hsm_round_trip_for_its_key(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8's benchmark budget: key lookups per SignBatch hit the verified-row cache."""
    key = server.create_key(f"hot-{uuid.uuid4().hex[:8]}")
    integrity = server.server.integrity  # type: ignore[attr-defined]
    stub = server.signer()

    def sign() -> None:
        request = pb.SignBatchRequest(request_id=uuid.uuid4().hex, items=[builders.evm_item(key)])
        signed = stub.SignBatch(request).items[0]
        assert evm_sender(signed.raw_tx) == signed.address

    sign()
    tagged: list[bytes] = []
    mac_many = integrity._mac_many

    def spy(messages: list[bytes]) -> list[bytes]:
        tagged.extend(messages)
        return mac_many(messages)  # type: ignore[no-any-return]

    monkeypatch.setattr(integrity, "_mac_many", spy)
    for _ in range(20):
        sign()
    # The server's background work (approval sweep, health probes) may check other
    # rows meanwhile; not one HSM round trip is for this key's record.
    assert not [m for m in tagged if key.key_id.encode() in m]


def test_a_read_that_began_before_the_newer_version_was_seen_is_stale_not_replayed(
    integrity: StateAuthenticator,
) -> None:
    v1, v2 = _fact("race", 1), _fact("race", 2, state="disabled")
    t1, t2 = integrity.tags([v1, v2])
    since = integrity.epoch()  # a reader starts; v1 is what it will read
    integrity.check(v2, t2)  # meanwhile another thread reads the committed v2
    integrity.check(v1, t1, since)  # the first reader's row is merely stale
    with pytest.raises(TamperedState, match="older than version 2"):
        integrity.check(v1, t1, integrity.epoch())  # a read begun after v2 was seen
    with pytest.raises(TamperedState, match="older than version 2"):
        integrity.check(v1, t1)  # a read under a lock is current
