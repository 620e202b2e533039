"""The chain adapters, by the name of their field in the SignItem `tx` oneof."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from custos.signer.chains.base import Address, ChainAdapter, ChainFamily, KeyInfo, PreparedTx
from custos.signer.chains.bitcoin import BitcoinAdapter
from custos.signer.chains.bitcoin_psbt import BitcoinPsbtAdapter
from custos.signer.chains.evm import EvmAdapter
from custos.signer.chains.items import (
    BitcoinMessage,
    BitcoinPsbt,
    BitcoinTransaction,
    EvmPersonalMessage,
    EvmTransaction,
    EvmTypedData,
    Transaction,
    TronMessage,
    TronTransaction,
)
from custos.signer.chains.limits import DEFAULT_LIMITS, ChainLimits, WorkBudget
from custos.signer.chains.messages import (
    BitcoinMessageAdapter,
    EvmMessageAdapter,
    EvmTypedDataAdapter,
    TronMessageAdapter,
)
from custos.signer.chains.tron import TronAdapter


class Adapters(Mapping[str, ChainFamily]):
    """One adapter per chain family, by kind; `prepare` hands each item to its own.

    Each attribute is typed with the item it takes, so mypy checks that every
    adapter's `prepare` accepts exactly its kind and that `prepare` covers them all.
    """

    def __init__(
        self, limits: ChainLimits = DEFAULT_LIMITS, clock: Callable[[], float] = time.time
    ) -> None:
        self.bitcoin: ChainAdapter[BitcoinTransaction] = BitcoinAdapter(limits, clock)
        self.evm: ChainAdapter[EvmTransaction] = EvmAdapter(limits)
        self.tron: ChainAdapter[TronTransaction] = TronAdapter(limits, clock)
        self.evm_message: ChainAdapter[EvmPersonalMessage] = EvmMessageAdapter(limits)
        self.evm_typed_data: ChainAdapter[EvmTypedData] = EvmTypedDataAdapter(limits)
        self.tron_message: ChainAdapter[TronMessage] = TronMessageAdapter(limits)
        self.bitcoin_message: ChainAdapter[BitcoinMessage] = BitcoinMessageAdapter(limits)
        self.bitcoin_psbt: ChainAdapter[BitcoinPsbt] = BitcoinPsbtAdapter(limits, clock)
        families: tuple[ChainFamily, ...] = (
            self.bitcoin,
            self.evm,
            self.tron,
            self.evm_message,
            self.evm_typed_data,
            self.tron_message,
            self.bitcoin_message,
            self.bitcoin_psbt,
        )
        self._by_kind = {family.kind: family for family in families}

    def __getitem__(self, kind: str) -> ChainFamily:
        return self._by_kind[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_kind)

    def __len__(self) -> int:
        return len(self._by_kind)

    def prepare(
        self, tx: Transaction, key: KeyInfo, budget: WorkBudget | None = None
    ) -> tuple[ChainFamily, PreparedTx]:
        """The item's adapter and what it prepared (ChainAdapter.prepare says how)."""
        match tx:
            case EvmTransaction():
                return self.evm, self.evm.prepare(tx, key, budget)
            case BitcoinTransaction():
                return self.bitcoin, self.bitcoin.prepare(tx, key, budget)
            case TronTransaction():
                return self.tron, self.tron.prepare(tx, key, budget)
            case BitcoinPsbt():
                return self.bitcoin_psbt, self.bitcoin_psbt.prepare(tx, key, budget)
            case EvmPersonalMessage():
                return self.evm_message, self.evm_message.prepare(tx, key, budget)
            case EvmTypedData():
                return self.evm_typed_data, self.evm_typed_data.prepare(tx, key, budget)
            case TronMessage():
                return self.tron_message, self.tron_message.prepare(tx, key, budget)
            case BitcoinMessage():
                return self.bitcoin_message, self.bitcoin_message.prepare(tx, key, budget)


def make_adapters(
    limits: ChainLimits = DEFAULT_LIMITS, clock: Callable[[], float] = time.time
) -> Adapters:
    """One adapter per chain family, bounded by `limits` (the config's [limits])."""
    return Adapters(limits, clock)


# Adapters with the default limits, for code that has no configuration.
ADAPTERS = make_adapters()


def all_addresses(public_key: bytes) -> list[Address]:
    """Every address of a key on every supported chain and network."""
    return [address for adapter in ADAPTERS.values() for address in adapter.addresses(public_key)]
