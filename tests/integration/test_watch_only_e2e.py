"""Watch-only wallets through a real server: a policy that pays only cold wallet X.

The cold wallet is an account-level vpub Custos holds no key for; the addresses
paid are derived from it by bip-utils (a second BIP32/BIP84 implementation),
and every signed transaction is verified by python-bitcointx.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from bip_utils import Bip39SeedGenerator, Bip44, Bip44Changes, Bip44Coins, Bip84, Bip84Coins
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes

from custos.hsm.bip32 import master_key, parse_extended_public_key
from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.tools.devsetup import subject_string
from tests import builders
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.second_impl import evm_sender, verify_bitcoin
from tests.support import refused, sign_batch

pytestmark = pytest.mark.integration

GAP = 100


def _account(mnemonic: str) -> Bip84:
    seed = Bip39SeedGenerator(mnemonic).Generate()
    return Bip84.FromSeed(seed, Bip84Coins.BITCOIN_TESTNET).Purpose().Coin().Account(0)


COLD = _account("legal winner thank year wave sausage worth useful legal winner thank yellow")
OTHER = _account("letter advice cage absurd amount doctor acoustic avoid letter advice cage above")
STRANGER = _account(" ".join(["abandon"] * 11 + ["about"]))  # in no policy
COLD_VPUB = COLD.PublicKey().ToExtended()
EVM_COLD = (
    Bip44.FromSeed(
        Bip39SeedGenerator(" ".join(["zoo"] * 11 + ["wrong"])).Generate(), Bip44Coins.ETHEREUM
    )
    .Purpose()
    .Coin()
    .Account(0)
)
# Another custodian's wallet, as the output descriptor of its receive branch only.
OTHER_TPUB = parse_extended_public_key(OTHER.PublicKey().ToExtended())[0].serialize("tpub")
OTHER_DESCRIPTOR = f"wpkh([0badf00d/84'/1'/0']{OTHER_TPUB}/0/*)"


def _address(account: Bip84, change: Bip44Changes, index: int) -> str:
    return str(account.Change(change).AddressIndex(index).PublicKey().ToAddress())


POLICY = f"""\
version: 1
description: watch-only destinations
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:
  create_key: 0
address_book:
  cooling_off: 0s
watch_only:
  cold-1:
    chain: bitcoin
    network: testnet
    xpub: {COLD_VPUB}
    script: p2wpkh
    gap_limit: {GAP}
    label: cold storage
  custodian-2:
    chain: bitcoin
    network: testnet
    descriptor: "{OTHER_DESCRIPTOR}"
    gap_limit: 10
  eth-cold:
    chain: ethereum
    network: sepolia
    xpub: {EVM_COLD.PublicKey().ToExtended()}
    gap_limit: 20
rules:
  - id: to-eth-cold
    match: {{chains: [ethereum], destinations: {{watch_only: [eth-cold]}}}}
    action: allow
  - id: to-cold-storage
    match: {{chains: [bitcoin], destinations: {{watch_only: [cold-1]}}}}
    action: allow
  - id: to-custodian
    match: {{chains: [bitcoin], destinations: {{watch_only: [custodian-2]}}}}
    action: allow
