"""Lock-time bounds (issue 9 item 7): how far ahead a signed transaction may become valid.

Pure: the facts are on the intent (common.intent: lock_time, sequences,
expiration_ms), the bounds in the document (policies.document.LockBounds).
The Bitcoin constants are duplicated from signer/chains/bitcoin.py on purpose
(policies/ imports nothing from signer/); tests/unit/test_policy_locks.py
checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from custos.common.intent import Intent
from custos.policies.document import LockBounds, parse_duration

LOCK_TOO_FAR: Final = "lock_too_far"
# nLockTime below this is a block height, from it on a Unix time (BIP65's split).
LOCKTIME_THRESHOLD: Final = 500_000_000
# BIP68 relative lock-time fields of nSequence.
SEQ_DISABLE: Final = 1 << 31
SEQ_TYPE_SECONDS: Final = 1 << 22
SEQ_MASK: Final = 0xFFFF
SEQ_GRANULARITY_S: Final = 512
# An upper estimate of the Bitcoin mainnet height at a time: block 840,000
# (2024-04-20 00:09:27 UTC) plus one block per 9 minutes since (faster than
# the 10-minute target, so a wallet's lock at the real tip stays within bounds).
HEIGHT_ANCHOR: Final = (840_000, 1_713_571_767)
ESTIMATE_BLOCK_SECONDS: Final = 540


def height_upper_estimate(now_s: int) -> int:
    height, at = HEIGHT_ANCHOR
    return height + max(0, now_s - at) // ESTIMATE_BLOCK_SECONDS


@dataclass(frozen=True, slots=True)
class CompiledLocks:
    """A document's bounds, in seconds and blocks."""

    text: str  # the bound as written, for messages: "1h / 6 blocks"
    max_seconds: int
    max_blocks: int

    @classmethod
    def of(cls, bounds: LockBounds | None) -> CompiledLocks:
        bounds = bounds or LockBounds()
        seconds = int(parse_duration(bounds.max_ahead).total_seconds())
        return cls(
            f"locks.max_ahead = {bounds.max_ahead}, locks.max_ahead_blocks = "
            f"{bounds.max_ahead_blocks}",
            seconds,
            bounds.max_ahead_blocks,
        )


@dataclass(frozen=True, slots=True)
class LockBreach:
    field: str  # the request field, e.g. "bitcoin.lock_time" or "bitcoin.inputs[2].sequence"
    message: str


def lock_breach(intent: Intent, now: datetime, locks: CompiledLocks) -> LockBreach | None:
    """The first lock of `intent` further ahead of `now` than `locks` allow, if any.

    BIP68 locks are judged whatever the transaction version (the intent does
    not carry it): a version-1 input with relative-lock bits is refused too,
    which only errs on the careful side. The bounds only grow with time, so a
    batch held for approval and judged again later never fails on them anew.
    """
    now_s = int(now.timestamp())
    lock_time = intent.lock_time
    if lock_time >= LOCKTIME_THRESHOLD:
        if lock_time - now_s > locks.max_seconds:
            return LockBreach(
                f"{intent.chain}.lock_time",
                f"lock time {lock_time} (Unix time) is {lock_time - now_s} s ahead;"
                f" more than {locks.text} allows",
            )
    elif lock_time:
        latest = height_upper_estimate(now_s) + locks.max_blocks
        if lock_time > latest:
            return LockBreach(
                f"{intent.chain}.lock_time",
                f"lock time {lock_time} (height) is above {latest}, the highest block"
                f" expected within {locks.text}",
            )
    for index, sequence in enumerate(intent.sequences):
        if sequence & SEQ_DISABLE:
            continue
        amount = sequence & SEQ_MASK
        if sequence & SEQ_TYPE_SECONDS:
            ahead = amount * SEQ_GRANULARITY_S
            if ahead > locks.max_seconds:
                return LockBreach(
                    f"{intent.chain}.inputs[{index}].sequence",
                    f"relative lock of {ahead} s (BIP68); more than {locks.text} allows",
                )
        elif amount > locks.max_blocks:
            return LockBreach(
                f"{intent.chain}.inputs[{index}].sequence",
                f"relative lock of {amount} blocks (BIP68); more than {locks.text} allows",
            )
    if intent.expiration_ms:
        ahead_ms = intent.expiration_ms - now_s * 1000
        if ahead_ms > locks.max_seconds * 1000:
            return LockBreach(
                f"{intent.chain}.expiration",
                f"expiration {intent.expiration_ms} ms is {ahead_ms // 1000} s ahead;"
                f" more than {locks.text} allows",
            )
    return None
