"""What a batch asks to sign: frozen values, decoded from the request once at the edge.

Each type mirrors one message of the SignItem `tx` oneof in
proto/custos/v1/signer.proto, field for field and with the same names, so an
adapter's error names the field the caller sent (`evm.gas_limit`). Nothing
here is validated: the adapters judge every value (signer/chains/*.py); the
edge only decodes (signer/edge/requests.py). Proto's "unset" defaults (0, "", b"")
are kept as they are, because the adapters give them meaning ("empty means 0").

`wire_size` is the item's encoded size as it arrived: the work budget charges
it before anything is parsed (signer/chains/limits.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

# ---- Bitcoin -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BitcoinInput:
    txid: str
    vout: int
    value: int  # 0 means not declared
    script_type: str  # "" means not declared
    sequence: int | None  # None: the adapter's default
    prev_tx: bytes


@dataclass(frozen=True, slots=True)
class BitcoinOutput:
    address: str
    value: int


@dataclass(frozen=True, slots=True)
class BitcoinTransaction:
    kind: ClassVar[str] = "bitcoin"
    network: str
    version: int
    lock_time: int
    inputs: tuple[BitcoinInput, ...]
    outputs: tuple[BitcoinOutput, ...]
    wire_size: int


@dataclass(frozen=True, slots=True)
class BitcoinPsbt:
    kind: ClassVar[str] = "bitcoin_psbt"
    network: str
    psbt: bytes  # binary BIP174; the adapter charges its length
    finalize: bool


# ---- EVM -----------------------------------------------------------------------


class EvmTxType(enum.Enum):
    UNSPECIFIED = 0  # also what an unknown wire value decodes to: refused by the adapter
    LEGACY = 1
    EIP2930 = 2
    EIP1559 = 3


@dataclass(frozen=True, slots=True)
class EvmAccessListEntry:
    address: str
    storage_keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EvmTransaction:
    kind: ClassVar[str] = "evm"
    chain_id: int
    type: EvmTxType
    nonce: int
    to: str
    value: str  # decimal wei; "" means 0
    data: str  # 0x hex; "" means none
    gas_limit: int
    gas_price: str
    max_fee_per_gas: str
    max_priority_fee_per_gas: str
    access_list: tuple[EvmAccessListEntry, ...]
    wire_size: int


# ---- Tron: one transaction, one of its contracts ----------------------------------


@dataclass(frozen=True, slots=True)
class TronTrxTransfer:
    field: ClassVar[str] = "trx_transfer"
    to: str
    amount: int


@dataclass(frozen=True, slots=True)
class TronTrc20Transfer:
    field: ClassVar[str] = "trc20_transfer"
    contract: str
    to: str
    amount: str  # decimal uint256


@dataclass(frozen=True, slots=True)
class TronFreezeBalanceV2:
    field: ClassVar[str] = "freeze_balance_v2"
    amount: int
    resource: str


@dataclass(frozen=True, slots=True)
class TronUnfreezeBalanceV2:
    field: ClassVar[str] = "unfreeze_balance_v2"
    amount: int
    resource: str


@dataclass(frozen=True, slots=True)
class TronDelegateResource:
    field: ClassVar[str] = "delegate_resource"
    receiver: str
    amount: int
    resource: str
    lock: bool
    lock_period: int


@dataclass(frozen=True, slots=True)
class TronUnDelegateResource:
    field: ClassVar[str] = "undelegate_resource"
    receiver: str
    amount: int
    resource: str


@dataclass(frozen=True, slots=True)
class TronWithdrawExpireUnfreeze:
    field: ClassVar[str] = "withdraw_expire_unfreeze"


@dataclass(frozen=True, slots=True)
class TronVote:
    witness: str
    count: int


@dataclass(frozen=True, slots=True)
class TronVoteWitness:
    field: ClassVar[str] = "vote_witness"
    votes: tuple[TronVote, ...]


TronStaking = (
    TronFreezeBalanceV2
    | TronUnfreezeBalanceV2
    | TronDelegateResource
    | TronUnDelegateResource
    | TronWithdrawExpireUnfreeze
    | TronVoteWitness
)
TronContract = TronTrxTransfer | TronTrc20Transfer | TronStaking


@dataclass(frozen=True, slots=True)
class TronTransaction:
    kind: ClassVar[str] = "tron"
    network: str
    contract: TronContract | None  # None: the caller set none
    ref_block_bytes: str
    ref_block_hash: str
    expiration: int
    timestamp: int
    fee_limit: int
    wire_size: int


# ---- Messages ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvmPersonalMessage:
    kind: ClassVar[str] = "evm_message"
    chain_id: int
    message: bytes
    wire_size: int


@dataclass(frozen=True, slots=True)
class EvmTypedData:
    kind: ClassVar[str] = "evm_typed_data"
    chain_id: int
    typed_data: str  # JSON text, parsed by the adapter within its limits
    wire_size: int


@dataclass(frozen=True, slots=True)
class TronMessage:
    kind: ClassVar[str] = "tron_message"
    network: str
    message: bytes
    wire_size: int


@dataclass(frozen=True, slots=True)
class BitcoinMessage:
    kind: ClassVar[str] = "bitcoin_message"
    network: str
    address_type: str
    message: bytes
    wire_size: int


Message = EvmPersonalMessage | EvmTypedData | TronMessage | BitcoinMessage
Transaction = BitcoinTransaction | BitcoinPsbt | EvmTransaction | TronTransaction | Message


# ---- The batch -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HdKeyRef:
    """A derived key of an HD wallet, by its place (SignItem.hd): the tx gives chain and network."""

    wallet_id: str
    account: int
    change: int
    index: int
    purpose: int  # 0: the chain's default


@dataclass(frozen=True, slots=True)
class SignItem:
    key_id: str
    tx: Transaction | None  # None: the caller set no transaction or message
    hd: HdKeyRef | None = None  # instead of key_id: a wallet's derived key


@dataclass(frozen=True, slots=True)
class SignBatch:
    """One SignBatch request, with the two forms of it that outlive the call.

    `encoded` is the request's deterministic protobuf encoding: what a held
    batch stores and its approvals are given for. `payload_digest` is SHA-256
    of its items alone in that encoding: what idempotency compares.
    """

    request_id: str
    items: tuple[SignItem, ...]
    encoded: bytes
    payload_digest: bytes
