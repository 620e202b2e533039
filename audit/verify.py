"""Offline verification of an exported audit log: hash chain, Merkle tree, signed checkpoints.

What it proves: a checkpoint whose signature verifies and whose root equals the
root of the export's first N records proves those N records are exactly the
bytes the audit key signed for (nothing changed, missing, moved or inserted,
short of a SHA-256 collision or a stolen key). The hash chain names the first
record that does not fit, but alone proves nothing against a rewrite that
re-chains everything after it: then only a covering checkpoint catches it, and
the report names that checkpoint and its range. What it cannot prove: records
after the last verified checkpoint are vouched for by nothing, since a suffix
appended and re-chained by whoever can edit the export looks exactly like
genuine later records. The report says so (notes, trusted_size) without calling
it tampering; an export meant for an auditor should end at a signed checkpoint.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custos.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_public_key_pem,
    open_note,
    peek_note,
)
from custos.audit.export import ExportError, read_export
from custos.audit.merkle import EMPTY_ROOT, TreeBuilder
from custos.audit.record import AuditRecord

# The canonical encoding sorts keys, so a record always ends with its top-level
# prev, seq and ts_ms (the greatest keys): `,"prev":"<hex>","seq":<n>,"ts_ms":<n>}`.
# In valid JSON none of those quotes can be escaped or sit inside a string (the
# byte before each is not a backslash, and a raw quote ends a string), and the
# final brace closes the top-level object, so reading that tail gives prev and
# seq exactly as json.loads would, without decoding the whole record. Bytes
# that are not valid JSON can pass this only inside a range that a checkpoint
# then proves (or disproves) byte for byte; records no checkpoint covers are
# fully decoded and checked for canonical form.
_TAIL = re.compile(
    rb',"prev":"([0-9a-f]{64}|)","seq":(0|[1-9][0-9]*),"ts_ms":(?:0|[1-9][0-9]*)\}\Z'
)
_PREV_KEY = b',"prev":"'

# How the verifier treats the next record (see _Chain.examine).
_FAST, _SLOW, _STOP = 0, 1, 2


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """The first record at which the chain does not hold, and why."""

    seq: int
    reason: str


def _prev_link(data: bytes) -> bytes | None:
    """The `prev` hash a record holds, or None when it cannot be read."""
    q = data.rfind(_PREV_KEY)
    m = _TAIL.match(data, q) if q >= 0 else None
    if m is not None:
        return binascii.unhexlify(m[1])
    try:
        return AuditRecord.decode(data).prev_hash
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _well_typed(record: AuditRecord) -> bool:
    ints = (record.seq, record.ts_ms)
    return (
        all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)
        and isinstance(record.event.kind, str)
        and isinstance(record.event.actor, str)
        and isinstance(record.event.fields, dict)
    )


class _Chain:
    """The hash-chain check's slow path: full decoding and naming the first bad record."""

    def __init__(self) -> None:
        self.problem: ChainProblem | None = None
        self._pending: int | None = None  # k: record k does not link to record k-1

    def _fail(self, seq: int, reason: str) -> int:
        self.problem = ChainProblem(seq, reason)
        return _STOP

    def examine(self, pos: int, data: bytes, prev_leaf: bytes) -> int:
        """Check the record at position `pos` (its expected seq) in full; the next mode."""
        k = self._pending
        if k is not None:
            # Record k does not link to k-1. If k+1 links to k, record k is as
            # its successor committed to it, so k-1 is the altered one; if not,
            # record k itself changed (a changed prev field breaks both links).
            if _prev_link(data) == prev_leaf:
                why = f"its hash no longer matches the link that record {k} holds"
                return self._fail(k - 1, f"record {k - 1} was altered: {why}")
            why = f"it does not link to record {k - 1}, and record {k + 1} does not link to it"
            return self._fail(k, f"record {k} was altered: {why}")
        try:
            record = AuditRecord.decode(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            why = f"does not decode ({type(exc).__name__}): altered or corrupted"
            return self._fail(pos, f"record {pos} {why}")
        if not _well_typed(record):
            return self._fail(pos, f"record {pos} has fields of the wrong type: altered")
        if record.encode() != data:
            why = "is not in canonical encoding: its bytes were altered"
            return self._fail(pos, f"record {pos} {why}")
        seq = record.seq
        if seq != pos and pos > 0 and record.prev_hash == prev_leaf:
            why = f"links to record {pos - 1}: its seq field was altered"
            return self._fail(pos, f"record {pos} carries sequence number {seq} although it {why}")
        if seq > pos:
            gone = f"record {pos} is" if seq == pos + 1 else f"records {pos}..{seq - 1} are"
            why = f"missing or out of place: record {seq} comes where record {pos} belongs"
            return self._fail(pos, f"{gone} {why}")
        if seq < pos:
            why = "records were reordered or duplicated"
            return self._fail(pos, f"record {seq} appears again where record {pos} belongs: {why}")
        if record.prev_hash != prev_leaf:
            if pos == 0:
                return self._fail(0, "record 0 does not start the chain: its prev is not empty")
            self._pending = pos
            return _SLOW
        return _FAST

    def finish(self) -> None:
        """Settle a broken link found at the very last record."""
        k = self._pending
        if k is not None and self.problem is None:
            why = f"does not link to record {k - 1}: one of them was altered"
            self._fail(k - 1, f"record {k} {why}")


def verify_chain(encoded_records: Iterable[bytes]) -> ChainProblem | None:
    """Check that records are numbered 0.. without gaps, decode canonically and link up.

    Returns None when the chain holds, else the first altered, missing or
    misplaced record. A chain alone cannot reveal a truncated tail or a
    re-chained rewrite; signed checkpoints (verify_export) do.
    """
    chain = _Chain()
    prev_leaf = b""
    for pos, data in enumerate(encoded_records):
        leaf = hashlib.sha256(b"\x00" + data).digest()
        if chain.examine(pos, data, prev_leaf) == _STOP:
            return chain.problem
        prev_leaf = leaf
    chain.finish()
    return chain.problem


@dataclass
class VerificationReport:
    """The outcome of verifying an export against signed checkpoints."""

    ok: bool
    records: int
    checkpoints_verified: int  # signature valid and root equal to the export's at its size
    problems: list[str]
    first_bad_seq: int | None  # None when no single record can be named
    trusted_size: int = 0  # records 0..trusted_size-1 are proven by a verified checkpoint
    notes: list[str] = field(default_factory=list)  # limits of the proof, not tampering

    def summary(self) -> str:
        """A few plain lines for a terminal."""
        proven = f"records 0..{self.trusted_size - 1}" if self.trusted_size else "no record"
        lines = [
            f"{'OK' if self.ok else 'FAILED'}: {self.records} records, "
            f"{self.checkpoints_verified} checkpoints verified, {proven} proven"
        ]
        if self.first_bad_seq is not None:
            lines.append(f"first bad record: {self.first_bad_seq}")
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Signed:
    number: int  # 1-based position in the caller's list, to name it in the report
    checkpoint: Checkpoint


def _open_all(
    notes: Sequence[str],
    key_name: str,
    public_key: Ed25519PublicKey,
    origin: str | None,
    problems: list[str],
) -> tuple[list[_Signed], list[tuple[int, int]]]:
    """Checkpoints whose signature verifies, and (number, claimed size) of forged ones."""
    signed: list[_Signed] = []
    forged: list[tuple[int, int]] = []
    for number, text in enumerate(notes, 1):
        try:
            signed.append(_Signed(number, open_note(text, key_name, public_key)))
        except CheckpointError as exc:
            claimed = peek_note(text)
            claim = f" (claims {claimed.size} records)" if claimed else ""
            problems.append(f"checkpoint #{number}{claim}: {exc}")
            if claimed:
                forged.append((number, claimed.size))
    want = origin if origin is not None else (signed[0].checkpoint.origin if signed else "")
    for s in [s for s in signed if s.checkpoint.origin != want]:
        problems.append(
            f"checkpoint #{s.number} is for log {s.checkpoint.origin!r}, not {want!r}: ignored"
        )
        signed.remove(s)
    by_size: dict[int, _Signed] = {}
    for s in signed:
        other = by_size.setdefault(s.checkpoint.size, s)
        if other.checkpoint.root != s.checkpoint.root:
            problems.append(
                f"checkpoints #{other.number} and #{s.number} both sign size "
                f"{s.checkpoint.size} with different roots: the audit key signed two "
                "different histories of the log"
            )
    return sorted(signed, key=lambda s: s.checkpoint.size), forged


@dataclass
class _Pass:
    """What one streaming pass over the export found."""

    records: int
    roots: dict[int, bytes]  # export root at each signed checkpoint size it reached
    chain: ChainProblem | None
    read_error: str | None


def _stream(encoded_records: Iterable[bytes], sizes: list[int]) -> _Pass:
    """Hash, chain-check and Merkle-build the records; roots at the given (sorted) sizes."""
    # Records past every signed size are proven by nothing, so they get the
    # full decode; below it the fast path plus the root comparison decide.
    strict_from = sizes[-1] if sizes else 0
    roots: dict[int, bytes] = {0: EMPTY_ROOT}
    pending_sizes = iter([s for s in sizes if s > 0])
    next_size = next(pending_sizes, -1)
    chain = _Chain()
    builder = TreeBuilder()
    append = builder.append
    sha256 = hashlib.sha256
    hexlify = binascii.hexlify
    mode = _FAST
    prev_hex = b""
    pos = 0
    read_error = None
    try:
        for data in encoded_records:
            leaf = sha256(b"\x00" + data).digest()
            if mode == _FAST and pos < strict_from:
                # The record must end with exactly the prev and seq it should
                # hold, then ts_ms digits (see _TAIL for why this is exact).
                t = data.rfind(b',"ts_ms":')
                if (
                    t < 0
                    or data[-1] != 125  # "}"
                    or not data[t + 9 : -1].isdigit()
                    or not data.endswith(b',"prev":"%b","seq":%d' % (prev_hex, pos), 0, t)
                ):
                    mode = chain.examine(pos, data, binascii.unhexlify(prev_hex))
            elif mode != _STOP:
                mode = chain.examine(pos, data, binascii.unhexlify(prev_hex))
            prev_hex = hexlify(leaf)
            append(leaf)
            pos += 1
            if pos == next_size:
                roots[pos] = builder.root()
                next_size = next(pending_sizes, -1)
    except ExportError as exc:
        read_error = f"the export cannot be read from record {pos} on: {exc}"
    if mode != _STOP:
        chain.finish()
    return _Pass(pos, roots, chain.problem, read_error)


def _judge(
    signed: list[_Signed], found: _Pass, problems: list[str]
) -> tuple[list[_Signed], int | None]:
    """Compare signed checkpoints with the export: (matching ones, truncation point)."""
    # Consistency between checkpoints: two checkpoints whose roots both equal
    # roots computed from the same export leaves are consistent by
    # construction (the smaller tree's leaves are a prefix of the larger's,
    # which is what a consistency proof built from those leaves would show).
    # So the verifier compares every checkpoint with the export instead of
    # building proofs, and reports a checkpoint that disagrees with a larger
    # matching one as a signed inconsistency.
    records, roots = found.records, found.roots
    matched = [s for s in signed if roots.get(s.checkpoint.size) == s.checkpoint.root]
    trusted = max((s.checkpoint.size for s in matched), default=0)
    matched_sizes = {s.checkpoint.size for s in matched}
    for s in signed:
        size = s.checkpoint.size
        if size < trusted and size not in matched_sizes:
            problems.append(
                f"checkpoint #{s.number} (size {size}) contradicts a larger checkpoint that "
                "matches the export: the audit key signed inconsistent checkpoints"
            )
    # Past the trusted prefix, the first checkpoint that disagrees names the
    # range; later ones cover that range too, so they are counted, not repeated.
    above = [s for s in signed if trusted < s.checkpoint.size <= records]
    if above:
        first = above[0]
        size = first.checkpoint.size
        rest = len(above) - 1
        later = f"; {rest} later checkpoint{'s disagree' if rest > 1 else ' disagrees'} too"
        problems.append(
            f"checkpoint #{first.number} (size {size}) does not match the export: records "
            f"{trusted}..{size - 1} cannot be trusted (the root of the export's first "
            f"{size} records differs from the signed root){later if rest else ''}"
        )
    beyond = [s for s in signed if s.checkpoint.size > records]
    if not beyond:
        return matched, None
    last = beyond[-1]
    extra = " (or records were removed before it: see above)" if found.chain else ""
    problems.append(
        f"checkpoint #{last.number} covers {last.checkpoint.size} records, export holds "
        f"{records}: the tail was truncated{extra}"
    )
    return matched, records


def verify_export(
    encoded_records: Iterable[bytes],
    public_key: Ed25519PublicKey,
    checkpoints: Sequence[str],
    key_name: str,
    *,
    origin: str | None = None,
) -> VerificationReport:
    """Verify an export in one streaming pass: chain, Merkle roots, signed checkpoints.

    `checkpoints` are signed notes in any order; `origin`, when given, is the
    log they must name (by default they must all name the same log).
    """
    problems: list[str] = []
    signed, forged = _open_all(checkpoints, key_name, public_key, origin, problems)
    found = _stream(encoded_records, sorted({s.checkpoint.size for s in signed}))
    if found.chain is not None:
        problems.insert(0, found.chain.reason)
    if found.read_error is not None:
        problems.append(found.read_error)
    matched, truncated_at = _judge(signed, found, problems)
    records = found.records
    trusted = max((s.checkpoint.size for s in matched), default=0)
    for number, size in forged:
        if trusted < size <= records:
            problems.append(
                f"records {trusted}..{size - 1} are not covered by a valid checkpoint: "
                f"checkpoint #{number}, which claims them, is not signed by {key_name}"
            )
    notes: list[str] = []
    if not signed:
        problems.append(f"no valid checkpoint signed by {key_name}: nothing vouches for the export")
    elif records > trusted and problems:
        notes.append(f"records {trusted}..{records - 1} are not proven by any checkpoint")
    elif records > trusted:
        notes.append(
            f"records {trusted}..{records - 1} are not covered by a verified checkpoint: "
            "their hash chain holds, but nothing signed vouches for them, and a suffix "
            "appended by whoever can edit the export would look the same"
        )
    bad = [found.chain.seq if found.chain else None, truncated_at]
    if found.read_error is not None:
        bad.append(records)
    named = [b for b in bad if b is not None]
    return VerificationReport(
        ok=not problems,
        records=records,
        checkpoints_verified=len(matched),
        problems=problems,
        first_bad_seq=min(named) if named else None,
        trusted_size=trusted,
        notes=notes,
    )


def public_key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte Ed25519 public key: what operators and auditors pin."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def verify_export_files(
    export_path: str | os.PathLike[str],
    public_key_pem_path: str | os.PathLike[str],
    checkpoint_paths: Sequence[str | os.PathLike[str]],
    key_name: str,
    *,
    origin: str | None = None,
    key_fingerprint: str | None = None,
) -> VerificationReport:
    """verify_export over files: the export, the audit key's PEM and one signed note per file.

    With `key_fingerprint` (pinned by the auditor), a public key file with any
    other fingerprint fails the verification before anything else is read:
    the export's own key file came from the server, which proves nothing.
    """
    with open(public_key_pem_path, "rb") as f:
        public_key = load_public_key_pem(f.read())
    if key_fingerprint is not None:
        found = public_key_fingerprint(public_key)
        if found != key_fingerprint.strip().lower():
            problem = (
                f"the public key in {public_key_pem_path} has fingerprint {found}, not the "
                f"pinned {key_fingerprint}: it is not the log's audit key"
            )
            return VerificationReport(False, 0, 0, [problem], None)
    notes = []
    for path in checkpoint_paths:
        with open(path, "rb") as f:
            # Bytes that are not UTF-8 become U+FFFD, which no signature covers:
            # the note is then reported as not verifying instead of crashing.
            notes.append(f.read().decode("utf-8", errors="replace"))
    return verify_export(read_export(export_path), public_key, notes, key_name, origin=origin)
