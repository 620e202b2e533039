"""HD wallets through the real server: created only by an officer quorum, deposit addresses
served, equal to what bip-utils derives from the exported account key; bad input and a
database writer's seed swap refused; the seed never in the store or the audit log."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from bip_utils import (
    Bip44,
    Bip44Changes,
    Bip44Coins,
    Bip49,
    Bip49Coins,
    Bip84,
    Bip84Coins,
)
from eth_account import Account

from custos.hsm.bip32 import master_key
from custos.hsm.import_material import (
    import_key_fingerprint,
    wallet_from_mnemonic,
    wrap_seed_for_import,
)
from custos.proto.custos.v1 import keys_pb2, policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.edge.config import IdentityConfig
from custos.signer.tools.devsetup import subject_string
from custos.signer.usecases.wallets import SEAL_KEY_ID, seed_aad
from tests import builders
from tests.conftest import DevEnv, RunningServer, server_with_policy
from tests.second_impl import evm_sender, tron_signer, verify_bitcoin
from tests.support import enroll_totp
from tests.totp import TotpCodes

pytestmark = pytest.mark.integration

POLICY = f"""
version: 1
governance:
  officers: ["{subject_string("officer")}", "{subject_string("officer2")}"]
  approvals_required: 1
  activation_delay: 0s
ceremonies:
  create_wallet: 1
  import_key_init: 0  # the import key the import tests encrypt to (CreateImportKey alone)
identity_groups:
  approvers: ["{subject_string("approver")}", "{subject_string("approver2")}"]
rules:
  - id: hot-account-7-held
    match:
      wallet_accounts: [{{wallet: hot-1, account: 7}}]
    action: require_approval
    approval: {{approvals: 1, group: approvers, totp: false}}
  - id: no-hot-account-9
    match:
      wallet_accounts: [{{wallet: hot-1, account: 9}}]
    action: deny
  - id: allow-all
    match: {{}}
    action: allow
limits:
  - id: hot-2-twice
    window: 1h
    scope: {{wallets: [hot-2]}}
    max_count: 2
