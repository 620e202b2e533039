"""Policy documents: the versioned YAML that officers approve, as pydantic models.

policy.schema.json is generated from these models (`python -m custos.policies.schema
--write`) and a test keeps the two equal. Documents are loaded through
`policies.schema.load_document`: JSON Schema first (messages that name the
path), then these models, then cross-reference checks. Amounts are integers in base units, given
as YAML integers or decimal strings (uint256 range). Canonical JSON and its
hash identify a version.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

UINT256_MAX = 2**256 - 1
# Duplicated from signer/chains on purpose: policies/ imports nothing from signer/.
NETWORKS: dict[str, tuple[str, ...]] = {
    "bitcoin": ("mainnet", "testnet", "signet", "regtest"),
    "ethereum": ("mainnet", "sepolia", "holesky"),
    "bsc": ("mainnet", "testnet"),
    "tron": ("mainnet", "shasta", "nile"),
}
# Keys belong to one network class and sign only for its networks
# (signer/chains/networks.py, the same table; a test keeps them equal). A
# network's name alone gives its class: only "mainnet" is a mainnet.
NETWORK_CLASSES: dict[str, tuple[str, ...]] = {
    "mainnet": ("mainnet",),
    "testnet": ("testnet", "signet", "regtest", "sepolia", "holesky", "shasta", "nile"),
}

AMOUNT_NEEDS_ASSETS = "amount needs assets: base units of different assets are not comparable"
_AMOUNT_TEXT = re.compile(r"(0|[1-9][0-9]{0,77})")
_DURATION_PART = re.compile(r"([0-9]{1,9})([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
EVM_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BECH32_PREFIXES = ("bc1", "tb1", "bcrt1")


def _amount(value: object) -> int:
    # bool is an int subclass; YAML `true` must not become the amount 1.
    if isinstance(value, bool):
        raise ValueError("must be an integer or a decimal string")
    if isinstance(value, str):
        if not _AMOUNT_TEXT.fullmatch(value):
            raise ValueError("must be a decimal string of digits without sign or leading zeros")
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise ValueError("must be an integer from 0 to 2^256-1")
    return value


AMOUNT_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": UINT256_MAX},
        {"type": "string", "pattern": f"^{_AMOUNT_TEXT.pattern}$"},
    ]
}
# Serialized as a decimal string: canonical JSON must not depend on how the
# author spelled it, and JSON numbers lose precision beyond 2^53 elsewhere.
Amount = Annotated[
    int,
    BeforeValidator(_amount),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(AMOUNT_JSON_SCHEMA),
]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Identity = Annotated[str, StringConstraints(min_length=1, max_length=512)]
KeyId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
Address = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{20,100}$")]
AssetRef = Annotated[str, StringConstraints(pattern=r"^(native|[A-Za-z0-9]{20,100})$")]
# The methods adapters decode (common.intent.DECODED_METHODS), or a bare selector.
Method = Annotated[
    str,
    StringConstraints(
        pattern=r"^(transfer|transferFrom|approve|increaseAllowance|permit|0x[0-9a-f]{8})$"
    ),
]
Duration = Annotated[str, StringConstraints(pattern=r"^([0-9]{1,9}[dhms])+$")]
StartTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
EndTime = Annotated[str, StringConstraints(pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
Text = Annotated[str, StringConstraints(max_length=500)]
Chain = Literal["bitcoin", "ethereum", "bsc", "tron"]
Network = Literal["mainnet", "testnet", "signet", "regtest", "sepolia", "holesky", "shasta", "nile"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# "wallet": the HD wallet of the item's key (a key of no wallet is a wallet of its own).
LimitDimension = Literal["key", "asset", "caller", "wallet"]
# An HD wallet's id (signer.usecases.wallets.WALLET_ID).
WalletId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
# common.intent.MESSAGE_KINDS
MessageKind = Literal["personal_sign", "typed_data", "tron_message", "bitcoin_message"]
# EIP-712 struct type names (signer/chains/eip712.py accepts no others).
TypeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}$")]
ChainId = Annotated[int, Field(ge=1, le=2**64 - 1)]
NetworkClass = Literal["mainnet", "testnet"]
# Where the signing key's secret came from (signer.usecases.key_import).
KeyOrigin = Literal["generated", "imported"]
# common.intent.STAKING_KINDS and RESOURCES
StakingKind = Literal["stake", "unstake", "delegate", "undelegate", "withdraw_unfrozen", "vote"]
Resource = Literal["BANDWIDTH", "ENERGY"]
# A compressed SEC1 secp256k1 public key in lowercase hex (how multisig scripts carry keys).
PublicKeyHex = Annotated[str, StringConstraints(pattern=r"^0[23][0-9a-f]{64}$")]


def parse_duration(text: str) -> timedelta:
    """timedelta of a validated duration such as "24h", "1h30m" or "90s"."""
    return timedelta(
        seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    )


def minutes_of(clock: str) -> int:
    """Minutes since midnight of "HH:MM" ("24:00" is 1440)."""
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def normalize_address(address: str) -> str:
    """The spelling addresses are compared in: EVM and bech32 lowercased, base58 exact."""
    # Cheap tests on purpose (this runs per transfer): no base58 address is
    # 42 characters starting "0x" ("0" is not a base58 digit) or starts "bc1"/"tb1".
    if (len(address) == 42 and address.startswith("0x")) or address[:5].lower().startswith(
        _BECH32_PREFIXES
    ):
        return address.lower()
    return address


class _Model(BaseModel):
    # Strict: "yes" is no boolean and "3" no version, exactly as in the JSON Schema.
    # Strict tuples need JSON input: validate with parse_document, not model_validate.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _at_least_one(model: BaseModel, *fields: str) -> None:
    if not any(getattr(model, name) is not None for name in fields):
        raise ValueError(f"needs at least one of {', '.join(fields)}")


class Governance(_Model):
    """Who may change the policy: N officers, M approvals, optional activation delay."""

    officers: tuple[Identity, ...] = Field(min_length=1)
    approvals_required: int = Field(ge=1, le=100)
    activation_delay: Duration = "0s"
    proposal_expires_after: Duration = "7d"
    allow_self_approval: bool = False


class Ceremonies(_Model):
    """Officers other than the proposer who approve each key ceremony (policies.ceremonies).

    A kind left out takes its default: governance.approvals_required, except
    disable_key, which defaults to 1 (stopping a key only removes the power to
    sign, and a suspected compromise must be answerable at once; one other
    officer still has to agree, so one officer alone cannot stop a wallet).
    0 lets the proposer act alone: for development environments only.
    """

    create_key: int | None = Field(default=None, ge=0, le=100)
    disable_key: int | None = Field(default=None, ge=0, le=100)
    enable_key: int | None = Field(default=None, ge=0, le=100)
    retire_key: int | None = Field(default=None, ge=0, le=100)
    import_key: int | None = Field(default=None, ge=0, le=100)
    backup_key_init: int | None = Field(default=None, ge=0, le=100)
    backup: int | None = Field(default=None, ge=0, le=100)
    export_key: int | None = Field(default=None, ge=0, le=100)
    import_key_init: int | None = Field(default=None, ge=0, le=100)
    create_wallet: int | None = Field(default=None, ge=0, le=100)
    import_wallet: int | None = Field(default=None, ge=0, le=100)
    export_wallet: int | None = Field(default=None, ge=0, le=100)
    proposal_expires_after: Duration | None = None  # default: governance.proposal_expires_after


class AddressEntry(_Model):
    """One destination in the address book: an account, whatever its spelling.

    Without `scope` the entry matches its account everywhere it exists (see
    policies.accounts): a Bitcoin key hash in every standard script on every
    network, an EVM account on every EVM chain and chain id, a Tron account on
    every Tron network. `scope: chain` keeps it to its chain (all networks),
    `scope: network` to its chain and network. `chain` and `network` always say
    how to read `address`.
    """

    id: Name
    chain: Chain
    network: Network
    address: Address
    groups: tuple[Name, ...] = ()
    label: Text = ""
    scope: Literal["chain", "network"] | None = None


class AddressBook(_Model):
    """Known destinations and their groups; new entries wait out `cooling_off`."""

    cooling_off: Duration = "24h"
    groups: tuple[Name, ...] = ()
    entries: tuple[AddressEntry, ...] = Field(default=(), max_length=100_000)


class WatchOnlyWallet(_Model):
    """A wallet Custos holds no key for, by its account-level extended public key
    (`xpub`) or, on Bitcoin, a ranged output descriptor (`descriptor`): one of the two.

    Its addresses are the keys derived on the receive branch (0) and, on
    Bitcoin, the change branch (1) (a descriptor says which), indexes 0 to
    gap_limit-1 (policies.watch_only). With an xpub, `script` defaults to
    what the key's SLIP-132 version says (xpub: p2pkh, ypub: p2sh-p2wpkh,
    zpub: p2wpkh) and, if given, must agree with it. A private key (xprv...)
    is refused, never converted.
    """

    chain: Chain
    network: Network
    xpub: str | None = Field(default=None, min_length=1, max_length=120)
    # Or a single-key Bitcoin descriptor (policies.descriptors): wpkh(...), sh(wpkh(...)), pkh(...).
    descriptor: str | None = Field(default=None, min_length=1, max_length=400)
    script: Literal["p2pkh", "p2sh-p2wpkh", "p2wpkh"] | None = None
    gap_limit: int = Field(default=20, ge=1, le=1000)
    label: Text = ""


class Destinations(_Model):
    """Destination predicate: `all` (every destination listed) or `any` (at least one).

    `watch_only` names wallets of the document's `watch_only` section: any of
    their derived addresses is listed.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["entries"]},
                {"required": ["groups"]},
                {"required": ["watch_only"]},
            ]
        }
    )

    entries: tuple[Name, ...] | None = Field(default=None, min_length=1)
    groups: tuple[Name, ...] | None = Field(default=None, min_length=1)
    watch_only: tuple[Name, ...] | None = Field(default=None, min_length=1)
    mode: Literal["all", "any"] = "all"

    @model_validator(mode="after")
    def _some(self) -> Destinations:
        _at_least_one(self, "entries", "groups", "watch_only")
        return self


