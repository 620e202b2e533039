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
