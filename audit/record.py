"""Audit records and their canonical byte encoding.

A record's canonical encoding is UTF-8 JSON with sorted keys, no insignificant
whitespace and ASCII escapes (json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=True)) of {"seq", "ts_ms", "kind", "actor", "fields", "prev"}, with
`prev` the hex hash of the previous record ("" for the first). A record's hash
is the RFC 6962 leaf hash SHA-256(0x00 || encoding), so the hash chain and a
Merkle tree over the same records share one leaf hash.

Fields hold identifiers, digests and decisions; never PINs, secrets or codes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FieldValue = str | int | bool | None | list[Any] | dict[str, Any]

LEAF_PREFIX = b"\x00"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Something that happened, before it is placed in the log."""

    kind: str  # dotted, e.g. "key.created", "sign.authorized"
    actor: str  # identity subject, or "system"
    fields: Mapping[str, FieldValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An event placed in the log at `seq`, chained to the record before it."""

    seq: int
    ts_ms: int
    event: AuditEvent
    prev_hash: bytes  # b"" for seq 0

    def encode(self) -> bytes:
        doc = {
            "seq": self.seq,
            "ts_ms": self.ts_ms,
            "kind": self.event.kind,
            "actor": self.event.actor,
            "fields": dict(self.event.fields),
            "prev": self.prev_hash.hex(),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def leaf_hash(self) -> bytes:
        return hashlib.sha256(LEAF_PREFIX + self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> AuditRecord:
        doc = json.loads(data)
        return cls(
            seq=doc["seq"],
            ts_ms=doc["ts_ms"],
            event=AuditEvent(doc["kind"], doc["actor"], doc["fields"]),
            prev_hash=bytes.fromhex(doc["prev"]),
        )


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a log: where the next record attaches."""

    seq: int
    hash: bytes


def next_record(head: ChainHead | None, event: AuditEvent, ts_ms: int) -> AuditRecord:
    """The record that follows `head` (None for the first record of the log)."""
    if head is None:
        return AuditRecord(seq=0, ts_ms=ts_ms, event=event, prev_hash=b"")
    return AuditRecord(seq=head.seq + 1, ts_ms=ts_ms, event=event, prev_hash=head.hash)
