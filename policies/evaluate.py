"""Policy evaluation: compile a validated document once, then judge batches of intents.

Ordered rules, first match wins, default deny. Rules are indexed by bitmask:
per dimension (caller, message or transaction, chain, network, key, asset,
contract call) a Python int has bit i set when rule i accepts the value, so
ANDing an intent's masks leaves only rules whose indexed predicates hold and
the lowest set bit is the first candidate. Only candidates get the remaining
checks (destinations, amount, contract, fees, multisig, time), in rule order. A batch
is judged as a whole: any deny denies it, any approval requirement applies
to all of it, and velocity limits see the sum of its items (fees included).

Destinations are compared as accounts (policies.accounts), not spellings. A
contract call the adapters cannot decode has an unknown amount: no amount
predicate matches it, and only a rule naming its contract and method allows it.
A Tron staking or voting contract is allowed only by a rule with a `staking`
match; its receiver or witnesses are its destinations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from custos.common.intent import ALLOWANCES, TOKEN_TRANSFERS, Intent, Message, Multisig, Staking
from custos.policies.accounts import account_id, account_ids
from custos.policies.document import (
    DAYS,
    NETWORKS,
    AmountRange,
    Approval,
    MultisigMatch,
    PolicyDocument,
    Rule,
    StakingMatch,
    memberships,
    minutes_of,
    normalize_address,
    parse_duration,
    since_key,
    watch_only_since_key,
)
from custos.policies.locks import LOCK_TOO_FAR, CompiledLocks, lock_breach
from custos.policies.velocity import (
    CompiledLimit,
    Delta,
    ScopeFilter,
    Spent,
    batch_deltas,
    check,
    moved_totals,
)
from custos.policies.watch_only import wallet_accounts

RULE_DENIED = "rule_denied"
NO_RULE_MATCHED = "no_rule_matched"
COOLING_OFF = "destination_cooling_off"
LIMIT_EXCEEDED = "limit_exceeded"
EMPTY_BATCH = "empty_batch"


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    """One batch to judge: who asks, the intents, when (UTC), and whether it signs messages."""

    caller: str
    caller_groups: frozenset[str]  # groups from outside the document (identity store)
    items: tuple[Intent, ...]
    now: datetime
    message_signing: bool = False


@dataclass(frozen=True, slots=True)
class Review:
    """An external review a `review` rule asks for before signing.

    `endpoint` names one of the service's configured endpoints; a "hold"
    answer asks for the rule's `approval` (see held_by_review).
    """

    rule_id: str
    endpoint: str
    approval: Approval
    expires_after: timedelta


@dataclass(frozen=True, slots=True)
class Allow:
    """Every item is allowed; `rule_ids[i]` is the rule that allowed item i.

    With `reviews`, only once every endpoint named there allowed it too.
    """

    rule_ids: tuple[str, ...]
    reviews: tuple[Review, ...] = ()

    @property
    def rule_id(self) -> str:
        """The rule of the first item."""
        return self.rule_ids[0]


@dataclass(frozen=True, slots=True)
class Deny:
    """The batch is refused; `code` is machine-readable, `reason` for humans."""

    code: str
    reason: str
    item_index: int | None = None
    rule_id: str | None = None
    limit_id: str | None = None
    remaining: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Quorum:
    """`approvals` distinct approvers from `group`."""

    group: str
    approvals: int


@dataclass(frozen=True, slots=True)
class RequireApproval:
    """The batch may be signed once every quorum is met, before `expires_after` runs out.

    Items naming different groups need each group's quorum (an approver in
    two groups counts in both); for one group the largest count wins; TOTP is
    required if any item's rule requires it; the shortest expiry applies.
    """

    rule_ids: tuple[str, ...]
    quorum: tuple[Quorum, ...]
    totp_required: bool
    expires_after: timedelta
    reviews: tuple[Review, ...] = ()


Decision = Allow | Deny | RequireApproval


def _requirement(
    rule_ids: tuple[str, ...],
    quorum: Iterable[Quorum],
    totp: Iterable[bool],
    expiries: Iterable[timedelta],
    reviews: tuple[Review, ...],
) -> Allow | RequireApproval:
    """Allow when nothing is asked, else the combined requirement (see RequireApproval)."""
    counts: dict[str, int] = {}
    for q in quorum:
        counts[q.group] = max(counts.get(q.group, 0), q.approvals)
    if not counts:
        return Allow(rule_ids, reviews)
    return RequireApproval(
        rule_ids=rule_ids,
        quorum=tuple(Quorum(g, n) for g, n in sorted(counts.items())),
        totp_required=any(totp),
        expires_after=min(expiries),
        reviews=reviews,
    )


def held_by_review(
    decision: Allow | RequireApproval, held: Sequence[Review] | None = None
) -> Allow | RequireApproval:
    """The decision once the reviews in `held` (default: all of them) answered "hold".

    Each held review adds its rule's approval to what the decision already
    asks; the decision keeps its reviews (they were asked, and answered).
    """
    held = decision.reviews if held is None else held
    if not held:
        return decision
    quorum = [Quorum(r.approval.group, r.approval.approvals) for r in held]
    totp = [r.approval.totp for r in held]
    expiries = [r.expires_after for r in held]
    if isinstance(decision, RequireApproval):
        quorum += decision.quorum
        totp.append(decision.totp_required)
        expiries.append(decision.expires_after)
    return _requirement(decision.rule_ids, quorum, totp, expiries, decision.reviews)


@dataclass(frozen=True, slots=True)
class _Facts:
    chain: str
    network: str
    totals: dict[str, int]  # per asset: non-change transfers plus a decoded allowance
    destinations: tuple[str, ...]  # account ids (policies.accounts), not spellings
    fees: dict[str, int]
    contract: str | None
    method: str | None
    # Every contract the intent calls or a message grants an allowance on
    # (a Permit2 PermitBatch names several tokens); contract is the first.
    contracts: tuple[str, ...]
    message: Message | None
    staking: Staking | None
    # An undecoded contract call: what it moves is unknown, never 0. No amount
    # predicate matches it, and only a rule naming its contract and method allows it.
    unknown_amount: bool
    multisig: tuple[Multisig, ...] = ()
    # An output is change (for a multisig spend: back to the same m-of-n key set).
    returns_change: bool = False
    key_origin: str = "generated"
    wallet_id: str = ""
    wallet_account: int | None = None


def _facts(intent: Intent) -> _Facts:
    # Fees are not in totals: rules judge amounts and fee caps apart; velocity
    # limits charge both (policies.velocity.charged_totals).
    totals = moved_totals(intent)
    chain = intent.chain
    destinations = [account_id(chain, t.to) for t in intent.transfers if not t.is_change]
    calls = intent.calls
    contracts = tuple(dict.fromkeys(normalize_address(call.contract) for call in calls))
    contract = contracts[0] if contracts else None
    method = calls[0].method if calls else None
    for call in calls:
        if call.method in ALLOWANCES:
            # The spender can move the allowance: it is a destination (and, in totals, an amount).
            destinations.append(account_id(chain, dict(call.args).get("spender", "")))
        elif call.method not in TOKEN_TRANSFERS:
            destinations.append(account_id(chain, call.contract))
    if intent.staking is not None:
        # A delegation's receiver, the witnesses voted for: judged like payees.
        destinations.extend(account_id(chain, a) for a in intent.staking.accounts)
    fees = dict(intent.fee_details)
    fees["fee"] = intent.fee
    return _Facts(
        chain=chain,
        network=intent.network,
        totals=totals,
        destinations=tuple(dict.fromkeys(destinations)),
        fees=fees,
        contract=contract,
        method=method,
        contracts=contracts,
        message=intent.message,
        staking=intent.staking,
        unknown_amount=any(not call.decoded for call in calls),
        multisig=intent.multisig,
        returns_change=any(t.is_change for t in intent.transfers),
        key_origin=intent.key_origin,
        wallet_id=intent.wallet_id,
        wallet_account=intent.wallet_account,
    )


@dataclass(frozen=True, slots=True)
class _Window:
    days: frozenset[int]  # Monday is 0
    start: int  # minutes since midnight UTC
    end: int

    def holds(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        # Past midnight: the early hours belong to the window of the day before.
        if minute >= self.start:
            return weekday in self.days
        return minute < self.end and (weekday - 1) % 7 in self.days


# Fee cap name -> (intent fee facts to read, first present wins; multiplier of the cap).
_FEE_FACTS: dict[str, tuple[tuple[str, ...], int]] = {
    "max_fee": (("fee",), 1),
    "max_fee_rate_sat_vb": (("fee_rate_sat_vb_milli",), 1000),
    "max_fee_per_gas": (("max_fee_per_gas", "gas_price"), 1),
    "max_gas_limit": (("gas_limit",), 1),
    "max_fee_limit": (("fee_limit",), 1),
}


@dataclass(frozen=True, slots=True)
class _MultisigRule:
    """A compiled `multisig` predicate (policies.document.MultisigMatch)."""

    cosigners: frozenset[str] | None
    min_threshold: int
    same_multisig_change: bool

    @classmethod
    def of(cls, match: MultisigMatch) -> _MultisigRule:
        return cls(
            frozenset(match.cosigners) if match.cosigners is not None else None,
            match.min_threshold or 1,
            match.change == "same_multisig",
        )

    def holds(self, facts: _Facts) -> bool:
        if not facts.multisig:
            return False
        if self.same_multisig_change and not facts.returns_change:
            # The adapter marks an output of a multisig spend as change only
            # when it pays the same m-of-n key set (signer/chains/bitcoin_psbt.py).
            return False
        return all(
            ms.threshold >= self.min_threshold
            and (self.cosigners is None or self.cosigners.issuperset(ms.cosigners))
            for ms in facts.multisig
        )


@dataclass(frozen=True, slots=True)
class _Rule:
    id: str
    action: str
    reason: str | None
    review: str | None
    approval: Approval | None
    expires_after: timedelta
    memberships: frozenset[str] | None  # "entry:<id>" / "group:<name>" of the destinations
    any_destination: bool
    amount: AmountRange | None
    contracts: frozenset[str] | None
    methods: frozenset[str] | None
    fee_caps: tuple[tuple[tuple[str, ...], int], ...]
    windows: tuple[_Window, ...] | None
    message_kinds: frozenset[str] | None = None
    # EIP-712 predicates: (Message attribute, accepted values); a rule with any
    # of them matches typed data only.
    typed_data: tuple[tuple[str, frozenset[object]], ...] | None = None
    staking: StakingMatch | None = None
    multisig: _MultisigRule | None = None
    key_origins: frozenset[str] | None = None
    wallets: frozenset[str] | None = None
    wallet_accounts: frozenset[tuple[str, int | None]] | None = None

    def _staking_holds(self, staking: Staking | None) -> bool:
        match = self.staking
        if staking is None or match is None:
            # A rule without a staking match judges staking only to deny it;
            # _judge's mask already keeps staking rules from other intents.
            return staking is None or self.action == "deny"
        if staking.kind not in match.kinds:
            return False
        if (
            match.resources is not None
            and staking.resource is not None
            and staking.resource not in match.resources
        ):
            return False
        return not (
            match.max_lock_period is not None
            and staking.lock_period is not None
            and staking.lock_period > match.max_lock_period
        )

    def _message_holds(self, message: Message | None) -> bool:
        if message is None:
            return True  # the kind index keeps message rules from transactions
        if self.message_kinds is not None and message.kind not in self.message_kinds:
            return False
        if self.typed_data is None:
            return True
        if message.kind != "typed_data":
            return False
        for attr, accepted in self.typed_data:
            value = getattr(message, attr)
            if attr == "verifying_contract" and value is not None:
                value = normalize_address(value)
            if value is None or value not in accepted:
                return False
        return True

    @classmethod
    def of(cls, rule: Rule) -> _Rule:
        m, dest, contract = rule.match, rule.match.destinations, rule.match.contract
        names = None
        if dest is not None:
            entries = [f"entry:{e}" for e in dest.entries or ()]
            groups = [f"group:{g}" for g in dest.groups or ()]
            wallets = [f"watch_only:{w}" for w in dest.watch_only or ()]
            names = frozenset([*entries, *groups, *wallets])
        caps = []
        for name, cap in (m.fee.model_dump(exclude_none=True) if m.fee else {}).items():
            facts, scale = _FEE_FACTS[name]
            caps.append((facts, int(cap) * scale))
        windows = None
        if m.time is not None:
            windows = tuple(
                _Window(frozenset(map(DAYS.index, w.days)), minutes_of(w.start), minutes_of(w.end))
                for w in m.time
            )
        addresses = contract.addresses if contract else None
        methods = contract.methods if contract else None
        typed: list[tuple[str, frozenset[object]]] | None = None
        if m.typed_data is not None:
            td = m.typed_data
            typed = [
                (attr, frozenset(values))
                for attr, values in (
                    ("domain_name", td.domain_names),
                    ("chain_id", td.chain_ids),
                    (
                        "verifying_contract",
                        None
                        if td.verifying_contracts is None
                        else map(normalize_address, td.verifying_contracts),
                    ),
                    ("primary_type", td.primary_types),
                )
                if values is not None
            ]
        return cls(
            id=rule.id,
            action=rule.action,
            reason=rule.reason,
            review=rule.review,
            approval=rule.approval,
            expires_after=parse_duration(rule.approval.expires_after)
            if rule.approval
            else timedelta(0),
            memberships=names,
            any_destination=dest is not None and dest.mode == "any",
            amount=m.amount,
            contracts=frozenset(map(normalize_address, addresses)) if addresses else None,
            methods=frozenset(methods) if methods else None,
            fee_caps=tuple(caps),
            windows=windows,
            message_kinds=frozenset(m.message_kinds) if m.message_kinds else None,
            typed_data=tuple(typed) if typed is not None else None,
            staking=m.staking,
            multisig=_MultisigRule.of(m.multisig) if m.multisig is not None else None,
            key_origins=frozenset(m.key_origins) if m.key_origins else None,
            wallets=frozenset(m.wallets) if m.wallets else None,
            wallet_accounts=frozenset((w.wallet, w.account) for w in m.wallet_accounts)
            if m.wallet_accounts
            else None,
        )

    def holds(
        self,
        facts: _Facts,
        policy: CompiledPolicy,
        now: datetime,
        clock: tuple[int, int],
        ignore_cooling: bool,
    ) -> bool:
        if facts.contract is not None and (
            (self.contracts is not None and not all(c in self.contracts for c in facts.contracts))
            or (self.methods is not None and facts.method not in self.methods)
        ):
            return False
        if not self._message_holds(facts.message):
            return False
        if not self._staking_holds(facts.staking):
            return False
        if self.multisig is not None and not self.multisig.holds(facts):
            return False
        if self.key_origins is not None and facts.key_origin not in self.key_origins:
            return False
        if self.wallets is not None and facts.wallet_id not in self.wallets:
            return False
        if (
            self.wallet_accounts is not None
            and (facts.wallet_id, facts.wallet_account) not in self.wallet_accounts
        ):
            return False
        if (
            facts.unknown_amount
            and self.action != "deny"
            and (self.contracts is None or self.methods is None)
        ):
            # Unknown means no: only a rule naming this contract and method may
            # let through a call whose effect the service cannot read.
            return False
        if self.amount is not None:
            if facts.unknown_amount:
                return False
            low, high = self.amount.min or 0, self.amount.max
            for total in facts.totals.values() or (0,):
                if total < low or (high is not None and total > high):
                    return False
        for names, cap in self.fee_caps:
            fee = next((facts.fees[n] for n in names if n in facts.fees), None)
            if fee is None or fee > cap:
                return False
        if self.windows is not None and not any(w.holds(*clock) for w in self.windows):
            return False
        if self.memberships is None:
            return True
        # Cooling-off keeps new entries from granting anything, never from denying.
        honour_new = ignore_cooling or self.action == "deny"
        wanted = self.memberships
        listed = (policy._listed(facts, d, wanted, now, honour_new) for d in facts.destinations)
        if self.any_destination:
            return any(listed)
        return bool(facts.destinations) and all(listed)


@dataclass(frozen=True, slots=True)
class _Entry:
    """A compiled address-book entry: where it applies and what it grants."""

    id: str
    usable: dict[str, datetime]  # membership -> usable from (end of its cooling-off)
    rule_bits: int  # the rules that name one of its memberships
    chain: str
    network: str
    scope: str | None  # None: the account everywhere; "chain"; "network"

    def applies(self, chain: str, network: str) -> bool:
        if self.scope is None:
            return True
        return chain == self.chain and (self.scope == "chain" or network == self.network)


class _Dim:
    """Per value, the bitmask of rules that accept it; `wild` for rules without the predicate."""

    __slots__ = ("values", "wild")

    def __init__(self) -> None:
        self.wild = 0
        self.values: dict[str, int] = {}

    def add(self, bit: int, accepted: Iterable[str] | None) -> None:
        if accepted is None:
            self.wild |= bit
            return
        for value in accepted:
            self.values[value] = self.values.get(value, 0) | bit

    def mask(self, value: str) -> int:
        return self.wild | self.values.get(value, 0)


class CompiledPolicy:
    """A validated document, indexed for evaluation; immutable after construction."""

    def __init__(
        self, doc: PolicyDocument, *, activated_at: datetime, entry_since: Mapping[str, datetime]
    ) -> None:
        self.doc = doc
        self.version = doc.version
        self._locks = CompiledLocks.of(doc.locks)
        groups: dict[str, set[str]] = {}
        for group, members in doc.identity_groups.items():
            for member in members:
                groups.setdefault(member, set()).add(group)
        self._groups_of = {identity: frozenset(g) for identity, g in groups.items()}
        self._rules = tuple(_Rule.of(r) for r in doc.rules)
        self._all = (1 << len(self._rules)) - 1
        self._callers, self._keys, self._chains = _Dim(), _Dim(), _Dim()
        self._networks, self._assets, self._kinds = _Dim(), _Dim(), _Dim()
        self._caller_groups: dict[str, int] = {}
        self._with_contract = self._with_staking = self._denies = 0
        # Destinations: rules without the predicate, with mode all, with mode any,
        # and per membership name the rules naming it.
        self._dest_wild = self._dest_all = self._dest_any = 0
        named: dict[str, int] = {}
        for i, (rule, compiled) in enumerate(zip(doc.rules, self._rules, strict=True)):
            bit, m = 1 << i, rule.match
            if compiled.memberships is None:
                self._dest_wild |= bit
            else:
                if compiled.any_destination:
                    self._dest_any |= bit
                else:
                    self._dest_all |= bit
                for name in compiled.memberships:
                    named[name] = named.get(name, 0) | bit
            scope = ScopeFilter.of(m, doc.identity_groups, doc.key_groups)
            self._callers.add(bit, scope.callers)
            for group in scope.caller_groups:
                self._caller_groups[group] = self._caller_groups.get(group, 0) | bit
            self._keys.add(bit, scope.keys)
            self._chains.add(bit, scope.chains)
            self._networks.add(bit, scope.networks)
            self._assets.add(bit, scope.assets)
            self._kinds.add(bit, ["message" if m.message_signing else "transaction"])
            if m.contract is not None:
                self._with_contract |= bit
            if m.staking is not None:
                self._with_staking |= bit
            if rule.action == "deny":
                self._denies |= bit
        self.limits = tuple(
            CompiledLimit.of(lim, doc.identity_groups, doc.key_groups) for lim in doc.limits
        )
        # Most batches are on one chain: skip the limits scoped to other chains.
        self._limits_on = {
            chain: tuple(
                lim for lim in self.limits if lim.scope.chains is None or chain in lim.scope.chains
            )
            for chain in NETWORKS
        }
        cooling = parse_duration(doc.address_book.cooling_off)
        # Account id -> the entries filed under it (policies.accounts): one entry
        # per account spelling it stands for, several entries may share one.
        self._book: dict[str, list[_Entry]] = {}
        for entry in doc.address_book.entries:
            names = memberships(entry)
            usable = {
                m: entry_since.get(since_key(entry, m), activated_at) + cooling for m in names
            }
            rule_bits = 0
            for name in names:
                rule_bits |= named.get(name, 0)
            compiled_entry = _Entry(
                entry.id, usable, rule_bits, entry.chain, entry.network, entry.scope
            )
            for account in account_ids(entry.chain, entry.address):
                self._book.setdefault(account, []).append(compiled_entry)
        self._file_watch_only(doc, named, cooling, activated_at, entry_since)

    def _file_watch_only(
        self,
        doc: PolicyDocument,
        named: Mapping[str, int],
        cooling: timedelta,
        activated_at: datetime,
        entry_since: Mapping[str, datetime],
    ) -> None:
        """File each watch-only wallet as one entry under every address it derives.

        Scoped to its own chain and network: a key hash is the same account on
        every Bitcoin network, but a mainnet wallet is not paid on testnet.
        """
        for wallet_id, wallet in (doc.watch_only or {}).items():
            name = f"watch_only:{wallet_id}"
            since = entry_since.get(watch_only_since_key(wallet_id, wallet), activated_at)
            compiled_entry = _Entry(
                wallet_id,
                {name: since + cooling},
                named.get(name, 0),
                wallet.chain,
                wallet.network,
                "network",
            )
            for account in wallet_accounts(wallet):
                self._book.setdefault(account, []).append(compiled_entry)

    def identity_groups_of(
        self, identity: str, extra: frozenset[str] = frozenset()
    ) -> frozenset[str]:
        """The identity's groups: those the document lists it in, plus `extra`."""
        return self._groups_of.get(identity, frozenset()) | extra

    def _entries(self, chain: str, network: str, account: str) -> Sequence[_Entry]:
        """The address-book entries that apply to `account` paid on chain/network."""
        found = self._book.get(account)
        if not found:
            return ()
        return [e for e in found if e.applies(chain, network)]

    def _listed(
        self, facts: _Facts, account: str, names: frozenset[str], now: datetime, honour_new: bool
    ) -> bool:
        """Whether `account` holds one of `names`, past its cooling-off unless honour_new."""
        return any(
            name in names and (honour_new or now >= usable)
            for entry in self._entries(facts.chain, facts.network, account)
            for name, usable in entry.usable.items()
        )

    def limit_deltas(self, request: EvaluationRequest) -> tuple[Delta, ...]:
        """What the batch adds to each velocity bucket (none for message signing)."""
        if request.message_signing:
            return ()
        groups = self.identity_groups_of(request.caller, request.caller_groups)
        chains = {intent.chain for intent in request.items}
        limits = self._limits_on.get(chains.pop(), self.limits) if len(chains) == 1 else self.limits
        return batch_deltas(limits, request.caller, groups, request.items)

    def _first(
        self,
        facts: _Facts,
        mask: int,
        now: datetime,
        clock: tuple[int, int],
        ignore_cooling: bool = False,
    ) -> _Rule | None:
        while mask:
            low = mask & -mask
            rule = self._rules[low.bit_length() - 1]
            if rule.holds(facts, self, now, clock, ignore_cooling):
                return rule
            mask ^= low
        return None

    def _cooling_entry(self, facts: _Facts, now: datetime) -> tuple[str, datetime] | None:
        for account in facts.destinations:
            for entry in self._entries(facts.chain, facts.network, account):
                pending = [t for t in entry.usable.values() if now < t]
                if pending:
                    return entry.id, max(pending)
        return None

    def _judge(
        self, index: int, intent: Intent, base: int, now: datetime, clock: tuple[int, int]
    ) -> _Rule | Deny:
        facts = _facts(intent)
        mask = (
            base
            & self._chains.mask(intent.chain)
            & self._networks.mask(intent.network)
            & self._keys.mask(intent.key_id)
        )
        for asset in facts.totals:
            mask &= self._assets.mask(asset)
        # A superset filter: cooling-off and the exact semantics are left to holds().
        every, some = self._all, 0
        for account in facts.destinations:
            bits = 0
            for filed in self._entries(intent.chain, intent.network, account):
                bits |= filed.rule_bits
            every &= bits
            some |= bits
        if not facts.destinations:
            every = 0
        mask &= self._dest_wild | (self._dest_all & every) | (self._dest_any & some)
        if facts.contract is None:
            mask &= ~self._with_contract
        elif facts.method != "transfer":
            # Only rules that name contracts may allow approve or arbitrary
            # calls; any deny rule may still refuse them (a denied spender).
            mask &= self._with_contract | self._denies
        if facts.staking is None:
            mask &= ~self._with_staking
        else:
            # Only staking rules may allow staking; any deny rule may refuse it.
            mask &= self._with_staking | self._denies
        rule = self._first(facts, mask, now, clock)
        if rule is None:
            cooling = self._cooling_entry(facts, now)
            if cooling is not None:
                would = self._first(facts, mask, now, clock, ignore_cooling=True)
                if would is not None and would.action != "deny":
                    entry, usable = cooling
                    return Deny(
                        COOLING_OFF,
                        f"item {index}: address book entry {entry!r} is in its cooling-off period",
                        item_index=index,
                        rule_id=would.id,
                        details={"entry": entry, "usable_from": usable.isoformat()},
                    )
            return Deny(NO_RULE_MATCHED, f"item {index}: no rule allows it", item_index=index)
        if rule.action == "deny":
            return Deny(
                RULE_DENIED,
                rule.reason or f"item {index}: denied by rule {rule.id!r}",
                item_index=index,
                rule_id=rule.id,
            )
        return rule

    def evaluate(
        self,
        request: EvaluationRequest,
        usage: Mapping[str, Spent],
        deltas: tuple[Delta, ...] | None = None,
    ) -> Decision:
        """Judge the batch; `usage` must hold every key of limit_deltas(request).

        `deltas`: limit_deltas(request) when the caller has them already (they cost
        a pass over every item's totals)."""
        now = request.now
        if now.tzinfo is None or now.utcoffset() != timedelta(0):
            raise ValueError("EvaluationRequest.now must be an aware UTC datetime")
        if not request.items:
            return Deny(EMPTY_BATCH, "the batch has no items")
        caller_mask = self._callers.mask(request.caller)
        for group in request.caller_groups:
            caller_mask |= self._caller_groups.get(group, 0)
        base = self._all & caller_mask
        # Message rules judge messages (and every item of a request flagged as
        # message signing); transaction rules judge the rest.
        as_transaction = base & self._kinds.mask("transaction")
        # A deny list is about accounts, whatever is signed: transaction deny rules
        # that name destinations also refuse a message granting them spending (a
        # permit's spender), so no policy has to restate them for messages.
        as_message = base & (
            self._kinds.mask("message")
            | (self._denies & (self._dest_all | self._dest_any) & as_transaction)
        )
        clock = (now.weekday(), now.hour * 60 + now.minute)
        rules: list[_Rule] = []
        for index, intent in enumerate(request.items):
            # Before any rule: no rule can allow a signature that waits, or
            # stays valid, longer than the document's bounds.
            too_far = lock_breach(intent, now, self._locks)
            if too_far is not None:
                return Deny(
                    LOCK_TOO_FAR,
                    f"item {index}: {too_far.field}: {too_far.message}",
                    item_index=index,
                    details={"field": too_far.field},
                )
            is_message = request.message_signing or intent.message is not None
            verdict = self._judge(
                index, intent, as_message if is_message else as_transaction, now, clock
            )
            if isinstance(verdict, Deny):
                return verdict
            rules.append(verdict)
        breach = check(self.limit_deltas(request) if deltas is None else deltas, usage)
        if breach is not None:
            return Deny(
                LIMIT_EXCEEDED,
                f"velocity limit {breach.limit_id!r} would be exceeded",
                limit_id=breach.limit_id,
                remaining=breach.remaining(),
            )
        needed = [r for r in rules if r.approval is not None and r.action == "require_approval"]
        # One review per rule, however many of the batch's items it judged: the
        # endpoint sees the whole batch.
        reviews = {
            r.id: Review(r.id, r.review, r.approval, r.expires_after)
            for r in rules
            if r.review is not None and r.approval is not None
        }
        return _requirement(
            tuple(r.id for r in rules),
            [Quorum(r.approval.group, r.approval.approvals) for r in needed if r.approval],
            [r.approval.totp for r in needed if r.approval],
            [r.expires_after for r in needed],
            tuple(reviews.values()),
        )


def compile_policy(
    doc: PolicyDocument,
    *,
    activated_at: datetime,
    entry_since: Mapping[str, datetime] | None = None,
) -> CompiledPolicy:
    """Index a validated document for evaluation.

    `entry_since` maps document.since_key(...) to when that address first held
    that membership in an active version (governance.carry_entry_since keeps
    it across versions); a key it lacks starts its cooling-off at activated_at.
    """
    return CompiledPolicy(doc, activated_at=activated_at, entry_since=entry_since or {})


def evaluate(
    policy: CompiledPolicy, request: EvaluationRequest, usage: Mapping[str, Spent]
) -> Decision:
    """Judge a batch against a compiled policy (see CompiledPolicy.evaluate)."""
    return policy.evaluate(request, usage)
