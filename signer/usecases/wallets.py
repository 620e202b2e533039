"""HD wallets in the service: created by a ceremony, deposit addresses derived, keys resolved.

A wallet's BIP39 seed is made by the HSM's random generator and stored only
sealed (hsm.hd) under the token's AES key SEAL_KEY_ID, with an AAD that names
the wallet: a sealed seed copied onto another wallet's row does not unseal. The
row itself carries an HSM tag (signer.usecases.authenticity) over every column, so a
database writer can neither forge a wallet nor swap two wallets' seeds: the
tag fails first (DATA_LOSS), and the AAD would fail next.

Addresses come from the account-level extended public key (one HSM derivation
per wallet, chain, network and account, then cached): the same code a
watch-only wallet runs on the exported key (signer.chains.hd), so an address
from `derive` and one derived outside Custos from the exported key are equal.
"""

from __future__ import annotations

import base64
import builtins
import dataclasses
import re
import threading
import time
from collections.abc import Mapping
from typing import Protocol

from coincurve import PublicKey

from custos.audit.record import AuditEvent
from custos.hsm.bip32 import HARDENED, DerivationError, ExtendedPublicKey
from custos.hsm.errors import HsmUnavailable
from custos.hsm.hd import HdKeys, HdSignRequest, SealedSeed, SeedMismatch
from custos.hsm.hd_paths import BITCOIN_NETWORKS, BITCOIN_SCHEMES, COIN_TYPES, HdPath, allowed_path
from custos.hsm.key_import import UnwrapError
from custos.signer.chains.hd import MAX_ADDRESSES_PER_CALL, DerivedAddress, derive_addresses
from custos.signer.chains.items import (
    BitcoinMessage,
    BitcoinPsbt,
    BitcoinTransaction,
    EvmPersonalMessage,
    EvmTransaction,
    EvmTypedData,
    HdKeyRef,
    Transaction,
)
from custos.signer.edge.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from custos.signer.store.base import Store
from custos.signer.store.wallet_tables import WalletRecord
from custos.signer.usecases.authenticity import Fact, StateAuthenticator

WALLET_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SEAL_KEY_ID = "_wallet_seal"
SEED_AAD_DOMAIN = b"custos/wallet-seed/v1\x00"
GENERATED, IMPORTED = "generated", "imported"
ENABLED = "enabled"
MAX_LABEL = 200
TABLE = "wallets"
ACCOUNT_CACHE_ENTRIES = 4096  # account public keys kept (one HSM derivation each to remake)


def wallet_fact(record: WalletRecord) -> Fact:
    """What a wallet row's HSM tag covers: every column, bound to its id and version."""
    return Fact(
        TABLE,
        (record.wallet_id,),
        record.version,
        (
            ("label", record.label),
            ("seal_key_id", record.seal_key_id),
            ("sealed_seed", record.sealed_seed),
            ("origin", record.origin),
            ("state", record.state),
            ("created_by", record.created_by),
            ("created_at_ms", record.created_at_ms),
        ),
    )


def seed_aad(wallet_id: str) -> bytes:
    """The AAD a wallet's seed is sealed with: it unseals on this wallet's row only."""
    return SEED_AAD_DOMAIN + wallet_id.encode()


def sealed_seed(record: WalletRecord) -> SealedSeed:
    return SealedSeed(record.seal_key_id, record.sealed_seed, seed_aad(record.wallet_id))


def check_wallet_id(wallet_id: str, field: str = "wallet_id") -> None:
    if not WALLET_ID.fullmatch(wallet_id):
        raise InvalidRequest(
            f"{field}: must match [a-z0-9][a-z0-9._-]{{0,62}} (lower-case, at most 63 chars)"
        )


def check_label(label: str) -> str:
    """A label is shown to people: printable, one line, bounded."""
    if not label or len(label) > MAX_LABEL or not label.isprintable():
        raise InvalidRequest(f"label: 1 to {MAX_LABEL} printable characters")
    return label


def account_path(chain: str, network: str, account: int, purpose: int = 0) -> HdPath:
    """The allowed account-level path for `chain` (purpose: 44, 49 or 84 on bitcoin only)."""
    if chain == "bitcoin":
        purpose = purpose or 84
        if purpose not in BITCOIN_SCHEMES:
            raise InvalidRequest(f"purpose: 44, 49 or 84 for bitcoin, not {purpose}")
        coin = 0 if network == "mainnet" else 1
    elif chain in COIN_TYPES:
        if purpose not in (0, 44):
            raise InvalidRequest(f"purpose: only 44 for {chain}")
        purpose, coin = 44, COIN_TYPES[chain]
    else:
        raise InvalidRequest(f"chain: one of bitcoin, {', '.join(COIN_TYPES)}")
    if account < 0:
        raise InvalidRequest("account: 0 or more")
    try:
        return allowed_path(chain, network, f"m/{purpose}'/{coin}'/{account}'")
    except DerivationError as exc:
        field = "network" if "network" in str(exc) else "account"
        raise InvalidRequest(f"{field}: {exc}") from None


