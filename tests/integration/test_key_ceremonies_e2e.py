"""Key ceremonies through the real server: one officer alone never creates, disables,
enables or retires a key; M others approve with TOTP codes bound to the proposal's digest;
the quorum executes it exactly once; tampered proposal rows are refused."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pyotp
import pytest

from custos.policies import ceremonies
from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc, signer_pb2
from custos.signer.edge.config import IdentityConfig
from custos.signer.tools.devsetup import DevCa, subject_string, write_client_profile
from tests import builders
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.second_impl import evm_sender
from tests.support import enroll_totp
from tests.totp import TotpCodes

pytestmark = pytest.mark.integration

OFFICERS = ("officer", "officer2", "officer3")
POLICY = f"""
version: 1
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}",
             "{subject_string("officer3")}"]
  approvals_required: 2
  activation_delay: 0s
ceremonies:
  create_key: 2
  disable_key: 1
  enable_key: 2
  retire_key: 2
rules:
  - id: allow-all
    match: {{}}
    action: allow
"""
CREATE = keys_pb2.CEREMONY_KIND_CREATE_KEY
DISABLE = keys_pb2.CEREMONY_KIND_DISABLE_KEY
ENABLE = keys_pb2.CEREMONY_KIND_ENABLE_KEY
RETIRE = keys_pb2.CEREMONY_KIND_RETIRE_KEY


@pytest.fixture(scope="module")
def third_officer(dev_env: DevEnv) -> IdentityConfig:
    """A third officer's certificate and client profile, from the dev CA."""
    ca = DevCa(dev_env.dir / "pki")
    cert, key = ca.issue("officer3", server=False)
    write_client_profile(dev_env.dir / "clients" / "officer3.toml", "", ca.cert_path, cert, key)
    return IdentityConfig(subject=subject_string("officer3"), roles=["officer"])


