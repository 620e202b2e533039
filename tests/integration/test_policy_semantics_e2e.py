"""Issue 9's policy attacks, end to end: each now fails the way it should.

A real in-process server on the session's token and PKI, with its own store
and a bootstrap policy written for these tests (below): a deny list with one
Ethereum and one Bitcoin entry, a token rule capped at 1000 units, a native
rule capped at 1 ETH without any fee cap, 1 ETH of native per key and hour
and 1000 token units per key and day. Every signed transaction is checked by
a second implementation (eth-account, python-bitcointx); calldata is encoded
by eth-abi, not by the adapter under test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import eth_abi
import grpc
import pytest
from bitcointx import ChainParams
from bitcointx.core.script import CScript
from bitcointx.wallet import P2PKHCoinAddress, P2SHCoinAddress, P2WPKHCoinAddress
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes

from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import subject_string
from tests import builders
from tests import typed_data as td
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.second_impl import evm_sender, verify_bitcoin
from tests.support import refused, sign_batch

pytestmark = pytest.mark.integration

ETH = 10**18
TOKEN = "0x1c7d4b196cb0c7b01d743fbc6116a902379c7238"
OTHER_TOKEN = "0x779877a7b0d9e8603169ddbd7836e478b4624789"
VICTIM = "0x2222222222222222222222222222222222222222"
ATTACKER = "0x3333333333333333333333333333333333333333"
DENIED_ETH = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
DENIED_KEY_HASH = bytes(range(20))
SEPOLIA, BSC_TESTNET = 11155111, 97

with ChainParams("bitcoin/testnet"):
    DENIED_P2WPKH = str(P2WPKHCoinAddress.from_bytes(DENIED_KEY_HASH))
    DENIED_P2PKH = str(P2PKHCoinAddress.from_bytes(DENIED_KEY_HASH))
    DENIED_P2SH_P2WPKH = str(
        P2SHCoinAddress.from_redeemScript(CScript(b"\x00\x14" + DENIED_KEY_HASH))
    )

POLICY = f"""\
version: 1
description: issue 9 policy semantics
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:
  create_key: 0  # one officer creates the test's keys alone (development)
address_book:
  cooling_off: 0s
  groups: [sanctioned]
  entries:
    - id: denied-eth
      chain: ethereum
      network: mainnet
      address: "{DENIED_ETH}"
      groups: [sanctioned]
    - id: denied-btc
      chain: bitcoin
      network: testnet
      address: {DENIED_P2WPKH}
      groups: [sanctioned]
rules:
  - id: no-sanctioned
    match: {{destinations: {{groups: [sanctioned], mode: any}}}}
    action: deny
  - id: token-up-to-1000
    match:
      chains: [ethereum]
      assets: ["{TOKEN}"]
      contract: {{addresses: ["{TOKEN}"]}}
      amount: {{max: 1000}}
    action: allow
  - id: native-up-to-1-eth
    match:
      chains: [ethereum, bsc]
      assets: [native]
      amount: {{max: "{ETH}"}}
    action: allow
  - id: bitcoin
    match: {{chains: [bitcoin]}}
    action: allow
limits:
  - id: native-hourly
    window: 1h
    per: [key, asset]
    scope: {{chains: [ethereum, bsc], assets: [native]}}
    max_amount: "{ETH}"
  - id: token-daily
    window: 24h
    per: [key, asset]
    scope: {{assets: ["{TOKEN}"]}}
    max_amount: 1000