"""
CREATE_WALLET = keys_pb2.CEREMONY_KIND_CREATE_WALLET


class Wallets:
    """Two officers on one server, the second approving with fresh TOTP codes."""

    def __init__(self, server: RunningServer, directory: Path) -> None:
        self.server = server
        self.db = directory / "custos.db"
        self.officer = server.keys("officer")
        self.uris = {name: enroll_totp(server.channel, name) for name in ("officer", "officer2")}
        self.codes = TotpCodes(self.uris)

    def code(self, name: str = "officer2") -> str:
        """A fresh code of `name` (each is accepted once)."""
        return self.codes.code(name)

    def create(self, wallet_id: str, label: str = "") -> keys_pb2.KeyCeremony:
        proposed = self.officer.ProposeKeyCeremony(
            keys_pb2.ProposeKeyCeremonyRequest(kind=CREATE_WALLET, wallet_id=wallet_id, label=label)
        )
        return self.server.keys("officer2").ApproveKeyCeremony(
            keys_pb2.ApproveKeyCeremonyRequest(
                ceremony_id=proposed.ceremony_id, digest=proposed.digest, totp_code=self.code()
            )
        )

    def derive(
        self, identity: str = "officer", **fields: object
    ) -> keys_pb2.DeriveAddressesResponse:
        account = {k: fields.pop(k) for k in list(fields) if k in _ACCOUNT_FIELDS}
        return self.server.keys(identity).DeriveAddresses(
            keys_pb2.DeriveAddressesRequest(account=keys_pb2.WalletAccount(**account), **fields)
        )

    def account_key(self, identity: str = "officer", **fields: object) -> keys_pb2.AccountKey:
        return self.server.keys(identity).GetAccountKey(keys_pb2.WalletAccount(**fields))  # type: ignore[arg-type]

    def audit(self) -> list[tuple[str, dict[str, object]]]:
        store = self.server.server.store  # type: ignore[attr-defined]
        return [(r.event.kind, dict(r.event.fields)) for r in store.audit_records(0, 10**6)]


_ACCOUNT_FIELDS = ("wallet_id", "chain", "network", "account", "purpose")


def refused(call: Callable[[], object], code: grpc.StatusCode, words: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert words in (info.value.details() or ""), info.value.details()


@pytest.fixture(scope="module")
def wallets(dev_env: DevEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wallets]:
    directory = tmp_path_factory.mktemp("wallets")
    identities = [
        IdentityConfig(subject=i.subject, roles=i.roles, keys=i.keys, wallets=["hot-*"])
        if i.subject == subject_string("payments")
        else i
        for i in dev_env.config().identities
    ]
    with server_with_policy(dev_env, directory, POLICY, identities=identities) as server:
        yield Wallets(server, directory)


@pytest.fixture(scope="module")
def hot(wallets: Wallets) -> str:
    assert wallets.create("hot-1", "Hot wallet 1").state == "executed"
    return "hot-1"


@pytest.fixture(scope="module")
def others(wallets: Wallets, hot: str) -> tuple[str, str]:
    """A second wallet the service is granted, and one it is not."""
    assert wallets.create("hot-2").state == "executed"
    assert wallets.create("cold-1").state == "executed"
    return "hot-2", "cold-1"


def test_a_lone_officer_cannot_create_a_wallet(wallets: Wallets) -> None:
    proposed = wallets.officer.ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(kind=CREATE_WALLET, wallet_id="hot-alone")
    )
    assert (proposed.state, proposed.approvals_required) == ("open", 1)
    assert (proposed.wallet_id, proposed.label) == ("hot-alone", "hot-alone")
    # The proposer's own approval does not count, even with a valid code.
    refused(
        lambda: wallets.officer.ApproveKeyCeremony(
            keys_pb2.ApproveKeyCeremonyRequest(
                ceremony_id=proposed.ceremony_id,
                digest=proposed.digest,
                totp_code=wallets.code("officer"),
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "own",
    )
    refused(
        lambda: wallets.officer.GetWallet(keys_pb2.GetWalletRequest(wallet_id="hot-alone")),
        grpc.StatusCode.NOT_FOUND,
        "not found",
    )


def test_created_wallet_is_shown_and_audited_by_name_only(wallets: Wallets, hot: str) -> None:
    wallet = wallets.officer.GetWallet(keys_pb2.GetWalletRequest(wallet_id=hot))
    assert (wallet.label, wallet.origin, wallet.state) == (
        "Hot wallet 1",
        keys_pb2.KEY_ORIGIN_GENERATED,
        "enabled",
    )
    assert wallet.created_by == subject_string("officer")
    listed = wallets.server.keys("payments").ListWallets(keys_pb2.ListWalletsRequest())
    assert hot in [w.wallet_id for w in listed.wallets]
    created = [fields for kind, fields in wallets.audit() if kind == "wallet.created"]
    assert len(created) == 1
    assert created[0]["wallet_id"] == hot
    assert created[0]["origin"] == "generated"
    assert created[0]["ceremony_id"]
    # An existing id is refused at the proposal.
    refused(
        lambda: wallets.officer.ProposeKeyCeremony(
            keys_pb2.ProposeKeyCeremonyRequest(kind=CREATE_WALLET, wallet_id=hot)
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "already exists",
    )


def _bip_utils_addresses(exported: str, cls: type, coin: object, change: int, n: int) -> list[str]:
    account = cls.FromExtendedKey(exported, coin)  # type: ignore[attr-defined]
    branch = account.Change(Bip44Changes.CHAIN_INT if change else Bip44Changes.CHAIN_EXT)
    return [branch.AddressIndex(i).PublicKey().ToAddress() for i in range(n)]


@pytest.mark.parametrize(
    ("chain", "network", "purpose", "prefix", "cls", "coin", "change"),
    [
        ("ethereum", "sepolia", 0, "xpub", Bip44, Bip44Coins.ETHEREUM, 0),
        ("tron", "nile", 0, "xpub", Bip44, Bip44Coins.TRON, 0),
        ("bitcoin", "mainnet", 84, "zpub", Bip84, Bip84Coins.BITCOIN, 0),
        ("bitcoin", "testnet", 84, "vpub", Bip84, Bip84Coins.BITCOIN_TESTNET, 1),
        ("bitcoin", "testnet", 49, "upub", Bip49, Bip49Coins.BITCOIN_TESTNET, 0),
        ("bitcoin", "mainnet", 44, "xpub", Bip44, Bip44Coins.BITCOIN, 0),
    ],
)
def test_derived_addresses_equal_bip_utils_from_the_exported_account_key(
    wallets: Wallets,
    hot: str,
    chain: str,
    network: str,
    purpose: int,
    prefix: str,
    cls: type,
    coin: object,
    change: int,
) -> None:
    where = {"wallet_id": hot, "chain": chain, "network": network, "account": 2, "purpose": purpose}
    exported = wallets.account_key(**where)
    assert exported.extended_public_key.startswith(prefix)
    # A service granted the wallet derives the same addresses as an officer.
    derived = wallets.derive("payments", **where, change=change, index=0, count=5)
    assert derived.account_path == exported.account_path
    expected = _bip_utils_addresses(exported.extended_public_key, cls, coin, change, 5)
    assert [a.address for a in derived.addresses] == expected
    assert [a.path for a in derived.addresses] == [
        f"{exported.account_path}/{change}/{i}" for i in range(5)
    ]
    # A later window continues the same sequence.
    window = wallets.derive(**where, change=change, index=3, count=2)
    assert [a.address for a in window.addresses] == expected[3:]


def test_accounts_and_wallets_differ(wallets: Wallets, hot: str, others: tuple[str, str]) -> None:
    eth = {"chain": "ethereum", "network": "mainnet"}
    first = wallets.derive(wallet_id=hot, account=0, **eth).addresses[0].address
    other_account = wallets.derive(wallet_id=hot, account=1, **eth).addresses[0].address
    other_wallet = wallets.derive(wallet_id="hot-2", account=0, **eth).addresses[0].address
    assert len({first, other_account, other_wallet}) == 3


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ({"account": 5000}, grpc.StatusCode.INVALID_ARGUMENT, "account"),
        ({"count": 1001}, grpc.StatusCode.INVALID_ARGUMENT, "count"),
        ({"change": 1}, grpc.StatusCode.INVALID_ARGUMENT, "change"),
        ({"index": 2**31 - 1, "count": 2}, grpc.StatusCode.INVALID_ARGUMENT, "index"),
        ({"purpose": 84}, grpc.StatusCode.INVALID_ARGUMENT, "purpose"),
        ({"chain": "dogecoin"}, grpc.StatusCode.INVALID_ARGUMENT, "chain"),
        ({"wallet_id": "Bad Id"}, grpc.StatusCode.INVALID_ARGUMENT, "wallet_id"),
        ({"wallet_id": "hot-missing"}, grpc.StatusCode.NOT_FOUND, "not found"),
    ],
)
def test_bad_derivations_are_refused_naming_the_field(
    wallets: Wallets, hot: str, fields: dict[str, object], code: grpc.StatusCode, words: str
) -> None:
    request: dict[str, object] = {"wallet_id": hot, "chain": "ethereum", "network": "mainnet"}
    request.update(fields)
    refused(lambda: wallets.derive(**request), code, words)


def test_bitcoin_network_is_checked(wallets: Wallets, hot: str) -> None:
    refused(
        lambda: wallets.account_key(wallet_id=hot, chain="bitcoin", network="moon"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "network",
    )


def test_a_service_sees_only_wallets_it_is_granted(
    wallets: Wallets, hot: str, others: tuple[str, str]
) -> None:
    payments = wallets.server.keys("payments")
    listed = payments.ListWallets(keys_pb2.ListWalletsRequest())
    assert "cold-1" not in [w.wallet_id for w in listed.wallets]
    for call in (
        lambda: payments.GetWallet(keys_pb2.GetWalletRequest(wallet_id="cold-1")),
        lambda: wallets.derive("payments", wallet_id="cold-1", chain="tron", network="nile"),
        lambda: wallets.derive("limited", wallet_id=hot, chain="tron", network="nile"),
    ):
        refused(call, grpc.StatusCode.NOT_FOUND, "not found")


def test_the_seed_is_never_in_the_store_or_the_audit_log(wallets: Wallets, hot: str) -> None:
    _assert_no_seed(wallets, hot)


def _assert_no_seed(wallets: Wallets, hot: str, logged: str = "") -> None:
    pool = wallets.server.server.pool  # type: ignore[attr-defined]
    store = wallets.server.server.store  # type: ignore[attr-defined]
    record = store.get_wallet(hot)
    seed = pool.unseal(SEAL_KEY_ID, record.sealed_seed, seed_aad(hot))
    assert len(seed) == 64  # the BIP39 seed, unsealed here only to look for it
    master = master_key(seed)
    with sqlite3.connect(wallets.db) as db:
        db.execute("PRAGMA wal_checkpoint(FULL)")
    data = b"".join(p.read_bytes() for p in wallets.db.parent.glob(wallets.db.name + "*"))
    text = json.dumps(wallets.audit())
    for secret in (seed, master.key, seed[:32]):
        for form in (secret, secret.hex().encode(), secret.hex().upper().encode()):
            assert form not in data
            assert form.decode("latin-1") not in text
            assert form.decode("latin-1") not in logged
    assert record.sealed_seed.hex() not in text


def _derived(wallets: Wallets, wallet_id: str, **where: object) -> keys_pb2.DerivedAddress:
    change, index = where.pop("change", 0), where.pop("index", 0)
    reply = wallets.derive(wallet_id=wallet_id, change=change, index=index, **where)
    return reply.addresses[0]


def _hd_item(item: pb.SignItem, wallet_id: str, **ref: int) -> pb.SignItem:
    item.ClearField("key_id")
    item.hd.CopyFrom(pb.HdKeyRef(wallet_id=wallet_id, **ref))
    return item


def _sign(wallets: Wallets, request_id: str, *items: pb.SignItem) -> pb.SignBatchResponse:
    return wallets.server.signer("payments").SignBatch(
        pb.SignBatchRequest(request_id=request_id, items=items)
    )


def test_a_derived_key_signs_evm_and_tron_verified_by_second_implementations(
    wallets: Wallets, hot: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    eth = _derived(wallets, hot, chain="ethereum", network="sepolia", account=1, index=3)
    tron = _derived(wallets, hot, chain="tron", network="nile", index=4)
    as_key = keys_pb2.Key(key_id="unused")
    evm_item = _hd_item(builders.evm_item(as_key), hot, account=1, index=3)
    bsc_item = _hd_item(builders.evm_item(as_key, chain_id=97, nonce=1), hot, account=1, index=3)
    tron_item = _hd_item(builders.tron_item(as_key), hot, index=4)
    response = _sign(wallets, "hd-evm-tron", evm_item, bsc_item, tron_item)
    assert response.status == pb.BATCH_STATUS_SIGNED
    signed_eth, signed_bsc, signed_tron = response.items
    # eth-account recovers the sender: the address `derive` gave for that path.
    assert evm_sender(signed_eth.raw_tx) == eth.address
    assert evm_sender(signed_bsc.raw_tx) == eth.address  # BSC shares Ethereum's coin type
    assert signed_eth.key_id == f"{hot}/{eth.path}"
    assert (signed_eth.address, signed_tron.address) == (eth.address, tron.address)
    assert tron_signer(signed_tron.raw_tx) == tron.address
    authorized = [f for k, f in wallets.audit() if k == "sign.authorized"][-1]
    assert [i["key_id"] for i in authorized["items"]] == [  # type: ignore[index]
        f"{hot}/{eth.path}",
        f"{hot}/{eth.path}",
        f"{hot}/{tron.path}",
    ]
    _assert_no_seed(wallets, hot, caplog.text)


def test_a_derived_key_spends_a_p2wpkh_output_verified_by_bitcointx(
    wallets: Wallets, hot: str
) -> None:
    btc = _derived(wallets, hot, chain="bitcoin", network="testnet", change=1, index=2)
    assert btc.path == "m/84'/1'/0'/1/2"
    as_key = keys_pb2.Key(
        key_id="unused",
        public_key=btc.public_key,
        addresses=[
            keys_pb2.Address(chain="bitcoin", network="testnet", kind="p2wpkh", address=btc.address)
        ],
    )
    item = _hd_item(builders.bitcoin_item(as_key, script_types=("p2wpkh",)), hot, change=1, index=2)
    (signed,) = _sign(wallets, "hd-btc", item).items
    assert signed.address == btc.address
    verify_bitcoin(signed.raw_tx, builders.bitcoin_prevouts(item.bitcoin))
    # The same spend named by another index's key: that key holds nothing in it.
    other = _hd_item(
        builders.bitcoin_item(as_key, script_types=("p2wpkh",)), hot, change=1, index=3
    )
    refused(
        lambda: _sign(wallets, "hd-btc-other", other),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].bitcoin.inputs[0]",
    )


@pytest.mark.parametrize(
    ("wallet_id", "ref", "code", "words"),
    [
        ("hot-1", {"account": 5000}, grpc.StatusCode.INVALID_ARGUMENT, "items[0].hd.account"),
        ("hot-1", {"change": 1}, grpc.StatusCode.INVALID_ARGUMENT, "items[0].hd.change"),
        ("hot-1", {"index": 2**31}, grpc.StatusCode.INVALID_ARGUMENT, "items[0].hd.index"),
        ("hot-1", {"purpose": 49}, grpc.StatusCode.INVALID_ARGUMENT, "items[0].hd.purpose"),
        ("Hot 1", {}, grpc.StatusCode.INVALID_ARGUMENT, "items[0].hd.wallet_id"),
        ("hot-nope", {}, grpc.StatusCode.NOT_FOUND, "items[0].hd.wallet_id"),
        ("cold-1", {}, grpc.StatusCode.PERMISSION_DENIED, "items[0].hd.wallet_id"),
    ],
)
def test_bad_wallet_keys_sign_nothing(
    wallets: Wallets,
    others: tuple[str, str],
    wallet_id: str,
    ref: dict[str, int],
    code: grpc.StatusCode,
    words: str,
) -> None:
    item = _hd_item(builders.evm_item(keys_pb2.Key(key_id="unused")), wallet_id, **ref)
    request_id = f"hd-bad-{abs(hash((wallet_id, tuple(ref.items()))))}"
    refused(lambda: _sign(wallets, request_id, item), code, words)
    assert request_id not in json.dumps([f for k, f in wallets.audit() if k == "sign.signed"])


def test_policy_rules_and_limits_name_wallets_and_accounts(
    wallets: Wallets, hot: str, others: tuple[str, str]
) -> None:
    def item(wallet_id: str, nonce: int, **ref: int) -> pb.SignItem:
        return _hd_item(builders.evm_item(keys_pb2.Key(), nonce=nonce), wallet_id, **ref)

    refused(
        lambda: _sign(wallets, "hd-policy-9", item(hot, 0, account=9)),
        grpc.StatusCode.PERMISSION_DENIED,
        "no-hot-account-9",
    )
    assert _sign(wallets, "hd-policy-8", item(hot, 0, account=8)).status == pb.BATCH_STATUS_SIGNED
    # hot-2's limit counts transactions of all its addresses together.
    for nonce, index in enumerate((0, 5)):
        signed = _sign(wallets, f"hd-limit-{nonce}", item("hot-2", nonce, index=index))
        assert signed.status == pb.BATCH_STATUS_SIGNED
    refused(
        lambda: _sign(wallets, "hd-limit-2", item("hot-2", 2, index=7)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "hot-2-twice",
    )
    # Another wallet's keys are not counted there.
    assert _sign(wallets, "hd-limit-hot", item(hot, 1, index=7)).status == pb.BATCH_STATUS_SIGNED


def test_a_held_wallet_item_shows_its_derived_key_to_approvers_and_signs_once_approved(
    wallets: Wallets, hot: str
) -> None:
    eth = _derived(wallets, hot, chain="ethereum", network="sepolia", account=7, index=1)
    item = _hd_item(builders.evm_item(keys_pb2.Key(), nonce=4), hot, account=7, index=1)
    held = _sign(wallets, "hd-held", item)
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    approvals = policy_pb2_grpc.ApprovalsStub(wallets.server.channel("approver"))
    shown = approvals.GetPending(policy_pb2.GetPendingRequest(approval_id=held.approval_id))
    (pending,) = shown.items
    assert not pending.error, pending.error
    assert (pending.key_id, pending.from_address) == (f"{hot}/{eth.path}", eth.address)
    approvals.Approve(
        policy_pb2.DecideRequest(approval_id=held.approval_id, request_digest=shown.request_digest)
    )
    done = wallets.server.signer("payments").GetBatch(pb.GetBatchRequest(request_id="hd-held"))
    assert done.status == pb.BATCH_STATUS_SIGNED
    assert evm_sender(done.items[0].raw_tx) == eth.address


def test_a_key_id_and_a_wallet_key_together_are_refused(wallets: Wallets, hot: str) -> None:
    item = _hd_item(builders.evm_item(keys_pb2.Key()), hot)
    item.key_id = "some-key"
    refused(
        lambda: _sign(wallets, "hd-both", item), grpc.StatusCode.INVALID_ARGUMENT, "items[0].hd"
    )


def test_a_sealed_seed_swapped_between_wallets_is_refused(
    wallets: Wallets, others: tuple[str, str]
) -> None:
    eth = {"chain": "ethereum", "network": "mainnet"}
    before = wallets.derive(wallet_id="hot-2", **eth).addresses[0].address
    swap = "UPDATE wallets SET sealed_seed = ? WHERE wallet_id = 'hot-2'"
    with sqlite3.connect(wallets.db) as db:
        (seed_a,) = db.execute(
            "SELECT sealed_seed FROM wallets WHERE wallet_id = 'hot-2'"
        ).fetchone()
        (seed_b,) = db.execute(
            "SELECT sealed_seed FROM wallets WHERE wallet_id = 'cold-1'"
        ).fetchone()
        db.execute(swap, (seed_b,))
    for call in (
        lambda: wallets.derive(wallet_id="hot-2", account=1, **eth),
        lambda: wallets.officer.GetWallet(keys_pb2.GetWalletRequest(wallet_id="hot-2")),
        lambda: wallets.officer.ListWallets(keys_pb2.ListWalletsRequest()),
        lambda: _sign(
            wallets, "hd-swapped", _hd_item(builders.evm_item(keys_pb2.Key()), "hot-2", index=9)
        ),
    ):
        refused(call, grpc.StatusCode.DATA_LOSS, "wallets")
    assert "hd-swapped" not in json.dumps(
        [f for k, f in wallets.audit() if k in ("sign.authorized", "sign.signed")]
    )
    with sqlite3.connect(wallets.db) as db:
        db.execute(swap, (seed_a,))
        # A copy of a genuine row under another id: its tag is bound to the id.
        columns = "label, seal_key_id, sealed_seed, origin, state, created_by, created_at_ms"
        db.execute(
            f"INSERT INTO wallets (wallet_id, {columns}, version, mac)"  # noqa: S608
            f" SELECT 'hot-forged', {columns}, version, mac FROM wallets"
            " WHERE wallet_id = 'hot-2'"
        )
    refused(
        lambda: wallets.derive(wallet_id="hot-forged", **eth),
        grpc.StatusCode.DATA_LOSS,
        "wallets",
    )
    with sqlite3.connect(wallets.db) as db:
        db.execute("DELETE FROM wallets WHERE wallet_id = 'hot-forged'")
    # Put back, the row verifies again and derives what it did before.
    assert wallets.derive(wallet_id="hot-2", **eth).addresses[0].address == before


def _custos(
    wallets: Wallets, tmp_path: Path, name: str, *args: str, stdin: str = "", code: int = 0
) -> str:
    """A `custos` command as `name` runs it; its standard output (it must succeed)."""
    env = wallets.server.env
    text = (env.dir / "clients" / f"{name}.toml").read_text()
    profile = tmp_path / f"{name}.toml"
    port = wallets.server.port
    profile.write_text(text.replace('endpoint = "127.0.0.1:0"', f'endpoint = "127.0.0.1:{port}"'))
    done = subprocess.run(
        [sys.executable, "-m", "custos.signer.tools.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUSTOS_CLIENT": str(profile)},
        check=False,
    )
    assert done.returncode == code, done.stderr
    return done.stdout if code == 0 else done.stderr


def test_cli_creates_a_wallet_and_derives_what_its_xpub_derives(
    wallets: Wallets, tmp_path: Path
) -> None:
    proposed = json.loads(
        _custos(
            wallets,
            tmp_path,
            "officer",
            "keys",
            "propose-create-wallet",
            "hot-cli",
            "--label",
            "CLI wallet",
            "-o",
            "json",
        )
    )
    # The approver's client recomputes the digest from the fields shown before approving.
    approved = json.loads(
        _custos(
            wallets,
            tmp_path,
            "officer2",
            "keys",
            "approve",
            proposed["ceremony_id"],
            "--digest",
            proposed["digest"],
            "--code",
            wallets.code(),
            "-o",
            "json",
        )
    )
    assert approved["state"] == "executed"
    assert "hot-cli" in _custos(wallets, tmp_path, "payments", "wallets", "list")
    where = ["hot-cli", "--chain", "bitcoin", "--network", "testnet", "--account", "1"]
    xpub = json.loads(
        _custos(wallets, tmp_path, "payments", "wallets", "xpub", *where, "-o", "json")
    )
    assert xpub["account_path"] == "m/84'/1'/1'"
    derived = json.loads(
        _custos(
            wallets,
            tmp_path,
            "payments",
            "wallets",
            "derive",
            *where,
            "--index",
            "0",
            "--count",
            "3",
            "-o",
            "json",
        )
    )
    expected = _bip_utils_addresses(
        xpub["extended_public_key"], Bip84, Bip84Coins.BITCOIN_TESTNET, 0, 3
    )
    assert [a["address"] for a in derived["addresses"]] == expected
    legacy = _custos(
        wallets, tmp_path, "officer", "wallets", "derive", *where, "--purpose", "44", "--index", "7"
    )
    assert "m/44'/1'/1'/0/7" in legacy


VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "bip84_bip49.json").read_text())
PASSPHRASE = "TREZOR"  # the second wallet's BIP39 passphrase (eth-account's check)


@pytest.fixture(scope="module")
def import_key(wallets: Wallets) -> keys_pb2.ImportWrappingKey:
    """The token's import key (the token is shared: another test module may have made it)."""
    try:
        return wallets.officer.GetImportKey(keys_pb2.GetImportKeyRequest())
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:  # anything but "none yet"
            raise
    return wallets.officer.CreateImportKey(keys_pb2.CreateImportKeyRequest())


