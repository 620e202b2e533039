"""Offline verification of the hash chain of an exported log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from audit.record import AuditRecord


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """The first record at which the chain does not hold, and why."""

    seq: int
    reason: str


def verify_chain(encoded_records: Iterable[bytes]) -> ChainProblem | None:
    """Check that records are numbered 0.. without gaps and each links to the one before.

    Returns None when the chain holds. A chain alone cannot reveal a truncated
    tail; signed checkpoints (tree size + root) do.
    """
    prev_hash = b""
    for expected_seq, data in enumerate(encoded_records):
        try:
            record = AuditRecord.decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            return ChainProblem(expected_seq, f"record does not decode: {type(exc).__name__}")
        if record.encode() != data:
            return ChainProblem(record.seq, "record is not in canonical encoding")
        if record.seq != expected_seq:
            return ChainProblem(record.seq, f"expected sequence number {expected_seq}")
        if record.prev_hash != prev_hash:
            return ChainProblem(record.seq, "previous-hash link does not match the record before")
        prev_hash = record.leaf_hash()
    return None