class AmountRange(_Model):
    """Inclusive range of an intent's total per asset, in base units."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    min: Amount | None = None
    max: Amount | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AmountRange:
        _at_least_one(self, "min", "max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class ContractMatch(_Model):
    """Contract call predicate: which contracts, which methods."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    addresses: tuple[Address, ...] | None = Field(default=None, min_length=1)
    methods: tuple[Method, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _some(self) -> ContractMatch:
        _at_least_one(self, "addresses", "methods")
        return self


class FeeCaps(_Model):
    """Upper bounds on fees; a cap the intent has no figure for does not match."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    max_fee: Amount | None = None  # native base units: Bitcoin fee, EVM gas*fee cap, Tron limit
    max_fee_rate_sat_vb: int | None = Field(default=None, ge=0, le=10**9)
    max_fee_per_gas: Amount | None = None  # EIP-1559 max_fee_per_gas or legacy gas_price
    max_gas_limit: int | None = Field(default=None, ge=0, le=10**12)
    max_fee_limit: int | None = Field(default=None, ge=0, le=10**15)  # Tron, sun

    @model_validator(mode="after")
    def _some(self) -> FeeCaps:
        _at_least_one(self, *FeeCaps.model_fields)
        return self


class TimeWindow(_Model):
    """UTC window; when end <= start it runs past midnight into the next day."""

    days: tuple[Day, ...] = Field(default=DAYS, min_length=1)
    start: StartTime
    end: EndTime

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if minutes_of(self.start) == minutes_of(self.end):
            raise ValueError("start and end must differ (use 00:00-24:00 for a whole day)")
        return self


class TypedDataMatch(_Model):
    """EIP-712 predicates: each given list must contain the signed domain's or type's value.

    A document whose domain leaves a field out matches no list of that field.
    """

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    domain_names: tuple[Text, ...] | None = Field(default=None, min_length=1)
    chain_ids: tuple[ChainId, ...] | None = Field(default=None, min_length=1)
    verifying_contracts: tuple[Address, ...] | None = Field(default=None, min_length=1)
    primary_types: tuple[TypeName, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _some(self) -> TypedDataMatch:
        _at_least_one(self, *TypedDataMatch.model_fields)
        return self


class StakingMatch(_Model):
    """Tron staking and voting predicates; only a rule with one allows such a contract.

    Receivers and voted witnesses are destinations: restrict them with the
    rule's `destinations`. Resource and lock predicates leave out the kinds
    without one (withdraw_unfrozen and vote have no resource; only a locked
    delegation has a lock period).
    """

    kinds: tuple[StakingKind, ...] = Field(min_length=1)
    resources: tuple[Resource, ...] | None = Field(default=None, min_length=1)
    # A locked delegation cannot be taken back for its lock period (in 3-second blocks).
    max_lock_period: int | None = Field(default=None, ge=0, le=10**9)


class MultisigMatch(_Model):
    """Predicates on the m-of-n multisigs a PSBT item's key cosigns (common.intent.Multisig).

    A rule with `multisig` matches only items that spend a multisig, and
    every multisig they spend must satisfy each given predicate.
    """

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    # Every other key of the multisig is one of these.
    cosigners: tuple[PublicKeyHex, ...] | None = Field(default=None, min_length=1)
    # m is at least this.
    min_threshold: int | None = Field(default=None, ge=1, le=16)
    # An output returns change to the same multisig (same m, same keys).
    change: Literal["same_multisig"] | None = None

    @model_validator(mode="after")
    def _some(self) -> MultisigMatch:
        _at_least_one(self, *MultisigMatch.model_fields)
        return self


class WalletAccount(_Model):
    """One account of an HD wallet: every address under m/purpose'/coin'/account'."""

    wallet: WalletId
    account: int = Field(ge=0, le=1000)  # hsm.hd_paths.MAX_ACCOUNT


class Scope(_Model):
    """Who and what: the predicates rules and limits share."""

    callers: tuple[Identity, ...] | None = Field(default=None, min_length=1)
    caller_groups: tuple[Name, ...] | None = Field(default=None, min_length=1)
    keys: tuple[KeyId, ...] | None = Field(default=None, min_length=1)
    key_groups: tuple[Name, ...] | None = Field(default=None, min_length=1)
    chains: tuple[Chain, ...] | None = Field(default=None, min_length=1)
    networks: tuple[Network, ...] | None = Field(default=None, min_length=1)
    # The class of the item's network, which is its key's class (the service
    # refuses any other before policy runs): `[mainnet]` is every main network.
    network_classes: tuple[NetworkClass, ...] | None = Field(default=None, min_length=1)
    assets: tuple[AssetRef, ...] | None = Field(default=None, min_length=1)
    # Keys of these HD wallets (every address of each), or of these wallet accounts;
    # a key that belongs to no wallet matches neither.
    wallets: tuple[WalletId, ...] | None = Field(default=None, min_length=1)
    wallet_accounts: tuple[WalletAccount, ...] | None = Field(default=None, min_length=1)


class Match(Scope):
    """A rule's predicates; all given predicates must hold (an empty match matches all).

    `amount` compares each asset's total in that asset's base units, so it
    needs `assets`: 10^18 is 1 ETH and also a trillion USDT.
    """

    model_config = ConfigDict(json_schema_extra={"dependentRequired": {"amount": ["assets"]}})

    destinations: Destinations | None = None
    amount: AmountRange | None = None
    contract: ContractMatch | None = None
    fee: FeeCaps | None = None
    message_signing: bool = False
    # Only with message_signing: which kinds of message, and EIP-712 predicates
    # (a rule with typed_data matches typed data only).
    message_kinds: tuple[MessageKind, ...] | None = Field(default=None, min_length=1)
    typed_data: TypedDataMatch | None = None
    # Tron staking and voting: a rule with it matches those contracts only, and
    # a rule without it none of them (deny rules excepted).
    staking: StakingMatch | None = None
    multisig: MultisigMatch | None = None
    # The origin of the item's key: `[imported]` matches keys imported from
    # outside the HSM, whose secret may have copies elsewhere.
    key_origins: tuple[KeyOrigin, ...] | None = Field(default=None, min_length=1)
    time: tuple[TimeWindow, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _amount_of_assets(self) -> Match:
        if self.amount is not None and self.assets is None:
            raise ValueError(AMOUNT_NEEDS_ASSETS)
        return self


class Approval(_Model):
    """What a require_approval rule asks for."""

    approvals: int = Field(ge=1, le=20)
    group: Name
    totp: bool = True
    expires_after: Duration = "24h"


class Rule(_Model):
    """One ordered rule: the first rule whose match holds decides.

    `review` asks an external endpoint before signing (action review): it is
    the name of an endpoint the service's config declares ([review.endpoints]),
    never a URL. The endpoint's answer allows, denies, or holds the batch for
    the rule's `approval`; no answer in time denies.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "properties": {"action": {"enum": ["require_approval", "review"]}},
                        "required": ["action"],
                    },
                    "then": {"required": ["approval"]},
                    "else": {"not": {"required": ["approval"]}},
                },
                {
                    "if": {"properties": {"action": {"const": "review"}}, "required": ["action"]},
                    "then": {"required": ["review"]},
                    "else": {"not": {"required": ["review"]}},
                },
            ]
        }
    )

    id: Name
    description: Text = ""
    match: Match = Match()
    action: Literal["allow", "deny", "require_approval", "review"]
    approval: Approval | None = None
    review: Name | None = None
    reason: Text | None = None  # shown to the caller of a denied request

    @model_validator(mode="after")
    def _approval_iff_required(self) -> Rule:
        held = self.action in ("require_approval", "review")
        if held != (self.approval is not None):
            raise ValueError(
                "approval is required for, and only for, actions require_approval and review"
            )
        if (self.action == "review") != (self.review is not None):
            raise ValueError("review is required for, and only for, action review")
        return self


class Limit(_Model):
    """A velocity limit: sum and/or count over a rolling window, keyed by `per`."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": ["max_amount"]}, {"required": ["max_count"]}],
            "if": {"required": ["max_amount"]},
            "then": {"required": ["per"], "properties": {"per": {"contains": {"const": "asset"}}}},
        }
    )

    id: Name
    description: Text = ""
    window: Duration
    per: tuple[LimitDimension, ...] = Field(default=(), json_schema_extra={"uniqueItems": True})
    scope: Scope = Scope()
    max_amount: Amount | None = None
    max_count: int | None = Field(default=None, ge=0, le=10**9)

    @model_validator(mode="after")
    def _consistent(self) -> Limit:
        _at_least_one(self, "max_amount", "max_count")
        if len(set(self.per)) != len(self.per):
            raise ValueError("per must not repeat a dimension")
        # Units of different assets must never be added together.
        if self.max_amount is not None and "asset" not in self.per:
            raise ValueError('max_amount needs "asset" in per')
        return self