"""


@pytest.fixture(scope="module")
def policy_server(
    dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with server_with_policy(
        dev_env, tmp_path_factory.mktemp("policy-semantics"), POLICY
    ) as running:
        yield running


@pytest.fixture
def key(policy_server: RunningServer) -> keys_pb2.Key:
    return policy_server.create_key(f"sem-{uuid.uuid4().hex[:10]}")


def _call(
    key: keys_pb2.Key, method: str, types: list[str], args: list[object], nonce: int = 0
) -> pb.SignItem:
    selector = {
        "transfer": "a9059cbb",
        "transferFrom": "23b872dd",
        "approve": "095ea7b3",
        "mint": "40c10f19",  # mint(address,uint256): not decoded by Custos
    }[method]
    data = "0x" + selector + eth_abi.encode(types, args).hex()
    return builders.evm_item(key, chain_id=SEPOLIA, nonce=nonce, to=TOKEN, value="0", data=data)


def _check_evm(response: pb.SignBatchResponse, key: keys_pb2.Key, items: list[pb.SignItem]) -> None:
    assert response.status == pb.BATCH_STATUS_SIGNED
    assert len(response.items) == len(items)
    for signed, item in zip(response.items, items, strict=True):
        assert evm_sender(signed.raw_tx) == builders.address(key, "ethereum", "sepolia")
        fields = TypedTransaction.from_bytes(HexBytes(signed.raw_tx)).as_dict()
        assert "0x" + bytes(fields["data"]).hex() == (item.evm.data or "0x")
        assert fields["gas"] == item.evm.gas_limit


# ---- unknown means no -----------------------------------------------------------


def test_transfer_from_past_the_amount_rule_is_denied_and_within_it_is_charged(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    types = ["address", "address", "uint256"]
    # The attack: an allow-listed token, a rule with an amount maximum.
    theft = _call(key, "transferFrom", types, [VICTIM, ATTACKER, 10**12])
    code, _, meta = refused(policy_server, theft)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert meta["code"] == "no_rule_matched"
    # Within the rule it is a known amount, signed and charged to the token's limit.
    small = _call(key, "transferFrom", types, [VICTIM, ATTACKER, 600], nonce=0)
    _check_evm(sign_batch(policy_server, small), key, [small])
    again = _call(key, "transferFrom", types, [VICTIM, ATTACKER, 600], nonce=1)
    code, _, meta = refused(policy_server, again)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (meta["limit"], meta["amount"]) == ("token-daily", "400")


def test_an_undecoded_call_is_never_allowed_by_an_amount_rule(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    mint = _call(key, "mint", ["address", "uint256"], [ATTACKER, 10**30])
    code, _, meta = refused(policy_server, mint)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert meta["code"] == "no_rule_matched"


def test_an_allowance_is_charged_to_the_tokens_limit(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    approve = _call(key, "approve", ["address", "uint256"], [ATTACKER, 900])
    _check_evm(sign_batch(policy_server, approve), key, [approve])
    transfer = _call(key, "transfer", ["address", "uint256"], [ATTACKER, 200], nonce=1)
    code, _, meta = refused(policy_server, transfer)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (meta["limit"], meta["amount"]) == ("token-daily", "100")
    fits = _call(key, "transfer", ["address", "uint256"], [ATTACKER, 100], nonce=1)
    _check_evm(sign_batch(policy_server, fits), key, [fits])


# ---- amounts across assets ------------------------------------------------------


def test_a_native_cap_does_not_admit_a_trillion_token_units(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    item = builders.evm_item(
        key,
        chain_id=SEPOLIA,
        to=OTHER_TOKEN,
        value="0",
        data="0xa9059cbb" + eth_abi.encode(["address", "uint256"], [ATTACKER, 10**12]).hex(),
    )
    code, _, meta = refused(policy_server, item)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert meta["code"] == "no_rule_matched"


def test_the_server_refuses_a_rule_with_an_amount_but_no_assets(
    policy_server: RunningServer,
) -> None:
    officer = policy_pb2_grpc.PoliciesStub(policy_server.channel("officer"))
    text = POLICY.replace("version: 1", "version: 2").replace(
        "      assets: [native]\n      amount:", "      amount:"
    )
    assert text.count("amount:") == POLICY.count("amount:")
    with pytest.raises(grpc.RpcError) as info:
        officer.ProposePolicy(policy_pb2.ProposePolicyRequest(document_yaml=text))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rules[2].match: amount needs assets" in info.value.details()
    versions = officer.ListPolicies(policy_pb2.ListPoliciesRequest()).versions
    assert [v.version for v in versions] == [1]


# ---- fees count -----------------------------------------------------------------


def _eth(key: keys_pb2.Key, value: int, gas_limit: int, max_fee: int, nonce: int) -> pb.SignItem:
    item = builders.evm_item(key, chain_id=SEPOLIA, nonce=nonce, value=str(value))
    item.evm.gas_limit = gas_limit
    item.evm.max_fee_per_gas = str(max_fee)
    item.evm.max_priority_fee_per_gas = "1"
    return item


def test_a_small_payment_with_a_huge_maximum_fee_exceeds_the_native_limit(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    # 0.01 ETH with a maximum fee of 100 ETH (10^7 gas at 10^13 wei, both within
    # [limits]): the rule has no fee cap, the 1 ETH/hour limit counts the fee.
    item = _eth(key, ETH // 100, 10_000_000, 10**13, 0)
    code, _, meta = refused(policy_server, item)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (meta["limit"], meta["amount"]) == ("native-hourly", str(ETH))


def test_fees_already_signed_are_spent_budget(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    first = _eth(key, ETH // 2, 30_000, 10**13, 0)  # 0.5 ETH + at most 0.3 ETH of gas
    _check_evm(sign_batch(policy_server, first), key, [first])
    # 0.1 ETH more would fit beside 0.5 ETH; with 0.3 + 0.2 ETH of fees it does not.
    second = _eth(key, ETH // 10, 25_000, 8 * 10**12, 1)
    code, _, meta = refused(policy_server, second)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert meta["amount"] == str(ETH // 5)


# ---- accounts, not spellings ----------------------------------------------------


def test_a_denied_ethereum_address_is_denied_on_bnb_smart_chain(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    for chain_id, to in ((SEPOLIA, DENIED_ETH), (BSC_TESTNET, DENIED_ETH.lower())):
        code, _, meta = refused(policy_server, builders.evm_item(key, chain_id=chain_id, to=to))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert meta["rule"] == "no-sanctioned"
    # Another address on BSC is paid: the deny is about the account, not the chain.
    allowed = builders.evm_item(key, chain_id=BSC_TESTNET)
    response = sign_batch(policy_server, allowed)
    assert response.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(response.items[0].raw_tx) == builders.address(key, "bsc", "testnet")


def test_a_permit_to_a_denied_spender_is_refused_by_the_transaction_deny_list(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    # The policy has no message rules at all: without the deny list judging
    # messages this would be "no rule matched"; the account's deny rule decides.
    owner = builders.address(key, "ethereum", "sepolia")
    permit = td.eip2612_permit(TOKEN, owner, DENIED_ETH, 10**6, SEPOLIA)
    code, _, meta = refused(policy_server, td.typed_item(key.key_id, permit, SEPOLIA))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert meta["rule"] == "no-sanctioned"


def _bitcoin(key: keys_pb2.Key, destination: str, seed: str) -> pb.SignItem:
    item = builders.bitcoin_item(key, seed=seed)
    item.bitcoin.outputs[0].address = destination
    return item


def test_a_denied_p2wpkh_address_twins_are_denied(
    policy_server: RunningServer, key: keys_pb2.Key
) -> None:
    for n, twin in enumerate((DENIED_P2WPKH, DENIED_P2PKH, DENIED_P2SH_P2WPKH)):
        code, _, meta = refused(policy_server, _bitcoin(key, twin, f"twin-{n}-{key.key_id}"))
        assert code == grpc.StatusCode.PERMISSION_DENIED, twin
        assert meta["rule"] == "no-sanctioned", twin
    # Control: the same transaction to another key hash is signed and valid.
    item = builders.bitcoin_item(key, seed=f"ok-{key.key_id}")
    response = sign_batch(policy_server, item)
    assert response.status == pb.BATCH_STATUS_SIGNED
    prevouts = builders.bitcoin_prevouts(item.bitcoin)
    assert verify_bitcoin(response.items[0].raw_tx, prevouts) == response.items[0].tx_id
