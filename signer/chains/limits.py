"""Bounds on the size and the work of every item and every batch (DESIGN.md invariant 10).

A caller must not be able to make the service do unbounded work before policy
runs, nor sign a transaction no chain would accept. `ChainLimits` holds every
bound an adapter checks; the `[limits]` section of the configuration sets them
(signer/edge/config.py, same names) and these defaults are what an unconfigured
server uses. Each refusal names the field and the limit's config key.

`WorkBudget` bounds a whole batch's preparation: every adapter charges its
item's work before doing it, so a request of many expensive items fails after
a bounded amount of CPU. A unit is about the time to hash one byte (~4 ns);
the charges below were measured on the adapters (a Bitcoin output, whose
address is decoded in Python, costs as much as hashing 40 kB). The default
budget is about 1.5 s of one core; a batch of 1000 simple items fits in half
of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from custos.signer.chains.base import InvalidField

# EIP-7825 (Ethereum, Fusaka) and BEP-652 (BNB Smart Chain) cap one
# transaction's gas at 2^24; both chains' block gas limits are far above it.
TX_GAS_CAP = 2**24

# WorkBudget charges, in units of about one byte hashed.
ITEM_UNITS = 100_000  # any item: decoding, key and address work (~0.1-0.5 ms)
PARSE_WEIGHT = 16  # per request byte of a Bitcoin item (previous transactions are parsed)
BITCOIN_INPUT_UNITS = 15_000  # ~50 us per input
BITCOIN_OUTPUT_UNITS = 40_000  # ~150 us per output (address decoding)
SIGNATURE_CHECK_UNITS = 25_000  # ~80 us per secp256k1 verification (a cosigner's signature)


@dataclass(frozen=True, slots=True)
class ChainLimits:
    """Every per-item and per-batch bound; field names are the config's [limits] keys."""

    # A batch: the WorkBudget charges of all its items (see the module docstring).
    max_batch_work_units: int = 400_000_000
    # How far in the future a transaction may only become valid (Bitcoin nLockTime
    # and BIP68 relative locks) or may still be broadcast (Tron expiration).
    max_lock_ahead_seconds: int = 86_400
    max_lock_ahead_blocks: int = 144
    # Bitcoin
    bitcoin_max_inputs: int = 1000
    bitcoin_max_outputs: int = 1000
    bitcoin_max_prev_tx_bytes: int = 400_000  # the largest standard transaction
    bitcoin_max_sighash_bytes: int = 16_000_000  # per item
    bitcoin_max_psbt_bytes: int = 4_000_000  # a PSBT item, previous transactions included
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
    # Messages: EIP-191 personal_sign, Tron and Bitcoin message bytes; EIP-712
    # typed data's JSON text and how deeply its arrays and objects nest.
    message_max_bytes: int = 65_536
    typed_data_max_bytes: int = 65_536
    typed_data_max_depth: int = 16


DEFAULT_LIMITS = ChainLimits()


class WorkBudget:
    """Preparation work left for one batch; charged by adapters before they do it."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, units: int, field: str) -> None:
        """Count `units` of work; InvalidField naming `field` once the batch is over."""
        self.used += units
        if self.used > self.limit:
            raise InvalidField(
                field,
                f"the batch needs more than limits.max_batch_work_units = {self.limit} "
                "units of preparation work (item, input, output and request-byte charges "
                "plus signature-hash bytes); split it into smaller batches",
            )