class LockBounds(_Model):
    """How far ahead a signed transaction may be locked or, on Tron, stay valid.

    A signature for a transaction that becomes valid only later (Bitcoin
    nLockTime, BIP68 relative locks) or stays valid long (Tron expiration) is
    a payment someone can hold and broadcast after the key was disabled or
    the policy changed. Every item is held to these bounds before any rule
    (deny code `lock_too_far`); a document without `locks` gets the defaults.
    Heights are compared with an upper estimate of the Bitcoin mainnet tip.
    The service's [limits] max_lock_ahead_* bound the same facts for every policy.
    """

    max_ahead: Duration = "1h"  # Unix-time lock_time, BIP68 time locks, Tron expiration
    max_ahead_blocks: int = Field(default=6, ge=0, le=52_560)  # height lock_time, BIP68 blocks


class PolicyDocument(_Model):
    """A complete policy version, as officers propose and approve it."""

    model_config = ConfigDict(title="Custos policy document")

    version: int = Field(ge=1)
    description: Text = ""
    governance: Governance
    identity_groups: dict[Name, tuple[Identity, ...]] = {}
    key_groups: dict[Name, tuple[KeyId, ...]] = {}
    address_book: AddressBook = AddressBook()
    rules: tuple[Rule, ...] = Field(max_length=10_000)
    limits: tuple[Limit, ...] = Field(default=(), max_length=1_000)
    # None (absent) means LockBounds(): left out of canonical JSON, so versions
    # written before locks existed keep their hash and get the default bounds.
    locks: LockBounds | None = None
    # None (absent): every ceremony takes its default quorum (Ceremonies); left
    # out of canonical JSON, so versions written before ceremonies keep their hash.
    ceremonies: Ceremonies | None = None
    # None (absent) keeps the hash of versions written before watch-only wallets.
    watch_only: dict[Name, WatchOnlyWallet] | None = Field(default=None, max_length=100)


