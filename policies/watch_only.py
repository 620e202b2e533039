"""Watch-only wallets: the account ids of every address an extended public key makes.

A policy names a wallet Custos holds no key for (cold storage, another
custodian) by its account-level extended public key; a destination is that
wallet's when its account id (policies.accounts) is the id of a key derived
on the receive branch (0) or, on Bitcoin, the change branch (1), at an index
below the gap limit. The ids are computed once per wallet and cached, so a
policy load costs at most gap_limit x 2 public derivations per wallet and
evaluation one set lookup per destination.

Bitcoin ids are key hashes (btc:kh:..., paid by P2WPKH and P2PKH alike) or,
for a P2SH-P2WPKH wallet, the script hash of the nested script (btc:sh:...),
exactly as policies.accounts reads a destination address. EVM and Tron ids
are the account of the key (evm:..., tron:...).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from Crypto.Hash import keccak

from custos.policies.accounts import base58check_encode, hash160
from custos.policies.descriptors import DescriptorError, parse_descriptor
from custos.policies.document import NETWORKS, PolicyDocument, WatchOnlyWallet
from custos.policies.xpub import Xpub, XpubError, parse_xpub, uncompressed

# Public derivations a whole document may ask for: 10 wallets at the largest gap limit.
MAX_DERIVATIONS: Final = 20_000
_TRON_VERSION: Final = 0x41


class WalletError(XpubError):
    """A wallet whose key does not fit its chain, network or script; `field` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def branches(chain: str) -> tuple[int, ...]:
    """Receive and change on Bitcoin; the account chains use the receive branch only."""
    return (0, 1) if chain == "bitcoin" else (0,)


def derivations(wallet: WatchOnlyWallet) -> int:
    """An upper bound on the public derivations the wallet costs (before parsing it)."""
    return wallet.gap_limit * len(branches(wallet.chain))


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to derive: the key's text, the script of its addresses, the branches."""

    key: str
    script: str
    branches: tuple[int, ...]


def _script_of(wallet: WatchOnlyWallet, key_family: str, key_script: str) -> str:
    if wallet.chain != "bitcoin":
        if key_family != "xpub":
            raise WalletError(
                "xpub", f"a {key_family} key is a Bitcoin key; {wallet.chain} accounts take an xpub"
            )
        if wallet.script is not None:
            raise WalletError("script", f"{wallet.chain} has no script types; leave script out")
        return "account"
    if wallet.script is not None and wallet.script != key_script:
        raise WalletError(
            "script", f"a {key_family} key makes {key_script} addresses, not {wallet.script}"
        )
    return key_script


def _parse_key(text: str, field: str) -> Xpub:
    try:
        return parse_xpub(text)
    except XpubError as exc:
        raise WalletError(field, str(exc)) from None


def _plan_of_descriptor(wallet: WatchOnlyWallet, text: str) -> tuple[Xpub, _Plan]:
    if wallet.chain != "bitcoin":
        raise WalletError("descriptor", f"{wallet.chain} wallets take an xpub, not a descriptor")
    if wallet.script is not None:
        raise WalletError("script", "a descriptor says its script; leave script out")
    try:
        descriptor = parse_descriptor(text)
    except DescriptorError as exc:
        raise WalletError("descriptor", str(exc)) from None
    key = _parse_key(descriptor.key, "descriptor")
    return key, _Plan(descriptor.key, descriptor.script, descriptor.branches)


def _plan(wallet: WatchOnlyWallet) -> tuple[Xpub, _Plan]:
    if (wallet.xpub is None) == (wallet.descriptor is None):
        raise WalletError("xpub", "needs exactly one of xpub, descriptor")
    if wallet.descriptor is not None:
        return _plan_of_descriptor(wallet, wallet.descriptor)
    text = (wallet.xpub or "").strip()
    key = _parse_key(text, "xpub")
    script = _script_of(wallet, key.version.name, key.version.script)
    return key, _Plan(text, script, branches(wallet.chain))


def parse_wallet(wallet: WatchOnlyWallet) -> _Plan:
    """What the wallet derives; WalletError says what does not fit.

    Messages name versions, networks and scripts, never the key itself.
    """
    key, plan = _plan(wallet)
    version = key.version
    if wallet.chain == "bitcoin" and version.mainnet != (wallet.network == "mainnet"):
        kind = "a mainnet" if version.mainnet else "a test-network"
        raise WalletError(
            "network", f"a {version.name} key is {kind} key, not for {wallet.network}"
        )
    return plan


def _account_id(chain: str, script: str, public_key: bytes) -> str:
    if chain == "bitcoin":
        key_hash = hash160(public_key)
        if script == "p2sh-p2wpkh":
            return "btc:sh:" + hash160(b"\x00\x14" + key_hash).hex()
        return "btc:kh:" + key_hash.hex()
    account = keccak.new(digest_bits=256, data=uncompressed(public_key)).digest()[-20:]
    if chain == "tron":
        return "tron:" + base58check_encode(bytes([_TRON_VERSION]) + account)
    return "evm:" + account.hex()


@lru_cache(maxsize=128)  # a document holds at most 100 wallets
def _derived(chain: str, plan: _Plan, gap_limit: int) -> frozenset[str]:
    key, script = parse_xpub(plan.key), plan.script
    ids = set()
    for branch in plan.branches:
        parent = key.child(branch)
        if parent is None:  # BIP32: an invalid child (p < 2^-127) is skipped
            continue
        for index in range(gap_limit):
            child = parent.child(index)
            if child is not None:
                ids.add(_account_id(chain, script, child.key))
    return frozenset(ids)


def wallet_accounts(wallet: WatchOnlyWallet) -> frozenset[str]:
    """The account ids of the wallet's addresses below its gap limit (cached)."""
    return _derived(wallet.chain, parse_wallet(wallet), wallet.gap_limit)


def wallet_errors(doc: PolicyDocument) -> list[tuple[str, str]]:
    """(path, message) for each watch-only wallet that cannot be used, and for the total cost."""
    errors: list[tuple[str, str]] = []
    wallets = doc.watch_only or {}
    for wallet_id, wallet in wallets.items():
        path = f"watch_only.{wallet_id}"
        if wallet.network not in NETWORKS[wallet.chain]:
            errors.append(
                (f"{path}.network", f"{wallet.network!r} is not a {wallet.chain} network")
            )
            continue
        try:
            parse_wallet(wallet)
        except WalletError as exc:
            errors.append((f"{path}.{exc.field}", str(exc)))
    total = sum(derivations(w) for w in wallets.values())
    if total > MAX_DERIVATIONS:
        errors.append(
            ("watch_only", f"gap limits need {total} derivations, more than {MAX_DERIVATIONS}")
        )
    return errors
