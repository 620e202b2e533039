"""signer.usecases.wallets without an HSM: path checks naming their field, a bounded account-key
cache, and an HSM-made seed only ever stored sealed (a software stand-in for the token,
checked against bip-utils)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from bip_utils import Bip44, Bip44Changes, Bip44Coins

from custos.common.secp256k1 import RecoverableSignature
from custos.hsm.bip32 import ExtendedPublicKey, master_key
from custos.hsm.hd import HdSignRequest, SealedSeed
from custos.signer.chains.items import HdKeyRef
from custos.signer.edge.errors import InvalidRequest, NotFound
from custos.signer.store.sqlite import SqliteStore
from custos.signer.usecases import wallets
from custos.signer.usecases.wallets import WalletManager, account_path, imported_from_params
from tests.support import soft_integrity


class _SoftHsm:
    """Seals with a keyed XOR (enough to tell sealed from clear here); counts derivations."""

    def __init__(self) -> None:
        self.account_calls = 0
        self.seed = hashlib.sha512(b"unit test seed").digest()

    def _pad(self, aad: bytes) -> bytes:
        return hashlib.sha512(b"pad" + aad).digest()

    def ensure_aes_key(self, key_id: str) -> None:
        pass

    def ensure_seal_key(self, key_id: str) -> None:
        pass

    def hd_create_seed(self, seal_key_id: str, aad: bytes) -> SealedSeed:
        sealed = bytes(a ^ b for a, b in zip(self.seed, self._pad(aad), strict=True))
        return SealedSeed(seal_key_id, sealed, aad)

    def hd_account_key(
        self, seed: SealedSeed, chain: str, network: str, account_path: str
    ) -> ExtendedPublicKey:
        self.account_calls += 1
        plain = bytes(a ^ b for a, b in zip(seed.sealed, self._pad(seed.aad), strict=True))
        return master_key(plain).derive(account_path).public()

    def hd_sign(self, requests: Sequence[HdSignRequest]) -> list[RecoverableSignature]:
        raise NotImplementedError

    def hd_import_seed(
        self, import_key_id: str, wrapped: bytes, master: bytes, seal_key_id: str, aad: bytes
    ) -> SealedSeed:
        raise NotImplementedError


@pytest.fixture
def manager(tmp_path: Path) -> tuple[WalletManager, _SoftHsm, SqliteStore]:
    store = SqliteStore(str(tmp_path / "w.db"))
    hsm = _SoftHsm()
    return WalletManager(store, hsm, integrity=soft_integrity()), hsm, store


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("dogecoin", "mainnet", 0, 0), "chain"),
        (("bitcoin", "mainnet", 0, 45), "purpose"),
        (("ethereum", "mainnet", 0, 84), "purpose"),
        (("tron", "nile", 1001, 0), "account"),
        (("bitcoin", "moon", 0, 84), "network"),
    ],
)
def test_account_paths_name_the_bad_field(args: tuple[str, str, int, int], field: str) -> None:
    with pytest.raises(InvalidRequest, match=rf"^{field}: "):
        account_path(*args)


def test_account_paths_follow_the_standards() -> None:
    assert account_path("bitcoin", "testnet", 3, 0).text == "m/84'/1'/3'"
    assert account_path("bitcoin", "mainnet", 0, 49).key_version == "ypub"
    assert account_path("bsc", "testnet", 2, 0).text == "m/44'/60'/2'"
    assert account_path("tron", "mainnet", 0, 44).text == "m/44'/195'/0'"


def test_a_created_wallet_derives_what_bip_utils_derives_and_stores_no_seed(
    manager: tuple[WalletManager, _SoftHsm, SqliteStore], tmp_path: Path
) -> None:
    wm, hsm, store = manager
    record, event = wm.new_wallet("w1", "One", "officer", {"ceremony_id": "cer-1"})
    assert hsm.seed not in record.sealed_seed
    assert event.fields["wallet_id"] == "w1"
    assert hsm.seed.hex() not in repr(event.fields)
    assert hsm.seed.hex() not in repr(record)
    store.append_audit([event])
    store._write(lambda tx: wallets_insert(tx, record))
    path = account_path("ethereum", "mainnet", 0)
    derived = wm.derive("w1", path, change=0, start=0, count=3)
    expected = Bip44.FromSeed(hsm.seed, Bip44Coins.ETHEREUM).Purpose().Coin().Account(0)
    branch = expected.Change(Bip44Changes.CHAIN_EXT)
    assert [d.address for d in derived] == [
        branch.AddressIndex(i).PublicKey().ToAddress() for i in range(3)
    ]
    key = wm.derived_key(wm.get("w1"), HdKeyRef("w1", 0, 0, 2, 0), "ethereum", "mainnet")
    assert key.key_id == "w1/m/44'/60'/0'/0/2"
    assert key.public_key == master_key(hsm.seed).derive(key.path.text).public().uncompressed()
    with pytest.raises(InvalidRequest, match=r"^change: "):
        wm.derived_key(wm.get("w1"), HdKeyRef("w1", 0, 1, 0, 0), "ethereum", "mainnet")
    with pytest.raises(InvalidRequest, match=r"^index: "):
        wm.derive("w1", path, change=0, start=2**31 - 2, count=3)
    with pytest.raises(NotFound):
        wm.get("w2")
    data = b"".join(p.read_bytes() for p in tmp_path.glob("w.db*"))
    assert hsm.seed not in data
    assert hsm.seed.hex().encode() not in data


def wallets_insert(tx: object, record: object) -> None:
    from custos.signer.store.wallet_tables import insert_wallet

    assert insert_wallet(tx, record)  # type: ignore[arg-type]


def test_the_account_key_cache_is_bounded(
    manager: tuple[WalletManager, _SoftHsm, SqliteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    wm, hsm, _store = manager
    monkeypatch.setattr(wallets, "ACCOUNT_CACHE_ENTRIES", 3)
    record, _ = wm.new_wallet("w1", "One", "officer", {})
    paths = [account_path("ethereum", "mainnet", a) for a in range(5)]
    for path in paths:
        wm.account_key(record, path)
    assert hsm.account_calls == 5
    wm.account_key(record, paths[4])  # recent: cached
    assert hsm.account_calls == 5
    wm.account_key(record, paths[0])  # the oldest went: derived again
    assert hsm.account_calls == 6


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"wrapped_seed": "not base64!"}, "imported_wallet.wrapped_seed"),
        ({"wrapped_seed": "AAAA"}, "imported_wallet.wrapped_seed"),
        ({"master_public_key": "02" + "00" * 32}, "imported_wallet.master_public_key"),
        ({"master_public_key": "zz"}, "imported_wallet.master_public_key"),
        ({"import_key_fingerprint": ""}, "imported_wallet.import_key_fingerprint"),
        ({"wallet_id": "Bad"}, "wallet_id"),
    ],
)
def test_import_parameters_name_the_bad_field(change: dict[str, str], field: str) -> None:
    params = {
        "wallet_id": "w1",
        "label": "One",
        "wrapped_seed": "A" * 512,
        "master_public_key": master_key(bytes(64)).public().key.hex(),
        "import_key_fingerprint": "ab12",
    }
    assert imported_from_params(params).wallet_id == "w1"
    with pytest.raises(InvalidRequest, match=rf"^{field}: "):
        imported_from_params({**params, **change})