# ---- canonical form ------------------------------------------------------


def parse_document(data: object) -> PolicyDocument:
    """Model-validate parsed YAML/JSON (strictly, as JSON); pydantic ValidationError if invalid."""
    return PolicyDocument.model_validate_json(json.dumps(data))


def canonical_json(doc: PolicyDocument) -> bytes:
    """Canonical JSON of a validated document: sorted keys, no whitespace, defaults filled in.

    Unset optional predicates (None) are left out, so adding an optional field
    to the format later does not change the hash of existing versions.
    """
    data = doc.model_dump(mode="json", exclude_none=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_hash(doc: PolicyDocument) -> str:
    """Hex SHA-256 of canonical_json(doc): the value officers approve."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def memberships(entry: AddressEntry) -> tuple[str, ...]:
    """What a rule can name an entry by: "entry:<id>" and "group:<name>" per group."""
    return (f"entry:{entry.id}", *(f"group:{g}" for g in entry.groups))


def since_key(entry: AddressEntry, membership: str) -> str:
    """Key of the time an address first held a membership (the cooling-off start).

    Keyed by the address, not the entry id: pointing an existing id at a new
    address, or adding an address to a group, starts a new cooling-off. So
    does changing the entry's scope (where it may be paid); an entry without
    one keeps the key it had before scopes existed.
    """
    where = f"{entry.chain}:{entry.network}:{normalize_address(entry.address)}"
    scope = f"@{entry.scope}" if entry.scope else ""
    return f"{where}{scope}#{membership}"


def watch_only_since_key(wallet_id: str, wallet: WatchOnlyWallet) -> str:
    """Cooling-off key of a watch-only wallet: a new or changed key starts a new cooling-off."""
    script = wallet.script or ""
    key = (wallet.xpub or wallet.descriptor or "").strip()
    where = f"{wallet.chain}:{wallet.network}:{key}:{script}:{wallet.gap_limit}"
    return f"{where}#watch_only:{wallet_id}"


def since_keys(doc: PolicyDocument) -> tuple[str, ...]:
    """Every cooling-off key of the document's address book and watch-only wallets."""
    book = tuple(since_key(e, m) for e in doc.address_book.entries for m in memberships(e))
    wallets = tuple(watch_only_since_key(i, w) for i, w in (doc.watch_only or {}).items())
    return book + wallets