"""


@pytest.fixture(scope="module")
def cold_server(
    dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with server_with_policy(dev_env, tmp_path_factory.mktemp("watch-only"), POLICY) as running:
        yield running


@pytest.fixture
def key(cold_server: RunningServer) -> keys_pb2.Key:
    return cold_server.create_key(f"wo-{uuid.uuid4().hex[:10]}")


def _paying(key: keys_pb2.Key, destination: str, seed: str) -> pb.SignItem:
    item = builders.bitcoin_item(key, seed=f"{seed}-{key.key_id}")
    item.bitcoin.outputs[0].address = destination
    return item


def _signed(server: RunningServer, item: pb.SignItem) -> None:
    response = sign_batch(server, item)
    assert response.status == pb.BATCH_STATUS_SIGNED
    signed = response.items[0]
    assert verify_bitcoin(signed.raw_tx, builders.bitcoin_prevouts(item.bitcoin)) == signed.tx_id


def test_the_57th_receive_address_and_a_change_address_of_cold_wallet_x_are_paid(
    cold_server: RunningServer, key: keys_pb2.Key
) -> None:
    _signed(cold_server, _paying(key, _address(COLD, Bip44Changes.CHAIN_EXT, 56), "r56"))
    # Change sent to the cold wallet (its internal branch) is the wallet's too.
    _signed(cold_server, _paying(key, _address(COLD, Bip44Changes.CHAIN_INT, 3), "c3"))
    _signed(cold_server, _paying(key, _address(COLD, Bip44Changes.CHAIN_EXT, GAP - 1), "last"))


def test_a_wallet_given_by_descriptor_is_paid_on_its_branch(
    cold_server: RunningServer, key: keys_pb2.Key
) -> None:
    _signed(cold_server, _paying(key, _address(OTHER, Bip44Changes.CHAIN_EXT, 9), "d9"))


@pytest.mark.parametrize(
    ("account", "change", "index"),
    [
        (COLD, Bip44Changes.CHAIN_EXT, GAP),  # one past the gap limit
        (COLD, Bip44Changes.CHAIN_INT, GAP + 10),
        (STRANGER, Bip44Changes.CHAIN_EXT, 0),  # another xpub
        (STRANGER, Bip44Changes.CHAIN_EXT, 56),
        (OTHER, Bip44Changes.CHAIN_INT, 0),  # a branch its descriptor leaves out
        (OTHER, Bip44Changes.CHAIN_EXT, 10),  # past its gap limit
    ],
)
def test_addresses_past_the_gap_limit_or_of_another_wallet_are_denied(
    cold_server: RunningServer,
    key: keys_pb2.Key,
    account: Bip84,
    change: Bip44Changes,
    index: int,
) -> None:
    item = _paying(key, _address(account, change, index), f"deny-{index}")
    code, _, meta = refused(cold_server, item)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert meta["code"] == "no_rule_matched"


def test_the_wallet_is_paid_on_its_own_network_only(
    cold_server: RunningServer, key: keys_pb2.Key
) -> None:
    # Signet spells the 57th address as testnet does, but the wallet is testnet's.
    item = builders.bitcoin_item(key, seed=f"signet-{key.key_id}", network="signet")
    item.bitcoin.outputs[0].address = _address(COLD, Bip44Changes.CHAIN_EXT, 56)
    code, _, meta = refused(cold_server, item)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert meta["code"] == "no_rule_matched"


def test_an_ethereum_cold_wallet_is_paid_up_to_its_gap_limit(
    cold_server: RunningServer, key: keys_pb2.Key
) -> None:
    node = EVM_COLD.Change(Bip44Changes.CHAIN_EXT)
    last, past = (str(node.AddressIndex(i).PublicKey().ToAddress()) for i in (19, 20))
    item = builders.evm_item(key, to=last)
    response = sign_batch(cold_server, item)
    assert response.status == pb.BATCH_STATUS_SIGNED
    raw = response.items[0].raw_tx
    assert evm_sender(raw) == builders.address(key, "ethereum", "sepolia")
    assert (
        "0x" + bytes(TypedTransaction.from_bytes(HexBytes(raw)).as_dict()["to"]).hex()
        == last.lower()
    )
    code, _, meta = refused(cold_server, builders.evm_item(key, to=past, nonce=1))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert meta["code"] == "no_rule_matched"


def test_a_proposal_with_a_private_key_is_refused_naming_the_field_and_not_stored(
    cold_server: RunningServer,
) -> None:
    officer = policy_pb2_grpc.PoliciesStub(cold_server.channel("officer"))
    xprv = master_key(bytes(range(32))).derive("m/84'/1'/0'").serialize("vpub")
    text = POLICY.replace("version: 1", "version: 2").replace(COLD_VPUB, xprv)
    with pytest.raises(grpc.RpcError) as info:
        officer.ProposePolicy(policy_pb2.ProposePolicyRequest(document_yaml=text))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert "watch_only.cold-1.xpub: an extended private key was given" in details
    assert xprv[4:] not in details
    # Nothing half-made: the active version is still 1 and no version 2 was stored.
    assert officer.GetPolicy(policy_pb2.GetPolicyRequest()).version == 1
    with pytest.raises(grpc.RpcError) as missing:
        officer.GetPolicy(policy_pb2.GetPolicyRequest(version=2))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
