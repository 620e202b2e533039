"""Policy governance through the real server, and `custos policy test` offline."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pyotp
import pytest

from custos.proto.custos.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import subject_string
from tests import builders
from tests.conftest import DevEnv, ServerProcess
from tests.support import enroll_totp

pytestmark = pytest.mark.integration

ETH = 10**18


def test_a_new_version_needs_another_officers_totp_approval(own_server: ServerProcess) -> None:
    own_server.start()
    officer = policy_pb2_grpc.PoliciesStub(own_server.channel("officer"))
    officer2 = policy_pb2_grpc.PoliciesStub(own_server.channel("officer2"))
    uris = {name: enroll_totp(own_server.channel, name) for name in ("officer", "officer2")}
    active = officer.GetPolicy(policy_pb2.GetPolicyRequest())
    assert (active.version, active.state) == (1, "active")
    text = active.document_yaml.replace("version: 1", "version: 2").replace(
        'amount: {min: "1000000000000000000"}', 'amount: {min: "3000000000000000000"}'
    )
    proposed = officer.ProposePolicy(policy_pb2.ProposePolicyRequest(document_yaml=text))
    assert (proposed.version, proposed.state) == (2, "proposed")

    key = keys_pb2_grpc.KeysStub(own_server.channel("officer")).CreateKey(
        keys_pb2.CreateKeyRequest(key_id="gov-key", network_class=keys_pb2.NETWORK_CLASS_TESTNET)
    )
    signer = signer_pb2_grpc.SignerStub(own_server.channel("payments"))

    def two_eth(request_id: str) -> pb.SignBatchResponse:
        item = builders.evm_item(key, chain_id=11155111, value=str(2 * ETH))
        return signer.SignBatch(pb.SignBatchRequest(request_id=request_id, items=[item]))

    # Proposed is not active: 2 ETH still waits for approvers.
    assert two_eth("before").status == pb.BATCH_STATUS_PENDING_APPROVAL

    now = int(time.time())
    code = pyotp.parse_uri(uris["officer"]).at(now)
    with pytest.raises(grpc.RpcError) as info:  # the proposer cannot approve their own proposal
        officer.ApprovePolicy(
            policy_pb2.ApprovePolicyRequest(version=2, hash=proposed.hash, totp_code=code)
        )
    assert "own_proposal" in info.value.details()
    code2 = pyotp.parse_uri(uris["officer2"]).at(now)
    with pytest.raises(grpc.RpcError) as info:  # bound to the hash the officer reviewed
        officer2.ApprovePolicy(
            policy_pb2.ApprovePolicyRequest(version=2, hash="0" * 64, totp_code=code2)
        )
    assert "hash" in info.value.details()
    code2 = pyotp.parse_uri(uris["officer2"]).at(now + 30)
    approved = officer2.ApprovePolicy(
        policy_pb2.ApprovePolicyRequest(version=2, hash=proposed.hash, totp_code=code2)
    )
    assert approved.state == "active"  # activation delay 0s in the dev policy
    assert list(approved.approved_by) == [subject_string("officer2")]
    assert two_eth("after").status == pb.BATCH_STATUS_SIGNED
    history = officer.ListPolicies(policy_pb2.ListPoliciesRequest()).versions
    assert [(v.version, v.state) for v in history] == [(1, "superseded"), (2, "active")]


def test_policy_test_command_prints_each_decision(dev_env: DevEnv, tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    payments = subject_string("payments")
    cases.write_text(
        f"""
- name: small sepolia payment
  caller: "{payments}"
  items:
    - key_id: hot-1
      evm: {{chain_id: 11155111, type: EVM_TX_TYPE_EIP1559, nonce: 0, to: "{builders.EVM_DEST}",
            value: "1000", gas_limit: 21000, max_fee_per_gas: "1", max_priority_fee_per_gas: "1"}}
- name: large sepolia payment
  caller: "{payments}"
  items:
    - key_id: hot-1
      evm: {{chain_id: 11155111, type: EVM_TX_TYPE_EIP1559, nonce: 0, to: "{builders.EVM_DEST}",
            value: "5000000000000000000", gas_limit: 21000, max_fee_per_gas: "1",
            max_priority_fee_per_gas: "1"}}
- name: malformed
  caller: "{payments}"
  items:
    - key_id: hot-1
      evm: {{chain_id: 424242}}
"""
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "custos.signer.tools.cli",
            "policy",
            "test",
            str(dev_env.dir / "policy.yaml"),
            str(cases),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "small sepolia payment: ALLOW (development-default)"
    assert lines[1] == (
        "large sepolia payment: REQUIRE APPROVAL (large-sepolia-payments): 2 of approvers with TOTP"
    )
    assert lines[2].startswith("malformed: INVALID: items[0].evm.chain_id")
