"""Addresses of HD wallets, derived from account-level extended public keys (watch-only).

The address of each derived key is made by the chain adapters' own address code
(signer.chains.bitcoin_address, evm.key_address, tron.key_address), so that a
deposit address derived here, by a watch-only wallet from the exported account
key, or for a key the HSM signs with, is one and the same string.
"""

from __future__ import annotations

from dataclasses import dataclass

from custos.hsm.bip32 import DerivationError, ExtendedPublicKey, hash160, parse_extended_public_key
from custos.hsm.hd_paths import HdPath, allowed_path
from custos.signer.chains import evm, tron
from custos.signer.chains.bitcoin_address import (
    NETWORKS,
    b58check_encode,
    p2pkh_address,
    p2wpkh_address,
    p2wpkh_script,
)

MAX_ADDRESSES_PER_CALL = 1000  # a gap-limit scan asks for 20 at a time; bounds the work


def p2sh_p2wpkh_address(public_key: bytes, network: str) -> str:
    """BIP49: P2WPKH nested in P2SH, the script hash of OP_0 <hash160(key)>."""
    redeem_script = p2wpkh_script(hash160(public_key))
    return b58check_encode(bytes([NETWORKS[network].p2sh_version]) + hash160(redeem_script))


def key_address(public_key: bytes, chain: str, network: str, script: str) -> str:
    """The address of a compressed public key for `chain` (script: see hsm.hd_paths)."""
    if chain == "bitcoin":
        if script == "p2wpkh":
            return p2wpkh_address(public_key, network)
        if script == "p2sh-p2wpkh":
            return p2sh_p2wpkh_address(public_key, network)
        if script == "p2pkh":
            return p2pkh_address(public_key, network)
        raise DerivationError(f"no bitcoin address of script type {script!r}")
    if chain in ("ethereum", "bsc"):
        return evm.key_address(public_key)
    if chain == "tron":
        return tron.key_address(public_key)
    raise DerivationError(f"no HD addresses for chain {chain!r}")


@dataclass(frozen=True, slots=True)
class DerivedAddress:
    path: str
    public_key: bytes  # 33-byte compressed
    address: str


def account_key(path: HdPath, extended_key: str) -> ExtendedPublicKey:
    """Parse an account public key exported for `path` and check it fits the path."""
    key, version = parse_extended_public_key(extended_key)
    if key.depth != 3:
        raise DerivationError(f"account public key has depth {key.depth}, an account has 3")
    if key.child_number != path.indexes[2]:
        raise DerivationError(f"account public key is not of account {path.account}")
    if path.chain == "bitcoin" and version.name != path.key_version:
        raise DerivationError(
            f"a {version.name} key makes {version.script} addresses, path {path.text} "
            f"needs a {path.key_version}"
        )
    return key


def derive_addresses(
    extended_key: str,
    chain: str,
    network: str,
    account_path: str,
    *,
    start: int,
    count: int,
    change: int = 0,
) -> list[DerivedAddress]:
    """Addresses `start`..`start+count-1` on branch `change` of an account public key."""
    path = allowed_path(chain, network, account_path)
    if path.change is not None:
        raise DerivationError(f"path {path.text} is not an account-level path")
    if not 0 < count <= MAX_ADDRESSES_PER_CALL:
        raise DerivationError(f"count must be 1 to {MAX_ADDRESSES_PER_CALL}, not {count}")
    last = path.text + f"/{change}/{start + count - 1}"
    # Checks change and the index range against the allow-list with the exact paths.
    allowed_path(chain, network, path.text + f"/{change}/{start}")
    allowed_path(chain, network, last)
    branch = account_key(path, extended_key).child(change)
    out = []
    for index in range(start, start + count):
        key = branch.child(index).key
        address = key_address(key, chain, network, path.script)
        out.append(DerivedAddress(f"{path.text}/{change}/{index}", key, address))
    return out
