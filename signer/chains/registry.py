"""The chain adapters, by the name of their field in the SignItem `tx` oneof."""

from __future__ import annotations

from signer.chains.base import Address, ChainAdapter
from signer.chains.bitcoin import BitcoinAdapter
from signer.chains.evm import EvmAdapter
from signer.chains.tron import TronAdapter

ADAPTERS: dict[str, ChainAdapter] = {
    adapter.kind: adapter for adapter in (BitcoinAdapter(), EvmAdapter(), TronAdapter())
}


def all_addresses(public_key: bytes) -> list[Address]:
    """Every address of a key on every supported chain and network."""
    return [address for adapter in ADAPTERS.values() for address in adapter.addresses(public_key)]
