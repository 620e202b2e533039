"""What every chain adapter provides, and the values that flow between them.

An adapter turns one transaction or message (a value of signer/chains/items.py,
decoded from the request at the edge) into a `PreparedTx` (the intent policy
will judge, the digests to sign, and its own parsed form),
then turns the HSM's signatures into a `SignedTx`. Adapters compute every
digest themselves from the parsed transaction: a caller never supplies a hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

# The intent types belong to the policy domain; adapters produce them.
from custos.common.intent import ContractCall, Intent, Multisig, Staking, Transfer
from custos.common.secp256k1 import RecoverableSignature

if TYPE_CHECKING:
    from custos.signer.chains.limits import WorkBudget

__all__ = [
    "Address",
    "ChainAdapter",
    "ChainFamily",
    "ContractCall",
    "Intent",
    "InvalidField",
    "KeyInfo",
    "Multisig",
    "PreparedTx",
    "SignedTx",
    "Staking",
    "Transfer",
]


class InvalidField(ValueError):
    """A request field is malformed or out of range; `field` is its path in the item."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    public_key: bytes  # 65-byte uncompressed SEC1


@dataclass(frozen=True, slots=True)
class Address:
    chain: str  # bitcoin | ethereum | bsc | tron
    network: str
    kind: str  # p2wpkh | p2pkh | account
    address: str


@dataclass(frozen=True, slots=True)
class PreparedTx:
    intent: Intent
    digests: tuple[bytes, ...]  # 32-byte digests, signed by the item's key, in order
    unsigned: Any  # the adapter's own parsed transaction, handed back to assemble()


@dataclass(frozen=True, slots=True)
class SignedTx:
    chain: str
    network: str
    address: str
    tx_id: str  # hex; 0x-prefixed for EVM
    raw_tx: str  # hex for Bitcoin and EVM; JSON text for Tron
    fee: int = 0  # Bitcoin fee in satoshis
    max_fee: int = 0  # EVM gas_limit * fee cap in wei; Tron fee_limit in sun


Tx_contra = TypeVar("Tx_contra", contravariant=True)


class ChainFamily(Protocol):
    """One chain family, whatever it signs; `kind` names its field in the SignItem oneof."""

    kind: str

    def addresses(self, public_key: bytes) -> list[Address]:
        """Every address of the key on this chain family, one per network and kind."""
        ...

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        """Build the broadcastable transaction from one signature per digest."""
        ...


class ChainAdapter(ChainFamily, Protocol[Tx_contra]):
    """A chain family that prepares items of type `Tx_contra` (signer/chains/items.py)."""

    def prepare(self, tx: Tx_contra, key: KeyInfo, budget: WorkBudget | None = None) -> PreparedTx:
        """Parse and validate one item; raise InvalidField naming the field.

        Work is charged to `budget` (the batch's) before it is done; the
        adapter's own limits (signer/chains/limits.py) bound each item.
        """
        ...
