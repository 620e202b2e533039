"""The hash chain of audit records and its offline check."""

from __future__ import annotations

import hashlib
import json

from custos.audit.record import AuditEvent, AuditRecord, ChainHead, next_record
from custos.audit.verify import verify_chain


def _log(n: int) -> list[bytes]:
    head: ChainHead | None = None
    out = []
    for i in range(n):
        record = next_record(head, AuditEvent("test.event", "tester", {"i": i}), 1_700_000_000_000)
        out.append(record.encode())
        head = ChainHead(record.seq, record.leaf_hash())
    return out


def test_intact_chain_verifies() -> None:
    assert verify_chain(_log(10)) is None


def test_leaf_hash_is_rfc6962_leaf_of_the_canonical_encoding() -> None:
    data = _log(1)[0]
    record = AuditRecord.decode(data)
    assert record.leaf_hash() == hashlib.sha256(b"\x00" + data).digest()
    doc = json.loads(data)
    assert list(doc) == sorted(doc)  # sorted keys: one encoding per record


def test_changed_byte_is_detected_at_that_record() -> None:
    log = _log(5)
    log[2] = log[2].replace(b'"i":2', b'"i":7')
    problem = verify_chain(log)
    assert problem is not None
    # Record 3 no longer links to record 2, while record 4 still links to 3:
    # the altered record is 2 itself, and the verifier names it.
    assert problem.seq == 2
    assert "record 2 was altered" in problem.reason


def test_deleted_record_is_detected() -> None:
    log = _log(5)
    del log[1]
    problem = verify_chain(log)
    assert problem is not None
    assert problem.seq == 1
    assert "record 1 is missing" in problem.reason


def test_swapped_records_are_detected() -> None:
    log = _log(5)
    log[1], log[2] = log[2], log[1]
    problem = verify_chain(log)
    assert problem is not None
    assert problem.seq == 1
    assert "record 2 comes where record 1 belongs" in problem.reason


def test_non_canonical_encoding_is_detected() -> None:
    log = _log(3)
    log[0] = json.dumps(json.loads(log[0]), indent=1).encode()
    problem = verify_chain(log)
    assert problem is not None
    assert "canonical" in problem.reason
