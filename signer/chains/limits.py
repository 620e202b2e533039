"""Bounds on the size and the work of every item and every batch (DESIGN.md invariant 10).

A caller must not be able to make the service do unbounded work before policy
runs, nor sign a transaction no chain would accept. `ChainLimits` holds every
bound an adapter checks; the `[limits]` section of the configuration sets them
(signer/config.py, same names) and these defaults are what an unconfigured
server uses. Each refusal names the field and the limit's config key.

`WorkBudget` bounds a whole batch: every adapter charges its item's request
bytes and the bytes it is about to hash (Bitcoin sighash preimages, which for
legacy inputs grow with the square of the inputs) before doing that work, so a
request of many expensive items fails after a bounded amount of work. Units
are bytes of hashing; a Bitcoin item's request bytes count 16 each, as parsing
its previous transactions costs about that much per byte. The default budget
is about a quarter of a second of one core.
"""

from __future__ import annotations

from dataclasses import dataclass

from signer.chains.base import InvalidField

# EIP-7825 (Ethereum, Fusaka) and BEP-652 (BNB Smart Chain) cap one
# transaction's gas at 2^24; both chains' block gas limits are far above it.
TX_GAS_CAP = 2**24


@dataclass(frozen=True, slots=True)
class ChainLimits:
    """Every per-item and per-batch bound; field names are the config's [limits] keys."""

    # A batch: request bytes of every item plus the bytes hashed for its digests.
    max_batch_work_bytes: int = 64_000_000
    # How far in the future a transaction may only become valid (Bitcoin nLockTime
    # and BIP68 relative locks) or may still be broadcast (Tron expiration).
    max_lock_ahead_seconds: int = 86_400
    max_lock_ahead_blocks: int = 144
    # Bitcoin
    bitcoin_max_inputs: int = 1000
    bitcoin_max_outputs: int = 1000
    bitcoin_max_prev_tx_bytes: int = 400_000  # the largest standard transaction
    bitcoin_max_sighash_bytes: int = 16_000_000  # per item
    # EVM
    ethereum_max_gas_limit: int = TX_GAS_CAP
    bsc_max_gas_limit: int = TX_GAS_CAP
    evm_max_data_bytes: int = 131_072  # geth's txpool refuses larger transactions
    evm_max_access_list_addresses: int = 256
    evm_max_access_list_storage_keys: int = 4096
    evm_max_fee_per_gas_gwei: int = 10_000
    evm_max_value_ether: int = 1_000_000_000
    # Tron
    tron_max_fee_limit_sun: int = 15_000_000_000  # mainnet's maxFeeLimit, 15,000 TRX
    tron_max_amount_sun: int = 100_000_000_000 * 1_000_000  # 100 billion TRX


DEFAULT_LIMITS = ChainLimits()


class WorkBudget:
    """Preparation work left for one batch; charged by adapters before they do it."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, units: int, field: str) -> None:
        """Count `units` bytes of work; InvalidField naming `field` once the batch is over."""
        self.used += units
        if self.used > self.limit:
            raise InvalidField(
                field,
                f"the batch needs more than limits.max_batch_work_bytes = {self.limit} "
                "bytes of preparation work (request bytes plus signature-hash bytes); "
                "split it into smaller batches",
            )
