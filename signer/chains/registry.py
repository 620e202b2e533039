"""The chain adapters, by the name of their field in the SignItem `tx` oneof."""

from __future__ import annotations

import time
from collections.abc import Callable

from signer.chains.base import Address, ChainAdapter
from signer.chains.bitcoin import BitcoinAdapter
from signer.chains.evm import EvmAdapter
from signer.chains.limits import DEFAULT_LIMITS, ChainLimits
from signer.chains.messages import (
    BitcoinMessageAdapter,
    EvmMessageAdapter,
    EvmTypedDataAdapter,
    TronMessageAdapter,
)
from signer.chains.tron import TronAdapter


def make_adapters(
    limits: ChainLimits = DEFAULT_LIMITS, clock: Callable[[], float] = time.time
) -> dict[str, ChainAdapter]:
    """One adapter per chain family, bounded by `limits` (the config's [limits])."""
    adapters: tuple[ChainAdapter, ...] = (
        BitcoinAdapter(limits, clock),
        EvmAdapter(limits),
        TronAdapter(limits, clock),
        EvmMessageAdapter(limits),
        EvmTypedDataAdapter(limits),
        TronMessageAdapter(limits),
        BitcoinMessageAdapter(limits),
    )
    return {adapter.kind: adapter for adapter in adapters}


# Adapters with the default limits, for code that has no configuration.
ADAPTERS: dict[str, ChainAdapter] = make_adapters()


def all_addresses(public_key: bytes) -> list[Address]:
    """Every address of a key on every supported chain and network."""
    return [address for adapter in ADAPTERS.values() for address in adapter.addresses(public_key)]
