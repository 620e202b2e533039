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
    # Bitcoin output back to the custody its signed inputs come from: the
    # signing key's own scripts, or for a multisig spend the same m-of-n key set.
    is_change: bool = False


@dataclass(frozen=True, slots=True)
class Multisig:
    """An m-of-n OP_CHECKMULTISIG the item's key cosigns (a PSBT input it signs)."""

    threshold: int  # m
    total: int  # n
    # The other keys (compressed SEC1, lowercase hex), sorted, each once.
    cosigners: tuple[str, ...]


# Calls whose arguments the adapters decode, so their amounts are known: a
# transfer or transferFrom also appears as a Transfer; approve and
# increaseAllowance carry ("spender", ...) and ("amount", ...) in args. Any
# other method (a bare selector) moves an unknown amount: policy treats it so.
TOKEN_TRANSFERS = frozenset({"transfer", "transferFrom"})
# "permit" is a signed message granting an allowance (EIP-2612 Permit, Uniswap
# Permit2): it carries the same args and is judged and charged like approve.
ALLOWANCES = frozenset({"approve", "increaseAllowance", "permit"})
DECODED_METHODS = TOKEN_TRANSFERS | ALLOWANCES


@dataclass(frozen=True, slots=True)
class ContractCall:
    contract: str
    # One of DECODED_METHODS, or "0x" + 4-byte selector when not decoded.
    method: str
    args: tuple[tuple[str, str], ...] = ()

    @property
    def decoded(self) -> bool:
        """Whether policy knows what the call moves (fail closed on any other name)."""
        return self.method in DECODED_METHODS


# What a signed message is, for the policy's message_kinds matcher.
MESSAGE_KINDS = ("personal_sign", "typed_data", "tron_message", "bitcoin_message")


@dataclass(frozen=True, slots=True)
class Message:
    """A message to sign (EIP-191, EIP-712, TIP-191, Bitcoin Signed Message), as policy sees it.

    The EIP-712 fields are those of the signed domain and type; None when the
    domain leaves the field out (or for the other kinds).
    """

    kind: str  # one of MESSAGE_KINDS
    size: int  # bytes of the message; for typed data, of its JSON text
    domain_name: str | None = None
    domain_version: str | None = None
    chain_id: int | None = None
    verifying_contract: str | None = None  # EIP-55 checksummed
    primary_type: str | None = None
    # Spending the signature grants (EIP-2612 Permit, Permit2 PermitSingle,
    # PermitBatch, PermitTransferFrom, PermitBatchTransferFrom): one
    # ContractCall(token, "permit", (("spender", ...), ("amount", ...))) per token.
    grants: tuple[ContractCall, ...] = ()


# What a Tron staking transaction does, for the policy's staking matcher.
STAKING_KINDS = ("stake", "unstake", "delegate", "undelegate", "withdraw_unfrozen", "vote")
# The staking kinds that take TRX out of the spendable balance (a stake waits
# 14 days after unstaking; a delegation hands its resource to another account):
# their amount is charged to the native asset like a transfer. The others only
# bring value back to the key's own account or move no value (votes).
CHARGED_STAKING = frozenset({"stake", "delegate"})
RESOURCES = ("BANDWIDTH", "ENERGY")


@dataclass(frozen=True, slots=True)
class Staking:
    """A Tron Stake 2.0 or voting contract, as policy sees it.

    `receiver` (delegate, undelegate) and the voted witnesses are judged as
    destinations: address-book, destination and deny rules apply to them.
    """

    kind: str  # one of STAKING_KINDS
    amount: int = 0  # sun (stake, unstake, delegate, undelegate); 0 for the others
    resource: str | None = None  # one of RESOURCES; None for withdraw_unfrozen and vote
    receiver: str | None = None  # delegate, undelegate
    lock_period: int | None = None  # delegate with lock: blocks; None when not locked
    votes: tuple[tuple[str, int], ...] = ()  # vote: (witness, count) in signed order

    @property
    def charged(self) -> int:
        """Sun this contract takes out of the spendable balance (see CHARGED_STAKING)."""
        return self.amount if self.kind in CHARGED_STAKING else 0

    def summary(self) -> str:
        """One line for approvers: "delegate 5000000 sun ENERGY to T... locked 86400 blocks"."""
        if self.kind == "vote":
            return "vote " + ", ".join(f"{witness}={count}" for witness, count in self.votes)
        if self.kind == "withdraw_unfrozen":
            return "withdraw_unfrozen (every unstaked amount past its 14 days)"
        text = f"{self.kind} {self.amount} sun {self.resource}"
        if self.receiver is not None:
            text += f" {'to' if self.kind == 'delegate' else 'from'} {self.receiver}"
        if self.lock_period is not None:
            text += f" locked {self.lock_period} blocks"
        return text

    @property
    def accounts(self) -> tuple[str, ...]:
        """The other accounts it names: the receiver, or the witnesses voted for."""
        if self.receiver is not None:
            return (self.receiver,)
        return tuple(witness for witness, _ in self.votes)


@dataclass(frozen=True, slots=True)
class Intent:
    """What a transaction does, in the terms policy reasons about."""

    chain: str
    network: str
    key_id: str
    from_address: str
    transfers: tuple[Transfer, ...]
    # Native base units; the maximum the tx may pay (EVM gas_limit x fee cap,
    # Tron fee_limit) or pays (Bitcoin). Velocity limits charge it to the native asset.
    fee: int
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
    # Set for a message (no transfers, no fee): only message_signing rules judge it.
    message: Message | None = None
    # Set for a Tron staking or voting contract (no transfers): only rules with
    # a staking match allow it.
    staking: Staking | None = None
    # Each distinct multisig whose inputs the key signs, in input order.
    multisig: tuple[Multisig, ...] = ()
    # Where the key's secret came from: "generated" in the HSM or "imported".
    # Set by the service from the key's authenticated record, never by a caller.
    key_origin: str = "generated"
    # The HD wallet and account of a derived key ("" and None for a plain key);
    # set by the service from the wallet's authenticated record, never by a caller.
    wallet_id: str = ""
    wallet_account: int | None = None

    @property
    def calls(self) -> tuple[ContractCall, ...]:
        """The contract call, or a message's spending grants: what moves tokens by allowance."""
        if self.contract_call is not None:
            return (self.contract_call,)
        return self.message.grants if self.message is not None else ()
