"""The derivation paths Custos derives keys on, and nothing else.

Only the standard account structures are allowed (BIP43 purpose / coin /
account' / change / index), so that every key of a wallet is one that other
wallets find from the same seed, and so that policy can name a wallet, an
account or an address by its place:

  bitcoin   m/44'/c'/a'/ch/i (P2PKH), m/49'/c'/a'/ch/i (P2SH-P2WPKH),
            m/84'/c'/a'/ch/i (P2WPKH); c = 0 on mainnet, 1 on test networks;
            ch 0 (receive) or 1 (change)
  ethereum, bsc  m/44'/60'/a'/0/i (BNB Smart Chain uses Ethereum's coin type)
  tron      m/44'/195'/a'/0/i

Account-level paths (the first three steps) are allowed too: their extended
public keys are what watch-only wallets derive deposit addresses from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from custos.hsm.bip32 import HARDENED, DerivationError, format_path, parse_path


class PathNotAllowed(DerivationError):
    """A syntactically valid path that is not one of the standard paths for the chain."""


@dataclass(frozen=True, slots=True)
class Scheme:
    purpose: int
    script: str  # p2pkh | p2sh-p2wpkh | p2wpkh | account
    version: str  # extended key family of the account key (hsm.bip32.VERSIONS), mainnet form
    test_version: str


BITCOIN_SCHEMES: Final = {
    44: Scheme(44, "p2pkh", "xpub", "tpub"),
    49: Scheme(49, "p2sh-p2wpkh", "ypub", "upub"),
    84: Scheme(84, "p2wpkh", "zpub", "vpub"),
}
ACCOUNT_SCHEME: Final = Scheme(44, "account", "xpub", "xpub")
# SLIP-44 coin types.
COIN_TYPES: Final = {"ethereum": 60, "bsc": 60, "tron": 195}
BITCOIN_NETWORKS: Final = ("mainnet", "testnet", "signet", "regtest")
MAX_ACCOUNT: Final = 1000  # far above any real wallet; keeps policy names small
MAX_INDEX: Final = HARDENED - 1


@dataclass(frozen=True, slots=True)
class HdPath:
    """An allowed path and what it means."""

    chain: str
    network: str
    purpose: int
    coin_type: int
    account: int
    change: int | None  # None for an account-level path
    index: int | None
    script: str
    key_version: str  # the extended key family to show the account public key in

    @property
    def indexes(self) -> tuple[int, ...]:
        head = (self.purpose + HARDENED, self.coin_type + HARDENED, self.account + HARDENED)
        if self.change is None or self.index is None:
            return head
        return (*head, self.change, self.index)

    @property
    def text(self) -> str:
        return format_path(self.indexes)

    @property
    def account_path(self) -> HdPath:
        return HdPath(
            self.chain,
            self.network,
            self.purpose,
            self.coin_type,
            self.account,
            None,
            None,
            self.script,
            self.key_version,
        )


def _refuse(text: str, chain: str, why: str) -> PathNotAllowed:
    return PathNotAllowed(f"derivation path {text} is not allowed for {chain}: {why}")


def allowed_path(chain: str, network: str, text: str) -> HdPath:
    """Parse `text` and check it against the allow-list of `chain`; PathNotAllowed names it."""
    steps = parse_path(text)
    shown = format_path(steps)
    if chain == "bitcoin":
        if network not in BITCOIN_NETWORKS:
            raise DerivationError(f"unknown bitcoin network {network!r}")
        coin = 0 if network == "mainnet" else 1
        purposes = "/".join(f"{p}'" for p in BITCOIN_SCHEMES)
        expected = f"m/{{{purposes}}}/{coin}'/account'/{{0,1}}/index"
    elif chain in COIN_TYPES:
        coin = COIN_TYPES[chain]
        expected = f"m/44'/{coin}'/account'/0/index"
    else:
        raise DerivationError(f"no HD derivation for chain {chain!r}")
    if len(steps) not in (3, 5):
        raise _refuse(shown, chain, f"expected {expected} or its account level")
    purpose, coin_type, account = steps[:3]
    if not all(s >= HARDENED for s in steps[:3]):
        raise _refuse(shown, chain, f"purpose, coin type and account are hardened ({expected})")
    purpose, coin_type, account = purpose - HARDENED, coin_type - HARDENED, account - HARDENED
    if chain == "bitcoin":
        if purpose not in BITCOIN_SCHEMES:
            raise _refuse(shown, chain, f"purpose {purpose} is not 44, 49 or 84 ({expected})")
        scheme = BITCOIN_SCHEMES[purpose]
    else:
        if purpose != 44:
            raise _refuse(shown, chain, f"purpose {purpose} is not 44 ({expected})")
        scheme = ACCOUNT_SCHEME
    if coin_type != coin:
        raise _refuse(shown, chain, f"coin type {coin_type} is not {coin} on {network}")
    if account > MAX_ACCOUNT:
        raise _refuse(shown, chain, f"account {account} is above {MAX_ACCOUNT}")
    version = scheme.version if network == "mainnet" or chain != "bitcoin" else scheme.test_version
    if len(steps) == 3:
        return HdPath(chain, network, purpose, coin, account, None, None, scheme.script, version)
    change, index = steps[3:]
    if change >= HARDENED or index >= HARDENED:
        raise _refuse(shown, chain, f"change and index are not hardened ({expected})")
    if change not in ((0, 1) if chain == "bitcoin" else (0,)):
        raise _refuse(shown, chain, f"change {change} is not allowed ({expected})")
    return HdPath(chain, network, purpose, coin, account, change, index, scheme.script, version)
