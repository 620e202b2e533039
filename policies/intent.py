"""What a transaction does, in the terms policy reasons about.

Chain adapters (signer/chains) turn parsed transactions into these values;
policy evaluation reads nothing else. Amounts are integers in the asset's
base units (satoshi, wei, sun, token units).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Transfer:
    """Value moving to a destination. `asset` is "native" or the token contract address."""

    to: str
    asset: str
    amount: int
    is_change: bool = False  # Bitcoin output back to the signing key's own address


@dataclass(frozen=True, slots=True)
class ContractCall:
    contract: str
    method: str  # "transfer", "approve", or "0x" + 4-byte selector when not decoded
    args: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Intent:
    """What a transaction does, in the terms policy reasons about."""

    chain: str
    network: str
    key_id: str
    from_address: str
    transfers: tuple[Transfer, ...]
    fee: int  # native base units; the maximum the tx may pay (EVM, Tron) or pays (Bitcoin)
    contract_call: ContractCall | None = None
    # Chain-specific fee facts for fee caps: fee_rate_sat_vb, gas_limit, max_fee_per_gas, ...
    fee_details: tuple[tuple[str, int], ...] = ()
    # When the signed transaction may be mined (issue 9 item 7). The adapters
    # already refuse locks further ahead than the config's [limits] allow; these
    # are the facts for policy rules that want tighter ones.
    # Bitcoin nLockTime as signed: 0 none, below 500,000,000 a block height,
    # from it on a Unix time in seconds (enforced unless every sequence is 0xffffffff).
    lock_time: int = 0
    # Bitcoin nSequence of each input, in order (BIP68 relative locks, BIP125 RBF).
    sequences: tuple[int, ...] = ()
    # Tron: ms since epoch after which no node accepts the transaction (0: none).
    expiration_ms: int = 0
