"""Velocity limits: which budget buckets a batch draws on, how much, and whether it fits.

Pure arithmetic. The store does the atomic part: in one transaction it sums
the live reservations of each bucket (`Delta.key`) made after
`window_start(delta, now)`, calls `check`, and inserts one reservation per
delta. Released reservations (rejected or expired requests) no longer count;
spent ones count until they leave the window (tests/unit/test_policy_velocity.py
holds the reference definition of that sum, which the store's SQL and the
audit-log ledger, signer/usecases/budget_ledger.py, must agree with).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from custos.common.intent import ALLOWANCES, Intent
from custos.policies.document import (
    NETWORK_CLASSES,
    Limit,
    Scope,
    normalize_address,
    parse_duration,
)


@dataclass(frozen=True, slots=True)
class Spent:
    """What a bucket already holds in its window: reserved or spent, not released."""

    amount: int = 0
    count: int = 0


@dataclass(frozen=True, slots=True)
class Delta:
    """What one batch adds to one bucket, with that bucket's limit."""

    limit_id: str
    key: str  # bucket identity: the store's reservation key
    window: timedelta
    amount: int
    count: int
    max_amount: int | None
    max_count: int | None


@dataclass(frozen=True, slots=True)
class Breach:
    """A bucket the batch would overfill; `remaining` is what is left before the batch."""

    limit_id: str
    key: str
    window: timedelta
    remaining_amount: int | None
    remaining_count: int | None

    def remaining(self) -> dict[str, int]:
        """Machine-readable remaining budget, as a denial reports it."""
        out = {"window_seconds": int(self.window.total_seconds())}
        if self.remaining_amount is not None:
            out["amount"] = self.remaining_amount
        if self.remaining_count is not None:
            out["count"] = self.remaining_count
        return out


@dataclass(frozen=True, slots=True)
class ScopeFilter:
    """A compiled Scope: group names resolved to members, addresses normalized."""

    callers: frozenset[str] | None
    caller_groups: frozenset[str]
    keys: frozenset[str] | None
    chains: frozenset[str] | None
    networks: frozenset[str] | None
    assets: frozenset[str] | None
    wallets: frozenset[str] | None = None
    wallet_accounts: frozenset[tuple[str, int]] | None = None

    @classmethod
    def of(
        cls,
        scope: Scope,
        identity_groups: Mapping[str, Sequence[str]],
        key_groups: Mapping[str, Sequence[str]],
    ) -> ScopeFilter:
        """Compile a Scope against the document's groups."""
        callers: frozenset[str] | None = None
        if scope.callers is not None or scope.caller_groups is not None:
            members = (m for g in scope.caller_groups or () for m in identity_groups.get(g, ()))
            callers = frozenset((*(scope.callers or ()), *members))
        keys: frozenset[str] | None = None
        if scope.keys is not None or scope.key_groups is not None:
            members = (k for g in scope.key_groups or () for k in key_groups.get(g, ()))
            keys = frozenset((*(scope.keys or ()), *members))
        return cls(
            callers=callers,
            caller_groups=frozenset(scope.caller_groups or ()),
            keys=keys,
            chains=_opt_set(scope.chains),
            networks=_networks(scope),
            assets=_opt_set(normalize_address(a) for a in scope.assets) if scope.assets else None,
            wallets=_opt_set(scope.wallets),
            wallet_accounts=None
            if scope.wallet_accounts is None
            else frozenset((w.wallet, w.account) for w in scope.wallet_accounts),
        )

    def wallet_holds(self, intent: Intent) -> bool:
        """Whether the item's key is of the wallets and wallet accounts named (if any)."""
        if self.wallets is not None and intent.wallet_id not in self.wallets:
            return False
        return (
            self.wallet_accounts is None
            or (
                intent.wallet_id,
                intent.wallet_account,
            )
            in self.wallet_accounts
        )

    def holds(self, caller: str, groups: frozenset[str], intent: Intent) -> bool:
        """Whether caller (with its resolved groups), key, chain and network are in scope."""
        if self.callers is not None and not (
            caller in self.callers or not self.caller_groups.isdisjoint(groups)
        ):
            return False
        if self.keys is not None and intent.key_id not in self.keys:
            return False
        if not self.wallet_holds(intent):
            return False
        if self.chains is not None and intent.chain not in self.chains:
            return False
        return self.networks is None or intent.network in self.networks


def _networks(scope: Scope) -> frozenset[str] | None:
    """The networks a scope accepts: `networks` and `network_classes` both hold."""
    networks = _opt_set(scope.networks)
    if scope.network_classes is None:
        return networks
    in_classes = frozenset(n for c in scope.network_classes for n in NETWORK_CLASSES[c])
    return in_classes if networks is None else networks & in_classes


