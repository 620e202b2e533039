"""verify_export: every kind of tampering is caught and named; an intact log passes.

The log here has 50 records and checkpoints at sizes 10, 20, 30, 40, 50,
signed by a local Ed25519 key as the HSM's audit key would sign them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from custos.audit.checkpoint import Checkpoint, public_key_pem, sign_note
from custos.audit.export import ExportError, read_export, write_export
from custos.audit.merkle import consistency_proof, verify_consistency
from custos.audit.merkle import root as merkle_root
from custos.audit.record import AuditEvent, AuditRecord, ChainHead, next_record
from custos.audit.verify import VerificationReport, verify_chain, verify_export, verify_export_files

NAME = "custos.example/audit"
KEY = Ed25519PrivateKey.generate()
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
SIZES = (10, 20, 30, 40, 50)


def _event(i: int) -> AuditEvent:
    tx = hashlib.sha256(b"tx %d" % i).hexdigest()
    items = [{"key_id": "eth-hot-1", "chain": "ethereum", "tx_id": "0x" + tx}]
    return AuditEvent("sign.signed", "CN=payments", {"request_id": f"req-{i:04d}", "items": items})


def _chain_from(head: ChainHead | None, events: Sequence[AuditEvent]) -> list[bytes]:
    """Records chained after `head`, hashes and all: what a forger with the export can compute."""
    out = []
    for event in events:
        record = next_record(head, event, 1_760_000_000_000 + len(out))
        data = record.encode()
        out.append(data)
        head = ChainHead(record.seq, hashlib.sha256(b"\x00" + data).digest())
    return out


def _log(n: int = 50) -> list[bytes]:
    return _chain_from(None, [_event(i) for i in range(n)])


def _head(records: list[bytes]) -> ChainHead:
    return ChainHead(len(records) - 1, hashlib.sha256(b"\x00" + records[-1]).digest())


def _note(
    records: Sequence[bytes], size: int, key: Ed25519PrivateKey = KEY, origin: str = NAME
) -> str:
    leaves = [hashlib.sha256(b"\x00" + r).digest() for r in records[:size]]
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sign_note(Checkpoint(origin, size, merkle_root(leaves)), NAME, raw, key.sign)


GENUINE = _log()
NOTES = [_note(GENUINE, s) for s in SIZES]


def _verify(records: Sequence[bytes], notes: Sequence[str] = NOTES) -> VerificationReport:
    return verify_export(iter(records), KEY.public_key(), notes, NAME)


def _problems(report: VerificationReport) -> str:
    return "\n".join(report.problems)


def test_intact_log_passes() -> None:
    report = _verify(GENUINE)
    assert report.ok, report.summary()
    assert (report.records, report.checkpoints_verified, report.trusted_size) == (50, 5, 50)
    assert report.first_bad_seq is None
    assert report.problems == []
    assert report.notes == []
    assert _verify(GENUINE, list(reversed(NOTES))).ok  # any order


def test_intact_export_files_pass(tmp_path: Path) -> None:
    export = tmp_path / "audit.jsonl"
    assert write_export(GENUINE, export) == 50
    assert export.read_bytes() == b"".join(r + b"\n" for r in GENUINE)
    assert list(read_export(export)) == GENUINE
    pem = tmp_path / "audit.pem"
    pem.write_bytes(public_key_pem(RAW))
    paths = []
    for size, note in zip(SIZES, NOTES, strict=True):
        paths.append(tmp_path / f"checkpoint-{size}")
        paths[-1].write_text(note, encoding="utf-8")
    report = verify_export_files(export, pem, paths, NAME)
    assert report.ok
    assert report.checkpoints_verified == 5
    assert report.summary().startswith("OK: 50 records, 5 checkpoints verified, records 0..49")


def test_successive_checkpoints_are_consistent_as_proofs_show() -> None:
    # verify_export argues consistency from the export's roots; a consistency
    # proof built from the same leaves agrees, checkpoint to checkpoint.
    leaves = [hashlib.sha256(b"\x00" + r).digest() for r in GENUINE]
    for small, large in itertools.pairwise(SIZES):
        proof = consistency_proof(leaves, small, large)
        roots = merkle_root(leaves[:small]), merkle_root(leaves[:large])
        assert verify_consistency(small, large, *roots, proof)


@pytest.mark.parametrize("covered", [True, False], ids=["fast path", "full decode"])
def test_every_single_byte_change_names_that_record(covered: bool) -> None:
    # With checkpoints the covered records take the fast path; with none
    # covering, every record is fully decoded. Both name record 23.
    notes = NOTES if covered else [_note(GENUINE, 10)]
    original = GENUINE[23]
    for pos in range(len(original)):
        for replacement in {b"0"[0], b"a"[0], b'"'[0]} - {original[pos]}:
            log = list(GENUINE)
            log[23] = original[:pos] + bytes([replacement]) + original[pos + 1 :]
            report = _verify(log, notes)
            assert not report.ok
            assert report.first_bad_seq == 23, (pos, replacement, report.problems)
            assert "record 23" in report.problems[0]


def test_changed_record_is_named_and_its_checkpoint_range_distrusted() -> None:
    log = list(GENUINE)
    log[23] = log[23].replace(b"req-0023", b"req-9999")
    report = _verify(log)
    assert report.first_bad_seq == 23
    assert report.problems[0].startswith("record 23 was altered")
    assert "checkpoint #3 (size 30) does not match the export: records 20..29" in _problems(report)
    assert "2 later checkpoints disagree too" in _problems(report)
    assert report.notes == ["records 20..49 are not proven by any checkpoint"]
    assert report.trusted_size == 20
    assert report.checkpoints_verified == 2


def test_changed_prev_field_names_that_record() -> None:
    log = list(GENUINE)
    doc = json.loads(log[23])
    doc["prev"] = hashlib.sha256(b"elsewhere").hexdigest()
    log[23] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    report = _verify(log)
    assert report.first_bad_seq == 23
    assert "record 23 was altered: it does not link to record 22" in report.problems[0]


def test_deleted_record_is_named() -> None:
    log = list(GENUINE)
    del log[23]
    report = _verify(log)
    assert report.first_bad_seq == 23
    assert report.problems[0].startswith("record 23 is missing")
    assert "checkpoint #5 covers 50 records, export holds 49" in _problems(report)


def test_swapped_records_are_named() -> None:
    log = list(GENUINE)
    log[23], log[24] = log[24], log[23]
    report = _verify(log)
    assert report.first_bad_seq == 23
    assert "record 24 comes where record 23 belongs" in report.problems[0]
    assert report.trusted_size == 20


def test_duplicated_record_is_named() -> None:
    log = [*GENUINE[:24], GENUINE[23], *GENUINE[24:]]
    report = _verify(log)
    assert report.first_bad_seq == 24
    assert "record 23 appears again where record 24 belongs" in report.problems[0]


def test_truncated_tail_is_caught_by_the_signed_checkpoint() -> None:
    report = _verify(GENUINE[:45])
    assert not report.ok
    assert report.problems == [
        "checkpoint #5 covers 50 records, export holds 45: the tail was truncated"
    ]
    assert report.first_bad_seq == 45
    assert report.trusted_size == 40
    # The chain alone cannot see it: every remaining link holds.
    assert verify_chain(GENUINE[:45]) is None


def test_forged_suffix_without_a_covering_checkpoint_is_unproven_not_proven() -> None:
    # Anyone who can edit the export can append records with correct hashes.
    # Without a checkpoint covering them the verifier cannot tell them from
    # genuine records written after the last checkpoint: it passes the export,
    # but proves only records 0..49 and says that the rest is vouched for by nothing.
    forged = GENUINE + _chain_from(_head(GENUINE), [_event(1000 + i) for i in range(5)])
    report = _verify(forged)
    assert report.ok
    assert report.trusted_size == 50
    assert report.records == 55
    assert report.notes == [
        "records 50..54 are not covered by a verified checkpoint: their hash chain holds, "
        "but nothing signed vouches for them, and a suffix appended by whoever can edit "
        "the export would look the same"
    ]


def test_forged_suffix_with_a_checkpoint_signed_by_another_key_is_rejected() -> None:
    forged = GENUINE + _chain_from(_head(GENUINE), [_event(1000 + i) for i in range(5)])
    forger = Ed25519PrivateKey.generate()
    report = _verify(forged, [*NOTES, _note(forged, 55, key=forger)])
    assert not report.ok
    text = _problems(report)
    assert f"checkpoint #6 (claims 55 records): no signature by key {NAME}" in text
    assert "records 50..54 are not covered by a valid checkpoint: checkpoint #6" in text
    assert report.trusted_size == 50
    assert report.first_bad_seq is None


def test_rewritten_and_rechained_records_are_caught_only_by_the_checkpoint() -> None:
    # Records 45..49 rewritten and re-chained: the chain holds, so the only
    # evidence is the root mismatch, and the report names the checkpoint and range.
    forged = GENUINE[:45] + _chain_from(_head(GENUINE[:45]), [_event(2000 + i) for i in range(5)])
    assert verify_chain(forged) is None
    report = _verify(forged)
    assert not report.ok
    assert report.first_bad_seq is None
    assert report.problems == [
        "checkpoint #5 (size 50) does not match the export: records 40..49 cannot be trusted "
        "(the root of the export's first 50 records differs from the signed root)"
    ]
    assert report.trusted_size == 40


def test_checkpoint_signed_by_another_key_is_rejected() -> None:
    other = Ed25519PrivateKey.generate()
    report = _verify(GENUINE, [*NOTES[:2], _note(GENUINE, 30, key=other), *NOTES[3:]])
    assert not report.ok
    assert report.problems[0].startswith(
        f"checkpoint #3 (claims 30 records): no signature by key {NAME}"
    )
    assert report.checkpoints_verified == 4
    assert report.trusted_size == 50


def test_inconsistent_checkpoints_signed_by_the_log_key_are_reported() -> None:
    other_history = _log(20)
    other_history[5] = _chain_from(None, [_event(i) for i in range(5)] + [_event(777)])[5]
    fork = _note(other_history, 20)
    report = _verify(GENUINE, [*NOTES, fork])
    assert "checkpoints #2 and #6 both sign size 20 with different roots" in _problems(report)
    report = _verify(GENUINE, [NOTES[2], fork])
    assert "checkpoint #2 (size 20) contradicts a larger checkpoint" in _problems(report)


def test_no_checkpoint_proves_nothing() -> None:
    report = _verify(GENUINE, [])
    assert not report.ok
    assert report.problems == [
        f"no valid checkpoint signed by {NAME}: nothing vouches for the export"
    ]


def test_checkpoint_of_another_log_is_refused() -> None:
    report = verify_export(
        GENUINE,
        KEY.public_key(),
        [_note(GENUINE, 50, origin="other.example/log")],
        NAME,
        origin=NAME,
    )
    assert not report.ok
    assert "checkpoint #1 is for log 'other.example/log', not" in report.problems[0]


def test_uncovered_records_are_fully_decoded() -> None:
    log = list(GENUINE)
    log[45] = json.dumps(json.loads(log[45]), indent=1).encode()  # same data, not canonical
    report = _verify(log, NOTES[:4])  # nothing covers 40..49
    assert report.first_bad_seq == 45
    assert "record 45 is not in canonical encoding" in report.problems[0]
    log[45] = b"not json at all"
    assert "record 45 does not decode" in _verify(log, NOTES[:4]).problems[0]


def test_altered_last_record_link_is_named() -> None:
    log = list(GENUINE[:40])
    log[38] = log[38].replace(b"req-0038", b"req-0000")
    report = _verify(log, NOTES[:4])
    assert report.first_bad_seq == 38
    assert "record 39 does not link to record 38: one of them was altered" in report.problems[0]


def test_export_cut_inside_a_record_is_reported(tmp_path: Path) -> None:
    export = tmp_path / "audit.jsonl"
    write_export(GENUINE, export)
    export.write_bytes(export.read_bytes()[:-20])
    with pytest.raises(ExportError, match="cut short"):
        list(read_export(export))
    report = verify_export(read_export(export), KEY.public_key(), NOTES, NAME)
    assert report.records == 49
    assert report.first_bad_seq == 49
    assert any("cannot be read from record 49 on" in p for p in report.problems)


def test_write_export_refuses_raw_newlines(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="raw newline"):
        write_export([b"{}", b"{\n}"], tmp_path / "x.jsonl")


def test_empty_log_with_an_empty_checkpoint_passes() -> None:
    report = _verify([], [_note([], 0)])
    assert report.ok
    assert report.records == 0
    assert report.checkpoints_verified == 1


def test_random_tampering_is_always_detected() -> None:
    rng = random.Random(1)
    for _ in range(60):
        log = list(GENUINE)
        kind = rng.choice(["byte", "delete", "swap", "truncate"])
        i = rng.randrange(1, 49)
        if kind == "byte":
            pos = rng.randrange(len(log[i]))
            log[i] = log[i][:pos] + bytes([(log[i][pos] + 1) % 128 or 1]) + log[i][pos + 1 :]
        elif kind == "delete":
            del log[i]
        elif kind == "swap":
            log[i], log[i + 1] = log[i + 1], log[i]
        else:
            log = log[:i]
        report = _verify(log)
        assert not report.ok
        assert report.first_bad_seq == i, (kind, i, report.problems)


def test_decoded_records_round_trip() -> None:
    assert [AuditRecord.decode(r).encode() for r in GENUINE] == GENUINE


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "x.jsonl"
    with pytest.raises(ValueError, match="raw newline"):
        write_export([b"{}", b"{\n}"], target)
    assert list(tmp_path.iterdir()) == []