def _approve(wallets: Wallets, tmp_path: Path, proposed: dict[str, str]) -> dict[str, str]:
    """officer2 approves through the CLI, which recomputes the digest first."""
    out = _custos(
        wallets,
        tmp_path,
        "officer2",
        "keys",
        "approve",
        proposed["ceremony_id"],
        "--digest",
        proposed["digest"],
        "--code",
        wallets.code(),
        "-o",
        "json",
    )
    return json.loads(out)  # type: ignore[no-any-return]


def test_an_imported_mnemonic_serves_the_bip84_vector_and_eth_accounts_addresses(
    wallets: Wallets, tmp_path: Path, import_key: keys_pb2.ImportWrappingKey
) -> None:
    bip84 = VECTORS["bip84"]
    fingerprint = import_key_fingerprint(import_key.public_key_der)
    args = ("keys", "propose-import-wallet", "hot-imported", "--fingerprint", fingerprint)
    proposed = json.loads(
        _custos(wallets, tmp_path, "officer", *args, "-o", "json", stdin=bip84["mnemonic"] + "\n")
    )
    assert proposed["state"] == "open"
    assert proposed["imported_wallet"]["import_key_fingerprint"] == fingerprint
    assert _approve(wallets, tmp_path, proposed)["state"] == "executed"
    shown = wallets.officer.GetWallet(keys_pb2.GetWalletRequest(wallet_id="hot-imported"))
    assert shown.origin == keys_pb2.KEY_ORIGIN_IMPORTED
    # BIP84's published account key and addresses.
    where = {"wallet_id": "hot-imported", "chain": "bitcoin", "network": "mainnet"}
    assert wallets.account_key(**where).extended_public_key == bip84["account_xpub"]
    receive = wallets.derive(**where, index=0, count=2).addresses
    change = wallets.derive(**where, change=1, index=0).addresses
    assert [(a.path, a.public_key, a.address) for a in [*receive, *change]] == [
        (v["path"], v["pubkey"], v["address"]) for v in bip84["addresses"]
    ]
    # eth-account from the same mnemonic: the first addresses of account 0.
    Account.enable_unaudited_hdwallet_features()
    eth = wallets.derive(wallet_id="hot-imported", chain="ethereum", index=0, count=3).addresses
    assert [a.address for a in eth] == [
        Account.from_mnemonic(bip84["mnemonic"], account_path=f"m/44'/60'/0'/0/{i}").address
        for i in range(3)
    ]
    imported = [f for k, f in wallets.audit() if k == "wallet.imported"]
    assert imported[-1]["wallet_id"] == "hot-imported"
    assert imported[-1]["origin"] == "imported"