def check_place(chain: str, change: int, last_index: int) -> None:
    """The change branch and index range of a path, checked field by field."""
    branches = (0, 1) if chain == "bitcoin" else (0,)
    if change not in branches:
        raise InvalidRequest(
            f"change: {' or '.join(map(str, branches))} on {chain} (BIP44 change branch)"
        )
    if last_index >= HARDENED:
        raise InvalidRequest(f"index: address indexes end at {HARDENED - 1} (not hardened)")


_EVM_KINDS = (EvmTransaction, EvmPersonalMessage, EvmTypedData)
_BITCOIN_KINDS = (BitcoinTransaction, BitcoinPsbt, BitcoinMessage)


def path_chain(tx: Transaction) -> tuple[str, str]:
    """The chain and network whose standard paths a wallet key for `tx` lies on.

    Every EVM chain shares Ethereum's coin type (hsm.hd_paths), so its network does
    not matter here; a Bitcoin network picks coin type 0 (mainnet) or 1.
    """
    if isinstance(tx, _EVM_KINDS):
        return "ethereum", "mainnet"
    if isinstance(tx, _BITCOIN_KINDS):
        if tx.network not in BITCOIN_NETWORKS:
            raise InvalidRequest(f"{tx.kind}.network: one of {', '.join(BITCOIN_NETWORKS)}")
        return "bitcoin", tx.network
    return "tron", tx.network


def derived_key_id(wallet_id: str, path: HdPath) -> str:
    """How a wallet's derived key is named where a key id is shown (audit, responses, policy).

    A key id never holds a slash (signer.usecases.keys.KEY_ID): no wallet key is mistaken for a key.
    """
    return f"{wallet_id}/{path.text}"