class Officers:
    """The officers' stubs and TOTP codes on one server (each code is used once)."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.stubs = {name: server.keys(name) for name in OFFICERS}
        self.uris = {name: enroll_totp(server.channel, name) for name in OFFICERS}
        self.secrets = [pyotp.parse_uri(uri).secret for uri in self.uris.values()]
        self.used_codes: list[str] = []
        self.codes = TotpCodes(self.uris)

    def code(self, name: str) -> str:
        code = self.codes.code(name)
        self.used_codes.append(code)
        return code

    def propose(
        self,
        name: str,
        kind: keys_pb2.CeremonyKind,
        key_id: str,
        network_class: keys_pb2.NetworkClass = keys_pb2.NETWORK_CLASS_UNSPECIFIED,
    ) -> keys_pb2.KeyCeremony:
        return self.stubs[name].ProposeKeyCeremony(
            keys_pb2.ProposeKeyCeremonyRequest(
                kind=kind, key_id=key_id, network_class=network_class
            )
        )

    def approve(self, name: str, ceremony_id: str, digest: str) -> keys_pb2.KeyCeremony:
        return self.stubs[name].ApproveKeyCeremony(
            keys_pb2.ApproveKeyCeremonyRequest(
                ceremony_id=ceremony_id, digest=digest, totp_code=self.code(name)
            )
        )

    def refused(self, call: Callable[[], object], code: grpc.StatusCode, words: str) -> None:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == code, info.value.details()
        assert words in info.value.details()

    def audit(self) -> list[tuple[str, str, dict[str, object]]]:
        store = self.server.server.store  # type: ignore[attr-defined]
        return [
            (r.event.kind, r.event.actor, dict(r.event.fields))
            for r in store.audit_records(0, 10**6)
        ]


@pytest.fixture
def officers(dev_env: DevEnv, tmp_path: Path, third_officer: IdentityConfig) -> Iterator[Officers]:
    identities = [*dev_env.config().identities, third_officer]
    with server_with_policy(dev_env, tmp_path, POLICY, identities=identities) as server:
        yield Officers(server)


def _recomputed(message: keys_pb2.KeyCeremony, kind: str, params: dict[str, str]) -> str:
    """The digest from the fields shown, by the published encoding (what a client checks)."""
    return ceremonies.digest(
        message.ceremony_id,
        kind,
        tuple(sorted(params.items())),
        message.proposed_by,
        datetime.fromtimestamp(message.proposed_at_unix_ms / 1000, UTC),
        datetime.fromtimestamp(message.expires_at_unix_ms / 1000, UTC),
        message.approvals_required,
        message.policy_version,
    )


def _sign(
    server: RunningServer, key: keys_pb2.Key, request_id: str
) -> signer_pb2.SignBatchResponse:
    item = builders.evm_item(key, chain_id=11155111)
    return server.signer().SignBatch(
        signer_pb2.SignBatchRequest(request_id=request_id, items=[item])
    )


def _create(o: Officers, key_id: str, by: tuple[str, str, str] = OFFICERS) -> keys_pb2.Key:
    """A key made by a ceremony `by[0]` proposes and the other two approve."""
    proposed = o.propose(by[0], CREATE, key_id, keys_pb2.NETWORK_CLASS_TESTNET)
    o.approve(by[1], proposed.ceremony_id, proposed.digest)
    assert o.approve(by[2], proposed.ceremony_id, proposed.digest).state == "executed"
    return o.stubs["officer"].GetKey(keys_pb2.GetKeyRequest(key_id=key_id))


def test_creating_a_key_needs_two_other_officers_and_happens_once(officers: Officers) -> None:
    o = officers
    officer = o.stubs["officer"]
    # The single-officer RPC is refused where the policy asks for a quorum.
    o.refused(
        lambda: o.server.create_key("alone"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "propose-create",
    )
    proposed = o.propose("officer", CREATE, "cer-key", keys_pb2.NETWORK_CLASS_TESTNET)
    assert (proposed.state, proposed.approvals_required) == ("open", 2)
    assert proposed.proposed_by == subject_string("officer")
    params = {"key_id": "cer-key", "network_class": "testnet"}
    assert _recomputed(proposed, ceremonies.CREATE_KEY, params) == proposed.digest
    other = o.propose("officer3", CREATE, "other-key", keys_pb2.NETWORK_CLASS_MAINNET)
    assert other.digest != proposed.digest
    cid, digest = proposed.ceremony_id, proposed.digest

    # The proposer's own approval does not count.
    o.refused(lambda: o.approve("officer", cid, digest), grpc.StatusCode.FAILED_PRECONDITION, "own")
    # A valid code given with another proposal's digest approves nothing.
    o.refused(
        lambda: o.approve("officer2", cid, other.digest),
        grpc.StatusCode.FAILED_PRECONDITION,
        "hash_mismatch",
    )
    # An approval without a (valid) code is refused before anything is counted.
    o.refused(
        lambda: o.stubs["officer2"].ApproveKeyCeremony(
            keys_pb2.ApproveKeyCeremonyRequest(ceremony_id=cid, digest=digest, totp_code="000000")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "TOTP",
    )
    once = o.approve("officer2", cid, digest)
    assert (once.state, list(once.approved_by)) == ("open", [subject_string("officer2")])
    # The same officer twice counts once.
    o.refused(
        lambda: o.approve("officer2", cid, digest),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already_approved",
    )
    o.refused(
        lambda: officer.GetKey(keys_pb2.GetKeyRequest(key_id="cer-key")),
        grpc.StatusCode.NOT_FOUND,
        "not found",
    )

    done = o.approve("officer3", cid, digest)
    assert done.state == "executed"
    key = officer.GetKey(keys_pb2.GetKeyRequest(key_id="cer-key"))
    assert key.state == keys_pb2.KEY_STATE_ENABLED
    assert key.network_class == keys_pb2.NETWORK_CLASS_TESTNET
    # A later approval finds it closed: it never executes twice.
    o.refused(
        lambda: o.approve("officer", cid, digest), grpc.StatusCode.FAILED_PRECONDITION, "executed"
    )
    assert (
        o.stubs["officer2"].GetKeyCeremony(keys_pb2.GetKeyCeremonyRequest(ceremony_id=cid)).state
        == "executed"
    )

    signed = _sign(o.server, key, "after-create")
    assert signed.status == signer_pb2.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == signed.items[0].address

    records = o.audit()
    created = [f for kind, _a, f in records if kind == "key.created" and f["key_id"] == "cer-key"]
    assert [f["ceremony_id"] for f in created] == [cid]
    steps = [(k, a) for k, a, f in records if k.startswith("ceremony.") and f["ceremony_id"] == cid]
    assert steps == [
        ("ceremony.proposed", subject_string("officer")),
        ("ceremony.approved", subject_string("officer2")),
        ("ceremony.approved", subject_string("officer3")),
        ("ceremony.quorum_met", "system"),
        ("ceremony.executed", "system"),
    ]
    # No TOTP code or secret in any record.
    text = repr(records)
    for secret in [*o.used_codes, *o.secrets]:
        assert secret not in text


def test_disable_enable_retire_each_need_their_quorum(officers: Officers) -> None:
    o = officers
    key = _create(o, "life-key")
    key_id = key.key_id
    officer = o.stubs["officer"]
    o.refused(
        lambda: officer.DisableKey(keys_pb2.SetKeyStateRequest(key_id=key_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "propose-disable",
    )

    # Disabling needs one other officer; two approving at once execute it once.
    disable = o.propose("officer", DISABLE, key_id)
    assert (disable.state, disable.approvals_required) == ("open", 1)
    codes = {name: o.code(name) for name in ("officer2", "officer3")}
    outcomes: dict[str, object] = {}

    def approve(name: str) -> None:
        try:
            outcomes[name] = o.stubs[name].ApproveKeyCeremony(
                keys_pb2.ApproveKeyCeremonyRequest(
                    ceremony_id=disable.ceremony_id, digest=disable.digest, totp_code=codes[name]
                )
            )
        except grpc.RpcError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=approve, args=(name,)) for name in codes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    replies = [r for r in outcomes.values() if isinstance(r, keys_pb2.KeyCeremony)]
    errors = [r for r in outcomes.values() if isinstance(r, grpc.RpcError)]
    assert [r.state for r in replies] == ["executed"], outcomes
    assert ["not_open" in e.details() for e in errors] == [True], outcomes
    assert (
        officer.GetKey(keys_pb2.GetKeyRequest(key_id=key_id)).state == keys_pb2.KEY_STATE_DISABLED
    )
    o.refused(
        lambda: _sign(o.server, key, "while-disabled"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "disabled",
    )

    # Enabling needs two: one approval leaves it disabled.
    enable = o.propose("officer2", ENABLE, key_id)
    assert o.approve("officer", enable.ceremony_id, enable.digest).state == "open"
    assert (
        officer.GetKey(keys_pb2.GetKeyRequest(key_id=key_id)).state == keys_pb2.KEY_STATE_DISABLED
    )
    assert o.approve("officer3", enable.ceremony_id, enable.digest).state == "executed"
    signed = _sign(o.server, key, "after-enable")
    assert signed.status == signer_pb2.BATCH_STATUS_SIGNED
    assert evm_sender(signed.items[0].raw_tx) == signed.items[0].address

    # Retiring is final: no signature, no ceremony, no single-officer RPC brings it back.
    retire = o.propose("officer3", RETIRE, key_id)
    assert o.approve("officer", retire.ceremony_id, retire.digest).state == "open"
    assert o.approve("officer2", retire.ceremony_id, retire.digest).state == "executed"
    assert officer.GetKey(keys_pb2.GetKeyRequest(key_id=key_id)).state == keys_pb2.KEY_STATE_RETIRED
    o.refused(
        lambda: _sign(o.server, key, "after-retire"), grpc.StatusCode.FAILED_PRECONDITION, "retired"
    )
    for kind in (ENABLE, DISABLE, RETIRE):
        o.refused(
            lambda kind=kind: o.propose("officer", kind, key_id),  # type: ignore[misc]
            grpc.StatusCode.FAILED_PRECONDITION,
            "retired",
        )
    o.refused(
        lambda: officer.EnableKey(keys_pb2.SetKeyStateRequest(key_id=key_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ceremonies.enable_key",
    )
    changes = [k for k, _a, f in o.audit() if k.startswith("key.") and f.get("key_id") == key_id]
    assert changes == ["key.created", "key.disabled", "key.enabled", "key.retired"]
    listed = o.stubs["officer"].ListKeyCeremonies(keys_pb2.ListKeyCeremoniesRequest()).ceremonies
    assert [(c.kind, c.state) for c in listed] == [  # newest first
        (RETIRE, "executed"),
        (ENABLE, "executed"),
        (DISABLE, "executed"),
        (CREATE, "executed"),
    ]


def test_a_second_create_of_one_key_id_fails_audited_and_changes_nothing(
    officers: Officers,
) -> None:
    o = officers
    first = o.propose("officer", CREATE, "twice-key", keys_pb2.NETWORK_CLASS_TESTNET)
    second = o.propose("officer", CREATE, "twice-key", keys_pb2.NETWORK_CLASS_MAINNET)
    for ceremony in (first, second):
        o.approve("officer2", ceremony.ceremony_id, ceremony.digest)
    assert o.approve("officer3", first.ceremony_id, first.digest).state == "executed"
    failed = o.approve("officer3", second.ceremony_id, second.digest)
    assert failed.state == "failed"
    assert "already exists" in failed.outcome
    key = o.stubs["officer"].GetKey(keys_pb2.GetKeyRequest(key_id="twice-key"))
    assert key.network_class == keys_pb2.NETWORK_CLASS_TESTNET  # the first one's
    records = o.audit()
    assert [k for k, _a, f in records if f.get("key_id") == "twice-key" and k == "key.created"] == [
        "key.created"
    ]
    assert ("ceremony.failed", second.ceremony_id) in [
        (k, f.get("ceremony_id")) for k, _a, f in records
    ]


def test_cancelled_ceremony_never_executes(officers: Officers) -> None:
    o = officers
    proposed = o.propose("officer", CREATE, "cancel-key", keys_pb2.NETWORK_CLASS_TESTNET)
    o.approve("officer2", proposed.ceremony_id, proposed.digest)
    cancelled = o.stubs["officer3"].CancelKeyCeremony(
        keys_pb2.CancelKeyCeremonyRequest(
            ceremony_id=proposed.ceremony_id, totp_code=o.code("officer3")
        )
    )
    assert (cancelled.state, cancelled.cancelled_by) == ("cancelled", subject_string("officer3"))
    o.refused(
        lambda: o.approve("officer3", proposed.ceremony_id, proposed.digest),
        grpc.StatusCode.FAILED_PRECONDITION,
        "cancelled",
    )
    o.refused(
        lambda: o.stubs["officer"].GetKey(keys_pb2.GetKeyRequest(key_id="cancel-key")),
        grpc.StatusCode.NOT_FOUND,
        "not found",
    )
    assert "ceremony.cancelled" in [k for k, _a, _f in o.audit()]
    # The officers asked to approve learn of a proposal on their event stream.
    stream = policy_pb2_grpc.ApprovalsStub(o.server.channel("officer2")).WatchEvents(
        policy_pb2.WatchEventsRequest(after_seq=-1), timeout=30
    )
    seen = []
    for event in stream:
        seen.append((event.kind, event.key_id, event.actor))
        if event.kind == "ceremony.cancelled":
            break
    stream.cancel()
    assert ("ceremony.proposed", "cancel-key", subject_string("officer")) in seen
    assert ("ceremony.approved", "cancel-key", subject_string("officer2")) in seen


@pytest.mark.parametrize("tamper", ["approvals", "state", "key"])
def test_a_tampered_proposal_row_is_refused(
    officers: Officers, tmp_path: Path, tamper: str
) -> None:
    o = officers
    proposed = o.propose("officer", CREATE, "tampered-key", keys_pb2.NETWORK_CLASS_TESTNET)
    cid = proposed.ceremony_id
    db = sqlite3.connect(tmp_path / "custos.db")
    with db:
        if tamper == "approvals":  # forged approvals by the other two officers
            forged = (
                f'[{{"officer": "{subject_string("officer2")}", "approved_at": "2026-01-01T00:00:00+00:00"}},'
                f' {{"officer": "{subject_string("officer3")}", "approved_at": "2026-01-01T00:00:00+00:00"}}]'
            )
            db.execute(
                "UPDATE ceremonies SET record = json_set(record, '$.approvals', json(?))"
                " WHERE ceremony_id = ?",
                (forged, cid),
            )
        elif tamper == "state":  # quorum "met" without a single approval
            db.execute("UPDATE ceremonies SET state = 'approved' WHERE ceremony_id = ?", (cid,))
        else:  # the approved digest kept, another key's parameters put in
            db.execute(
                "UPDATE ceremonies SET record = replace(record, 'tampered-key', 'stolen-key')"
                " WHERE ceremony_id = ?",
                (cid,),
            )
    db.close()
    request = keys_pb2.GetKeyCeremonyRequest(ceremony_id=cid)
    o.refused(
        lambda: o.stubs["officer2"].GetKeyCeremony(request), grpc.StatusCode.DATA_LOSS, "ceremonies"
    )
    o.refused(
        lambda: o.approve("officer2", cid, proposed.digest), grpc.StatusCode.DATA_LOSS, "ceremonies"
    )
    for key_id in ("tampered-key", "stolen-key"):
        o.refused(
            lambda key_id=key_id: o.stubs["officer"].GetKey(  # type: ignore[misc]
                keys_pb2.GetKeyRequest(key_id=key_id)
            ),
            grpc.StatusCode.NOT_FOUND,
            "not found",
        )
    deadline = time.monotonic() + 30  # the alarm writes its record on its own thread
    while "state.tampered" not in [k for k, _a, _f in o.audit()]:
        assert time.monotonic() < deadline, "no state.tampered audit record"
        time.sleep(0.1)


def test_an_older_copy_of_a_ceremony_row_is_refused(officers: Officers, tmp_path: Path) -> None:
    """A replayed row (validly tagged, older revision) cannot bring an approval back to life."""
    o = officers
    key = _create(o, "replay-key", by=("officer3", "officer", "officer2"))
    disable = o.propose("officer", DISABLE, key.key_id)
    assert o.approve("officer3", disable.ceremony_id, disable.digest).state == "executed"
    enable = o.propose("officer", ENABLE, key.key_id)
    o.approve("officer2", enable.ceremony_id, enable.digest)  # one of two
    db = sqlite3.connect(tmp_path / "custos.db")
    with db:
        saved = db.execute(
            "SELECT state, record, rev, mac FROM ceremonies WHERE ceremony_id = ?",
            (enable.ceremony_id,),
        ).fetchone()
    assert o.approve("officer3", enable.ceremony_id, enable.digest).state == "executed"
    disable = o.propose("officer2", DISABLE, key.key_id)
    assert o.approve("officer", disable.ceremony_id, disable.digest).state == "executed"
    with db:  # the enable ceremony put back as it was with one approval
        db.execute(
            "UPDATE ceremonies SET state = ?, record = ?, rev = ?, mac = ? WHERE ceremony_id = ?",
            (*saved, enable.ceremony_id),
        )
    db.close()
    o.refused(
        lambda: o.approve("officer3", enable.ceremony_id, enable.digest),
        grpc.StatusCode.DATA_LOSS,
        "older than version",
    )
    state = o.stubs["officer"].GetKey(keys_pb2.GetKeyRequest(key_id=key.key_id)).state
    assert state == keys_pb2.KEY_STATE_DISABLED


def test_development_policy_lets_one_officer_act_alone(server: RunningServer) -> None:
    """Quorum 0 (the dev policy): the single-officer RPCs run as audited ceremonies."""
    key = server.create_key("dev-alone")
    officer = server.keys("officer")
    assert officer.DisableKey(keys_pb2.SetKeyStateRequest(key_id="dev-alone")).state == (
        keys_pb2.KEY_STATE_DISABLED
    )
    listed = officer.ListKeyCeremonies(keys_pb2.ListKeyCeremoniesRequest()).ceremonies
    mine = [c for c in listed if c.key_id == key.key_id]
    assert sorted((c.kind, c.state, c.approvals_required) for c in mine) == [
        (CREATE, "executed", 0),
        (DISABLE, "executed", 0),
    ]
    # Retiring still needs the other officer in the dev policy.
    retire = officer.ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(kind=RETIRE, key_id="dev-alone")
    )
    assert (retire.state, retire.approvals_required) == ("open", 1)


def test_the_cli_runs_a_ceremony_and_checks_the_digest_itself(
    officers: Officers, tmp_path: Path
) -> None:
    o = officers

    def custos(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        # The dev profile, pointed at this server.
        profile = tmp_path / f"{name}.toml"
        source = (o.server.env.dir / "clients" / f"{name}.toml").read_text()
        endpoint = f'endpoint = "127.0.0.1:{o.server.port}"'
        profile.write_text(re.sub(r'endpoint = "[^"]*"', endpoint, source))
        env = {k: v for k, v in os.environ.items() if k not in ("CUSTOS_OUTPUT", "CUSTOS_CLIENT")}
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "custos.signer.tools.cli",
                "keys",
                *args,
                "--client",
                str(profile),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    proposed = custos(
        "officer", "propose-create", "cli-cer", "--network-class", "testnet", "-o", "json"
    )
    assert proposed.returncode == 0, proposed.stderr
    shown = json.loads(proposed.stdout)
    cid, digest = shown["ceremony_id"], shown["digest"]
    assert (shown["kind"], shown["state"]) == ("CEREMONY_KIND_CREATE_KEY", "open")
    # A digest other than the ceremony's own: the client refuses before sending a code.
    wrong = custos("officer2", "approve", cid, "--digest", "ab" * 32, "--code", "123456")
    assert wrong.returncode == 1
    assert "nothing was approved" in wrong.stderr
    for name in ("officer2", "officer3"):
        approved = custos(name, "approve", cid, "--digest", digest, "--code", o.code(name))
        assert approved.returncode == 0, approved.stderr
    table = custos("officer", "show-ceremony", cid)
    assert re.search(r"^state\s+executed$", table.stdout, re.M), table.stdout
    assert re.search(r"^outcome\s+created, public key 04[0-9a-f]{128}$", table.stdout, re.M)
    listed = json.loads(custos("officer3", "list-ceremonies", "-o", "json").stdout)
    assert [(c["ceremony_id"], c["state"]) for c in listed["ceremonies"]] == [(cid, "executed")]
    keys = custos("officer", "show", "cli-cer", "-o", "json")
    assert json.loads(keys.stdout)["state"] == "KEY_STATE_ENABLED"


def test_after_a_restart_the_audit_log_still_refuses_an_older_copy(
    dev_env: DevEnv, tmp_path: Path, third_officer: IdentityConfig
) -> None:
    """The revision floors come back from the audit log: a replay needs no live witness."""
    identities = [*dev_env.config().identities, third_officer]
    with server_with_policy(dev_env, tmp_path, POLICY, identities=identities) as server:
        o = Officers(server)
        key = _create(o, "restart-key", by=("officer3", "officer", "officer2"))
        disable = o.propose("officer", DISABLE, key.key_id)
        o.approve("officer3", disable.ceremony_id, disable.digest)
        enable = o.propose("officer", ENABLE, key.key_id)
        db = sqlite3.connect(tmp_path / "custos.db")
        with db:
            saved = db.execute(
                "SELECT state, record, rev, mac FROM ceremonies WHERE ceremony_id = ?",
                (enable.ceremony_id,),
            ).fetchone()
        o.approve("officer2", enable.ceremony_id, enable.digest)
        assert o.approve("officer3", enable.ceremony_id, enable.digest).state == "executed"
        disable = o.propose("officer2", DISABLE, key.key_id)
        assert o.approve("officer", disable.ceremony_id, disable.digest).state == "executed"
    with db:  # while no server runs: the enable ceremony as freshly proposed
        db.execute(
            "UPDATE ceremonies SET state = ?, record = ?, rev = ?, mac = ? WHERE ceremony_id = ?",
            (*saved, enable.ceremony_id),
        )
    db.close()
    with server_with_policy(dev_env, tmp_path, POLICY, identities=identities) as server:
        o.server = server
        o.stubs = {name: server.keys(name) for name in OFFICERS}
        o.refused(
            lambda: o.approve("officer3", enable.ceremony_id, enable.digest),
            grpc.StatusCode.DATA_LOSS,
            "older than version",
        )
        state = o.stubs["officer"].GetKey(keys_pb2.GetKeyRequest(key_id=key.key_id)).state
        assert state == keys_pb2.KEY_STATE_DISABLED