def test_an_imported_wallet_with_a_passphrase_signs_as_eth_account_derives(
    wallets: Wallets, import_key: keys_pb2.ImportWrappingKey
) -> None:
    mnemonic = VECTORS["bip84"]["mnemonic"]
    seed = wallet_from_mnemonic(mnemonic, PASSPHRASE)
    proposed = wallets.officer.ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(
            kind=keys_pb2.CEREMONY_KIND_IMPORT_WALLET,
            wallet_id="hot-passphrase",
            imported_wallet=keys_pb2.ImportedWallet(
                wrapped_seed=wrap_seed_for_import(seed, import_key.public_key_der),
                master_public_key=seed.master_public_key,
                import_key_fingerprint=import_key_fingerprint(import_key.public_key_der),
            ),
        )
    )
    done = wallets.server.keys("officer2").ApproveKeyCeremony(
        keys_pb2.ApproveKeyCeremonyRequest(
            ceremony_id=proposed.ceremony_id, digest=proposed.digest, totp_code=wallets.code()
        )
    )
    assert done.state == "executed", done.outcome
    Account.enable_unaudited_hdwallet_features()
    expected = Account.from_mnemonic(
        mnemonic, passphrase=PASSPHRASE, account_path="m/44'/60'/2'/0/4"
    ).address
    item = _hd_item(builders.evm_item(keys_pb2.Key()), "hot-passphrase", account=2, index=4)
    (signed,) = _sign(wallets, "hd-imported", item).items
    assert evm_sender(signed.raw_tx) == expected
    _assert_no_seed(wallets, "hot-passphrase")