@dataclasses.dataclass(frozen=True, slots=True)
class DerivedKey:
    """A wallet's key as the pipeline signs with it: resolved from the verified row."""

    wallet_id: str
    key_id: str  # derived_key_id
    path: HdPath
    public_key: bytes  # 65-byte uncompressed, derived from the wallet's account key
    origin: str
    seed: SealedSeed

    def sign_request(self, digest: bytes) -> HdSignRequest:
        return HdSignRequest(
            self.seed, self.path.chain, self.path.network, self.path.text, digest, self.public_key
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ImportedSeed:
    """An officer's wallet import: the seed encrypted to the import key, and what names it."""

    wallet_id: str
    label: str
    wrapped_seed: bytes
    master_public_key: bytes  # compressed BIP32 master public key
    import_key_fingerprint: str


WRAPPED_SEED_BYTES = 384  # RSA-3072 (hsm.key_import.IMPORT_KEY_BITS)


def import_wallet_params(imported: ImportedSeed) -> dict[str, str]:
    """An import as ceremony parameters (strings, all non-empty): what approvers bind to."""
    return {
        "wallet_id": imported.wallet_id,
        "label": imported.label,
        "wrapped_seed": base64.b64encode(imported.wrapped_seed).decode(),
        "master_public_key": imported.master_public_key.hex(),
        "import_key_fingerprint": imported.import_key_fingerprint,
    }


def imported_from_params(params: Mapping[str, str]) -> ImportedSeed:
    """The inverse of import_wallet_params, checked; InvalidRequest names the field."""
    wallet_id = params.get("wallet_id", "")
    check_wallet_id(wallet_id)
    label = check_label(params.get("label", "") or wallet_id)
    try:
        wrapped = base64.b64decode(params.get("wrapped_seed", ""), validate=True)
    except ValueError:
        raise InvalidRequest("imported_wallet.wrapped_seed: not base64") from None
    if len(wrapped) != WRAPPED_SEED_BYTES:
        raise InvalidRequest(
            f"imported_wallet.wrapped_seed: {WRAPPED_SEED_BYTES} bytes (RSA-3072 OAEP),"
            f" not {len(wrapped)}"
        )
    try:
        master = bytes.fromhex(params.get("master_public_key", ""))
        PublicKey(master)
    except ValueError:
        master = b""
    if len(master) != 33:
        raise InvalidRequest(
            "imported_wallet.master_public_key: a compressed secp256k1 public key (33 bytes)"
        )
    fingerprint = params.get("import_key_fingerprint", "")
    if not fingerprint:
        raise InvalidRequest("imported_wallet.import_key_fingerprint: required")
    return ImportedSeed(wallet_id, label, wrapped, master, fingerprint)


class WalletHsm(HdKeys, Protocol):
    """The HSM abilities wallets use: the HD seam (hsm.hd), the seal key, seed import."""

    def ensure_seal_key(self, key_id: str) -> None: ...

    def hd_import_seed(
        self,
        import_key_id: str,
        wrapped: bytes,
        master_public_key: bytes,
        seal_key_id: str,
        aad: bytes,
    ) -> SealedSeed: ...


class WalletManager:
    """Creates wallets (for ceremonies), reads them verified, derives their public keys."""

    def __init__(self, store: Store, hsm: WalletHsm, *, integrity: StateAuthenticator) -> None:
        self._store = store
        self._hsm = hsm
        self._integrity = integrity
        self._lock = threading.Lock()
        # (wallet id, row mac, chain, network, account path) -> account key: a cache of
        # HSM derivations; the mac keys it, so a changed row never hits a stale entry.
        self._accounts: dict[tuple[str, bytes, str, str, str], ExtendedPublicKey] = {}

    # -- creation (signer.usecases.ceremonies calls these under the wallet's lock) ----------

    def new_wallet(
        self, wallet_id: str, label: str, actor: str, context: Mapping[str, str | int]
    ) -> tuple[WalletRecord, AuditEvent]:
        """A wallet with a fresh HSM-made seed: its tagged record and audit event, unstored."""
        check_wallet_id(wallet_id)
        check_label(label)
        if self._store.get_wallet(wallet_id) is not None:
            raise AlreadyExists(f"wallet {wallet_id!r} already exists")
        try:
            self._hsm.ensure_seal_key(SEAL_KEY_ID)
            sealed = self._hsm.hd_create_seed(SEAL_KEY_ID, seed_aad(wallet_id))
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not create the wallet's seed; retry later") from exc
        record = WalletRecord(
            wallet_id,
            label,
            sealed.seal_key_id,
            sealed.sealed,
            GENERATED,
            ENABLED,
            actor,
            time.time_ns() // 10**6,
        )
        record = dataclasses.replace(record, mac=self._integrity.tag(wallet_fact(record)))
        event = AuditEvent(
            "wallet.created",
            actor,
            {
                "wallet_id": wallet_id,
                "label": label,
                "origin": GENERATED,
                "seal_key_id": SEAL_KEY_ID,
                "row_version": record.version,
                **context,
            },
        )
        return record, event

    def imported_wallet(
        self,
        imported: ImportedSeed,
        import_key_id: str,
        actor: str,
        context: Mapping[str, str | int],
    ) -> tuple[WalletRecord, AuditEvent]:
        """A wallet from an officer's wrapped seed, proven to be the seed of its master
        public key inside an HSM worker: its tagged record and audit event, unstored.

        FailedPrecondition when the blob does not unwrap under the import key or is
        another seed; nothing is kept then.
        """
        if self._store.get_wallet(imported.wallet_id) is not None:
            raise AlreadyExists(f"wallet {imported.wallet_id!r} already exists")
        sealed = self._import_seed(imported, import_key_id)
        record = WalletRecord(
            imported.wallet_id,
            imported.label,
            sealed.seal_key_id,
            sealed.sealed,
            IMPORTED,
            ENABLED,
            actor,
            time.time_ns() // 10**6,
        )
        record = dataclasses.replace(record, mac=self._integrity.tag(wallet_fact(record)))
        event = AuditEvent(
            "wallet.imported",
            actor,
            {
                "wallet_id": imported.wallet_id,
                "label": imported.label,
                "origin": IMPORTED,
                "master_public_key": imported.master_public_key.hex(),
                "import_key_fingerprint": imported.import_key_fingerprint,
                "seal_key_id": SEAL_KEY_ID,
                "row_version": record.version,
                **context,
            },
        )
        return record, event

    def trial_import(self, imported: ImportedSeed, import_key_id: str) -> None:
        """Prove at the proposal that the blob is the seed named (the result is dropped)."""
        self._import_seed(imported, import_key_id)

    def _import_seed(self, imported: ImportedSeed, import_key_id: str) -> SealedSeed:
        try:
            self._hsm.ensure_seal_key(SEAL_KEY_ID)
            return self._hsm.hd_import_seed(
                import_key_id,
                imported.wrapped_seed,
                imported.master_public_key,
                SEAL_KEY_ID,
                seed_aad(imported.wallet_id),
            )
        except SeedMismatch:
            raise FailedPrecondition(
                "imported_wallet.master_public_key: the wrapped seed is not the seed of this"
                " master public key"
            ) from None
        except UnwrapError:
            raise FailedPrecondition(
                "imported_wallet.wrapped_seed: does not unwrap under the import key"
                " (made for another import key, or damaged)"
            ) from None
        except HsmUnavailable as exc:
            raise Unavailable("the HSM could not import the wallet's seed; retry later") from exc

    def committed(self, record: WalletRecord) -> None:
        """`record` is stored: from now on an older copy of the row put back is a replay."""
        self._integrity.raise_floor(TABLE, (record.wallet_id,), record.version)

    # -- reads ----------------------------------------------------------------------

    def get(self, wallet_id: str) -> WalletRecord:
        check_wallet_id(wallet_id)
        since = self._integrity.epoch()
        record = self._store.get_wallet(wallet_id)
        if record is None:
            raise NotFound(f"wallet {wallet_id!r} not found")
        self._integrity.check(wallet_fact(record), record.mac, since)
        return record

    def list(self) -> list[WalletRecord]:
        since = self._integrity.epoch()
        records = self._store.list_wallets()
        self._integrity.verify([(wallet_fact(r), r.mac) for r in records], since)
        return records

    def account_key(self, record: WalletRecord, path: HdPath) -> ExtendedPublicKey:
        """The account-level public key of a verified wallet row at account path `path`."""
        assert record.mac is not None  # verified rows carry their tag
        cache_key = (record.wallet_id, record.mac, path.chain, path.network, path.text)
        with self._lock:
            cached = self._accounts.get(cache_key)
        if cached is not None:
            return cached
        try:
            key = self._hsm.hd_account_key(sealed_seed(record), path.chain, path.network, path.text)
        except HsmUnavailable as exc:
            raise Unavailable(f"wallet {record.wallet_id!r}: {exc}") from exc
        with self._lock:
            self._accounts[cache_key] = key
            while len(self._accounts) > ACCOUNT_CACHE_ENTRIES:
                # Oldest first: a caller naming ever new accounts cannot grow it without end.
                del self._accounts[next(iter(self._accounts))]
        return key

    def derived_key(
        self, record: WalletRecord, ref: HdKeyRef, chain: str, network: str
    ) -> DerivedKey:
        """The key at `ref` of a verified wallet row, for `chain`: public key from the
        account key (never the caller's); InvalidRequest names the HdKeyRef field."""
        acct = account_path(chain, network, ref.account, ref.purpose)
        check_place(chain, ref.change, ref.index)
        path = allowed_path(chain, network, f"{acct.text}/{ref.change}/{ref.index}")
        public = self.account_key(record, acct).child(ref.change).child(ref.index)
        return DerivedKey(
            record.wallet_id,
            derived_key_id(record.wallet_id, path),
            path,
            public.uncompressed(),
            record.origin,
            sealed_seed(record),
        )

    def key_for(self, ref: HdKeyRef, tx: Transaction) -> DerivedKey:
        """The wallet key an item names, for its transaction; errors name the item's field
        (`hd.wallet_id: ...`). The wallet row is verified; its grant is the caller's to check."""
        chain, network = path_chain(tx)
        try:
            record = self.get(ref.wallet_id)
        except NotFound:
            raise NotFound(f"hd.wallet_id: wallet {ref.wallet_id!r} not found") from None
        except InvalidRequest as exc:
            raise InvalidRequest(f"hd.{exc}") from None
        if record.state != ENABLED:
            raise FailedPrecondition(f"hd.wallet_id: wallet {ref.wallet_id!r} is {record.state}")
        try:
            return self.derived_key(record, ref, chain, network)
        except InvalidRequest as exc:
            raise InvalidRequest(f"hd.{exc}") from None

    def exported_key(self, wallet_id: str, path: HdPath) -> str:
        """The account public key in its standard form (xpub/ypub/zpub, tpub/upub/vpub)."""
        return self.account_key(self.get(wallet_id), path).serialize(path.key_version)

    def derive(
        self, wallet_id: str, path: HdPath, *, change: int, start: int, count: int
    ) -> builtins.list[DerivedAddress]:
        """Addresses start..start+count-1 of an account (bounded: MAX_ADDRESSES_PER_CALL)."""
        if not 0 < count <= MAX_ADDRESSES_PER_CALL:
            raise InvalidRequest(f"count: 1 to {MAX_ADDRESSES_PER_CALL}")
        if start < 0:
            raise InvalidRequest("index: 0 or more")
        check_place(path.chain, change, start + count - 1)
        exported = self.exported_key(wallet_id, path)
        try:
            return derive_addresses(
                exported,
                path.chain,
                path.network,
                path.text,
                start=start,
                count=count,
                change=change,
            )
        except DerivationError as exc:  # pragma: no cover - check_place refused it first
            raise InvalidRequest(f"index: {exc}") from None