def _opt_set(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def moved_totals(intent: Intent) -> dict[str, int]:
    """Per normalized asset, what the intent moves or lets others move; {} when nothing.

    Non-change transfers (a decoded transfer or transferFrom is one), plus the
    amount of a decoded allowance (approve, increaseAllowance, a message's permit) on its token:
    the spender can move it without another signature; plus, on the native
    asset, the sun a Tron stake or delegation takes out of the spendable balance. An undecoded call
    moves an unknown amount, which no sum can hold; policy rules refuse to
    judge its amount (policies.evaluate).
    """
    totals: dict[str, int] = {}
    for transfer in intent.transfers:
        if not transfer.is_change:
            asset = normalize_address(transfer.asset)
            totals[asset] = totals.get(asset, 0) + transfer.amount
    for call in intent.calls:
        if call.method in ALLOWANCES:
            token = normalize_address(call.contract)
            totals[token] = totals.get(token, 0) + int(dict(call.args).get("amount", "0"))
    # A stake or a delegation takes TRX out of the spendable balance
    # (common.intent.CHARGED_STAKING).
    if intent.staking is not None and intent.staking.charged:
        totals["native"] = totals.get("native", 0) + intent.staking.charged
    return totals


def asset_totals(intent: Intent) -> dict[str, int]:
    """moved_totals, or {"native": 0} when nothing moves.

    The empty case still names an asset so that a transaction moving no value
    (an undecoded contract call) counts toward per-asset count limits.
    """
    return moved_totals(intent) or {"native": 0}


def charged_totals(intent: Intent) -> dict[str, int]:
    """What velocity limits charge: asset_totals plus the maximum fee on the native asset.

    A fee is spent budget: a 0.01 ETH payment that may burn 100 ETH in gas
    draws 100.01 ETH from the key's native limits.
    """
    totals = asset_totals(intent)
    if intent.fee:
        totals["native"] = totals.get("native", 0) + intent.fee
    return totals


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    """A Limit ready to compute deltas."""

    id: str
    window: timedelta
    per: frozenset[str]
    scope: ScopeFilter
    max_amount: int | None
    max_count: int | None

    @classmethod
    def of(
        cls,
        limit: Limit,
        identity_groups: Mapping[str, Sequence[str]],
        key_groups: Mapping[str, Sequence[str]],
    ) -> CompiledLimit:
        """Compile a Limit against the document's groups."""
        return cls(
            id=limit.id,
            window=parse_duration(limit.window),
            per=frozenset(limit.per),
            scope=ScopeFilter.of(limit.scope, identity_groups, key_groups),
            max_amount=limit.max_amount,
            max_count=limit.max_count,
        )

    def bucket(self, caller: str, intent: Intent, asset: str | None) -> str:
        """The bucket key: the limit id plus the values of its `per` dimensions.

        Limit ids, key ids, chains, networks and assets cannot contain "|" (the
        document schema and the chain adapters see to it); a caller identity
        can, so it is escaped, keeping two buckets from sharing a key.
        """
        key = self.id
        if "key" in self.per:
            key += "|key=" + intent.key_id
        if "wallet" in self.per:
            # Wallet and key ids hold no ":": a plain key is a wallet of its own, apart.
            key += "|wallet=" + (intent.wallet_id or "key:" + intent.key_id)
        if asset is not None:
            # "native" on two chains is two assets; so is a token on two networks.
            key += f"|asset={intent.chain}:{intent.network}:{asset}"
        if "caller" in self.per:
            key += "|caller=" + caller.replace("%", "%25").replace("|", "%7C")
        return key


def batch_deltas(
    limits: Sequence[CompiledLimit],
    caller: str,
    caller_groups: frozenset[str],
    items: Sequence[Intent],
) -> tuple[Delta, ...]:
    """Per bucket, what the whole batch adds: amounts summed, one count per transaction.

    Amounts are charged_totals: transfers, allowances (a message's permits
    included) and, on the native
    asset, the maximum fee (so a token transfer counts on native limits too).

    `caller_groups` must already include the groups the policy document puts
    the caller in (CompiledPolicy.identity_groups_of).
    """
    sums: dict[str, list[int]] = {}
    owners: dict[str, CompiledLimit] = {}
    # A message moves nothing unless it grants an allowance (a Permit): only
    # then is it charged, as an approve is; other messages draw on no limit.
    items = [i for i in items if i.message is None or i.message.grants]
    all_totals = [charged_totals(intent) for intent in items]
    for limit in limits:
        for intent, intent_totals in zip(items, all_totals, strict=True):
            if not limit.scope.holds(caller, caller_groups, intent):
                continue
            totals = intent_totals
            if limit.scope.assets is not None:
                totals = {a: v for a, v in totals.items() if a in limit.scope.assets}
                if not totals:
                    continue
            if "asset" in limit.per:
                buckets = [(limit.bucket(caller, intent, a), v) for a, v in totals.items()]
            else:
                # Without "asset" in per a limit has no max_amount: only the count matters.
                buckets = [(limit.bucket(caller, intent, None), 0)]
            for key, amount in buckets:
                entry = sums.setdefault(key, [0, 0])
                entry[0] += amount
                entry[1] += 1
                owners[key] = limit
    return tuple(
        Delta(
            limit_id=owners[key].id,
            key=key,
            window=owners[key].window,
            amount=amount,
            count=count,
            max_amount=owners[key].max_amount,
            max_count=owners[key].max_count,
        )
        for key, (amount, count) in sums.items()
    )


def window_start(delta: Delta, now: datetime) -> datetime:
    """Reservations made strictly after this instant count toward the bucket."""
    return now - delta.window


def remaining(delta: Delta, spent: Spent) -> tuple[int | None, int | None]:
    """(amount, count) still available in the bucket before this delta; None when unlimited."""
    amount = None if delta.max_amount is None else max(delta.max_amount - spent.amount, 0)
    count = None if delta.max_count is None else max(delta.max_count - spent.count, 0)
    return amount, count


def check(deltas: Iterable[Delta], usage: Mapping[str, Spent]) -> Breach | None:
    """The first bucket the batch would overfill, or None when every delta fits.

    `usage` must hold every delta's key (a missing key raises KeyError: the
    caller forgot to read that bucket, and guessing zero would fail open).
    """
    for delta in deltas:
        spent = usage[delta.key]
        amount_left, count_left = remaining(delta, spent)
        over_amount = amount_left is not None and delta.amount > amount_left
        over_count = count_left is not None and delta.count > count_left
        if over_amount or over_count:
            return Breach(delta.limit_id, delta.key, delta.window, amount_left, count_left)
    return None