@pytest.mark.parametrize("problem", ["other_seed", "damaged", "fingerprint", "short"])
def test_a_bad_wallet_import_is_refused_at_the_proposal_leaving_nothing(
    wallets: Wallets, import_key: keys_pb2.ImportWrappingKey, problem: str
) -> None:
    mnemonic = VECTORS["bip84"]["mnemonic"]
    seed = wallet_from_mnemonic(mnemonic)
    other = wallet_from_mnemonic(mnemonic, "other")
    wrapped = wrap_seed_for_import(
        other if problem == "other_seed" else seed, import_key.public_key_der
    )
    fingerprint = import_key_fingerprint(import_key.public_key_der)
    if problem == "damaged":
        wrapped = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    if problem == "fingerprint":
        fingerprint = "0000:" + fingerprint[5:]
    if problem == "short":
        wrapped = wrapped[:100]
    code, words = {
        "other_seed": (grpc.StatusCode.FAILED_PRECONDITION, "imported_wallet.master_public_key"),
        "damaged": (grpc.StatusCode.FAILED_PRECONDITION, "imported_wallet.wrapped_seed"),
        "fingerprint": (
            grpc.StatusCode.FAILED_PRECONDITION,
            "imported_wallet.import_key_fingerprint",
        ),
        "short": (grpc.StatusCode.INVALID_ARGUMENT, "imported_wallet.wrapped_seed"),
    }[problem]
    wallet_id = f"hot-bad-{problem.replace('_', '-')}"
    refused(
        lambda: wallets.officer.ProposeKeyCeremony(
            keys_pb2.ProposeKeyCeremonyRequest(
                kind=keys_pb2.CEREMONY_KIND_IMPORT_WALLET,
                wallet_id=wallet_id,
                imported_wallet=keys_pb2.ImportedWallet(
                    wrapped_seed=wrapped,
                    master_public_key=seed.master_public_key,
                    import_key_fingerprint=fingerprint,
                ),
            )
        ),
        code,
        words,
    )
    listed = wallets.officer.ListKeyCeremonies(keys_pb2.ListKeyCeremoniesRequest()).ceremonies
    assert wallet_id not in [c.wallet_id for c in listed]
    assert wallets.server.server.store.get_wallet(wallet_id) is None  # type: ignore[attr-defined]


def test_a_bad_mnemonic_is_refused_by_the_cli_sending_nothing(
    wallets: Wallets, tmp_path: Path, import_key: keys_pb2.ImportWrappingKey
) -> None:
    words = VECTORS["bip84"]["mnemonic"].replace("about", "abandon")  # bad checksum
    fingerprint = import_key_fingerprint(import_key.public_key_der)
    err = _custos(
        wallets,
        tmp_path,
        "officer",
        "keys",
        "propose-import-wallet",
        "hot-typo",
        "--fingerprint",
        fingerprint,
        stdin=words + "\n",
        code=2,
    )
    assert "checksum" in err
    assert "abandon" not in err
    listed = wallets.officer.ListKeyCeremonies(keys_pb2.ListKeyCeremoniesRequest()).ceremonies
    assert "hot-typo" not in [c.wallet_id for c in listed]
