"""The service side of the audit log: a log that checks itself, signed checkpoints, proofs.

Records are appended by the store in the same transactions as the changes
they describe (signer.store). This module makes checkpoints (every N records
or T seconds, at shutdown and on demand) signed by an Ed25519 key that lives
in the HSM, and answers auditors' questions.

The database is not trusted (invariant 8), so the service never takes the log
on the store's word. At start it reads every record, recomputes each leaf hash
from the stored bytes (the stored hash column is only compared, never used),
checks the hash chain and sequence numbers, and checks every stored checkpoint
(signature by the pinned audit key, root equal to the root of that many
recomputed leaves) and the witness file: the latest checkpoint this service
signed or verified, kept outside the database. While running it keeps the
verified leaves in memory and, every tick and before every checkpoint, checks
the records appended since (same checks), that the last verified record is
still there unchanged and the log did not shrink, and that the store's latest
checkpoint is signed, matches the verified leaves and never goes back. It only
ever signs a checkpoint over the leaves it verified.

Any failure is sticky until a restart: the service signs no checkpoint and no
transaction (AuditGate), the health component "audit" fails (NOT_SERVING), and
the log names what is wrong. A store that cannot be reached is not a failure:
the check runs again on the next tick.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from custos.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_note,
    public_key_pem,
    sign_note,
)
from custos.audit.merkle import TreeBuilder, consistency_proof, inclusion_proof
from custos.audit.merkle import root as merkle_root
from custos.audit.record import AuditEvent, AuditRecord
from custos.common.secp256k1 import RecoverableSignature
from custos.hsm.errors import KeyNotFound
from custos.hsm.hd import HdKeys, HdSignRequest
from custos.hsm.keystore import Signer, SignRequest
from custos.hsm.pool import SigningPool
from custos.signer.edge.config import AuditConfig
from custos.signer.edge.errors import ConfigError, FailedPrecondition, InvalidRequest
from custos.signer.store.base import Store, StoredCheckpoint, StoreError

log = logging.getLogger("custos.audit")

EXPORT_CHUNK_RECORDS = 2000
_READ_CHUNK = 10_000


def key_fingerprint(public_key_raw32: bytes) -> str:
    """What the config pins: SHA-256 of the raw 32-byte Ed25519 public key, hex."""
    return hashlib.sha256(public_key_raw32).hexdigest()


def setup_audit_key(
    library: str, label: str, pin: str, environment: Mapping[str, str], key_id: str
) -> tuple[bytes, bool]:
    """The token's Ed25519 audit key, generated if missing: (raw public key, created).

    Only set-up commands call this (`custos init`, `custos audit init-key`); the
    service looks the key up and refuses to start without it.
    """
    return setup_ed25519_keys(library, label, pin, environment, [key_id])[0]


def setup_ed25519_keys(
    library: str, label: str, pin: str, environment: Mapping[str, str], key_ids: Sequence[str]
) -> list[tuple[bytes, bool]]:
    """The token's Ed25519 keys `key_ids` (audit, event signing), each generated if
    missing: (raw public key, created) for each. Set-up commands only."""
    # The workers read the library's environment (SOFTHSM2_CONF) when spawned:
    # set it for that moment only, so that a caller's own settings survive.
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        pool = SigningPool(library, label, pin, 1)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        keys = []
        for key_id in key_ids:
            try:
                keys.append((pool.ed25519_public_key(key_id), False))
            except KeyNotFound:
                keys.append((pool.ensure_ed25519(key_id), True))
        return keys
    finally:
        pool.close()


class VerifiedRecords(Protocol):
    """Told every record once it is verified, in log order (signer.usecases.budget_ledger)."""

    def reset(self) -> None:
        """The verified log is being rebuilt from record 0."""
        ...

    def observe(self, data: bytes) -> None:
        """One record's canonical bytes, verified."""
        ...


class _NoReader:
    def reset(self) -> None:
        pass

    def observe(self, data: bytes) -> None:
        pass


class AuditIntegrityError(FailedPrecondition):
    """The stored log is not a consistent extension of what this service verified."""


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def write_atomically(path: Path, text: str) -> None:
    # A name of its own: replicas sharing a directory must not write one temp file.
    temp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


class AuditLog:
    """Checkpoints and proofs over the store's log, which it verifies itself."""

    def __init__(
        self,
        store: Store,
        config: AuditConfig,
        public_key: bytes,
        sign: Callable[[bytes], bytes],
    ) -> None:
        witness = config.witness_file
        if witness is not None and not os.access(witness.parent, os.W_OK):
            # Without it a rollback of the whole store goes unnoticed at the next start.
            raise ConfigError(
                f"audit.witness_file: cannot write in {witness.parent}; set it to a "
                "writable path on the service host (not in the database)"
            )
        self._store = store
        self._config = config
        self.public_key = public_key
        self._verifier = Ed25519PublicKey.from_public_bytes(public_key)
        self._sign = sign
        self._lock = threading.RLock()
        # The verified log: leaf hashes recomputed from the stored bytes, and
        # the Merkle tree over them. Checkpoints and proofs come from these.
        self._leaves: list[bytes] = []
        self._tree = TreeBuilder()
        # The largest checkpoint whose signature and root this service checked.
        self._anchor: StoredCheckpoint | None = None
        self._witness_size = -1
        # Replays each verified record (the budget ledger); set before verify_at_start.
        self.reader: VerifiedRecords = _NoReader()
        self._ready = False  # the start-up rebuild succeeded
        self.failure: str | None = None  # what is wrong with the log; sticky
        # Told at once when the log fails (the health monitor re-probes).
        self.on_failure: Callable[[BaseException], object] = lambda _exc: None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="custos-checkpoint", daemon=True)
        self._last_time = time.monotonic()

    @property
    def key_name(self) -> str:
        return self._config.key_name

    @property
    def origin(self) -> str:
        return self._config.origin

    @property
    def public_key_pem(self) -> str:
        return public_key_pem(self.public_key).decode()

    # -- integrity -------------------------------------------------------------

    def _fail(self, reason: str) -> AuditIntegrityError:
        if self.failure is None:
            self.failure = reason
            log.error(
                "AUDIT LOG INTEGRITY FAILURE: %s. Signing is suspended (no checkpoint, no "
                "transaction) until the store is restored and the service restarted.",
                reason,
            )
            error = AuditIntegrityError(f"audit log integrity check failed: {reason}")
            self.on_failure(error)
            return error
        return AuditIntegrityError(f"audit log integrity check failed: {self.failure}")

    def require_intact(self) -> None:
        """Raise unless the log verified and nothing since has failed (cheap: no I/O)."""
        if self.failure is not None:
            raise AuditIntegrityError(
                f"signing is suspended: the audit log failed its integrity check: {self.failure}"
            )
        if not self._ready:
            raise AuditIntegrityError(
                "signing is suspended: the audit log has not been verified yet (store unreachable)"
            )

    def probe(self) -> None:
        """Health probe: fails while the log is unverified or found tampered."""
        self.require_intact()

    def _open(self, stored: StoredCheckpoint, what: str) -> Checkpoint:
        """The checkpoint in a stored note, once its signature, origin and row fields check out."""
        try:
            checkpoint = open_note(stored.note, self._config.key_name, self._verifier)
        except CheckpointError as exc:
            raise self._fail(
                f"{what} (size {stored.size}) is not signed by the audit key: {exc}"
            ) from None
        if checkpoint.origin != self._config.origin:
            raise self._fail(f"{what} (size {stored.size}) is for log {checkpoint.origin!r}")
        if (checkpoint.size, checkpoint.root) != (stored.size, stored.root):
            raise self._fail(f"{what} (size {stored.size}): its row does not match its signed note")
        return checkpoint

    def _check_root(self, checkpoint: Checkpoint, root: bytes, what: str) -> None:
        if root != checkpoint.root:
            raise self._fail(
                f"the log's first {checkpoint.size} records do not match {what} "
                f"(size {checkpoint.size}): records 0..{checkpoint.size - 1} were altered, "
                "re-chained, reordered or removed after it was signed"
            )

    def _root_at(self, size: int) -> bytes:
        if size == len(self._leaves):
            return self._tree.root()
        return merkle_root(self._leaves[:size])

    def _extend(self, upto: int, capture: Sequence[int] = ()) -> dict[int, bytes]:
        """Verify records len(leaves)..upto-1 from their stored bytes; roots at `capture` sizes.

        Each record must end with exactly the seq and prev link it should hold
        (read from the canonical tail, as audit.verify does: exact for the
        encoding the store writes, and ~10x cheaper than decoding, which matters
        on the signing path's GIL). A record that does not fit is decoded in
        full to name the problem. Whether the bytes are the ones a checkpoint
        signed is then settled by the roots.
        """
        want = sorted(s for s in set(capture) if s > len(self._leaves))
        roots: dict[int, bytes] = {}
        while len(self._leaves) < upto:
            pos = len(self._leaves)
            limit = min(_READ_CHUNK, upto - pos)
            if want:
                limit = min(limit, want[0] - pos)
            rows = self._store.audit_rows(pos, limit)
            if not rows:
                raise self._fail(
                    f"records {pos}..{upto - 1} are missing: the log ends at record {pos - 1}"
                )
            self._take(rows)
            if want and len(self._leaves) == want[0]:
                roots[want.pop(0)] = self._tree.root()
        return roots

    def _take(self, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Verify `rows`, the records that follow the verified ones, and append them."""
        for seq, data, stored_leaf in rows:
            pos = len(self._leaves)
            raw = bytes(data)
            if seq == pos and self._fast(pos, raw, bytes(stored_leaf)):
                continue
            self._verify_record(pos, seq, raw, bytes(stored_leaf))

    def catch_up(self) -> None:
        """Verify the records appended since the last check, and only those (one query
        when there are none): the budget floor calls it before every admission, so that
        what it replays is the committed log, not the log of the last tick.

        The tick still checks the rest (the tail unchanged, checkpoints); a record
        that fails here fails the log as it would there. Nothing happens before the
        start-up rebuild succeeded or after a failure.
        """
        with self._lock:
            if self.failure is not None or not self._ready:
                return
            try:
                while True:
                    rows = self._store.audit_rows(len(self._leaves), _READ_CHUNK)
                    self._take(rows)
                    if len(rows) < _READ_CHUNK:
                        return
            except AuditIntegrityError:
                return  # logged once by _fail; signing stops

    def _fast(self, pos: int, data: bytes, stored_leaf: bytes) -> bool:
        """Append the record if its tail holds exactly the prev and seq it should; else False."""
        leaf = _leaf(data)
        prev = self._leaves[-1].hex().encode() if self._leaves else b""
        t = data.rfind(b',"ts_ms":')
        if (
            t < 0
            or data[-1:] != b"}"
            or not data[t + 9 : -1].isdigit()
            or not data.endswith(b',"prev":"%b","seq":%d' % (prev, pos), 0, t)
            or leaf != stored_leaf
        ):
            return False
        self._leaves.append(leaf)
        self._tree.append(leaf)
        self.reader.observe(data)
        return True

    def _verify_record(self, pos: int, seq: int, data: bytes, stored_leaf: bytes) -> None:
        data = bytes(data)
        if seq != pos:
            if seq > pos:
                gone = f"record {pos} is" if seq == pos + 1 else f"records {pos}..{seq - 1} are"
                raise self._fail(f"{gone} missing: record {seq} follows record {pos - 1}")
            raise self._fail(f"record {seq} appears again where record {pos} belongs")
        leaf = _leaf(data)
        try:
            record = AuditRecord.decode(data)
            canonical = record.encode() == data
        except (ValueError, KeyError, TypeError, AttributeError):
            canonical = False
        if not canonical:
            raise self._fail(f"record {pos} does not decode to its canonical bytes: altered")
        if record.seq != pos:
            raise self._fail(f"record {pos} carries sequence number {record.seq}: altered")
        prev = self._leaves[-1] if self._leaves else b""
        if record.prev_hash != prev:
            raise self._fail(
                f"record {pos} does not link to record {pos - 1}: one of them was altered"
                if pos
                else "record 0 does not start the chain: altered"
            )
        if stored_leaf != leaf:
            raise self._fail(f"the stored hash of record {pos} does not match its bytes: altered")
        self._leaves.append(leaf)
        self._tree.append(leaf)
        self.reader.observe(data)

    def _check_tail(self, size: int) -> None:
        """The log never shrinks below, nor changes at, the last record already verified."""
        verified = len(self._leaves)
        if size < verified:
            raise self._fail(
                f"the log shrank from {verified} to {size} records: records "
                f"{size}..{verified - 1} were deleted or rolled back"
            )
        if verified:
            rows = self._store.audit_rows(verified - 1, 1)
            if (
                not rows
                or rows[0][0] != verified - 1
                or _leaf(bytes(rows[0][1])) != self._leaves[-1]
            ):
                raise self._fail(f"record {verified - 1}, already verified, was changed or deleted")

    def verify_at_start(self) -> None:
        """Rebuild the verified log from the store; every stored checkpoint and the witness.

        Raises nothing for a store that cannot be reached (the tick retries);
        an inconsistency is recorded in `failure` (and logged).
        """
        with self._lock:
            try:
                self._rebuild()
            except AuditIntegrityError:
                return
            except StoreError as exc:
                log.warning("audit log not verified yet (store unavailable): %s", exc)
                return
            self._ready = True

    def _rebuild(self) -> None:
        started = time.monotonic()
        self._leaves, self._tree, self._anchor = [], TreeBuilder(), None
        self.reader.reset()
        stored = self._store.all_checkpoints()
        witness = self._read_witness()
        opened = [(s, self._open(s, "stored checkpoint")) for s in stored]
        sizes = [s.size for s in stored] + ([witness[0].size] if witness else [])
        size = self._store.audit_size()
        roots = self._extend(size, sizes)
        roots.setdefault(0, merkle_root([]))
        for s, checkpoint in opened:
            if s.size > size:
                raise self._fail(
                    f"stored checkpoint of size {s.size} covers more records than the log "
                    f"holds ({size}): records {size}..{s.size - 1} were deleted"
                )
            self._check_root(checkpoint, roots[s.size], "the stored checkpoint")
            self._anchor = s
        if witness is not None:
            w, checkpoint = witness
            where = f"the witness file {self._config.witness_file}"
            if w.size > size:
                raise self._fail(
                    f"the log holds {size} records, but this service signed or verified a "
                    f"checkpoint of size {w.size} ({where}): records {size}..{w.size - 1} "
                    "were deleted or the store was rolled back"
                )
            self._check_root(checkpoint, roots[w.size], f"the checkpoint in {where}")
            if self._anchor is None or self._anchor.size < w.size:
                raise self._fail(
                    f"the store's checkpoints end at size "
                    f"{self._anchor.size if self._anchor else 0}, but this service signed or "
                    f"verified one of size {w.size} ({where}): checkpoint rows were deleted "
                    "or the store was rolled back"
                )
        else:
            log.warning(
                "no audit witness file (%s): trusting the store's checkpoints as found "
                "(first start?); a rollback before this start cannot be detected",
                self._config.witness_file,
            )
        self._save_witness()
        log.info(
            "audit log verified: %d records, %d checkpoints, in %.2f s",
            size,
            len(stored),
            time.monotonic() - started,
        )

    def _read_witness(self) -> tuple[StoredCheckpoint, Checkpoint] | None:
        path = self._config.witness_file
        if path is None or not path.exists():
            return None
        try:
            note = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise self._fail(f"the witness file {path} cannot be read: {exc}") from None
        try:
            checkpoint = open_note(note, self._config.key_name, self._verifier)
        except CheckpointError as exc:
            raise self._fail(
                f"the witness file {path} is not signed by the audit key: {exc}"
            ) from None
        self._witness_size = checkpoint.size
        return StoredCheckpoint(checkpoint.size, checkpoint.root, note), checkpoint

    def _save_witness(self) -> None:
        path = self._config.witness_file
        anchor = self._anchor
        if path is None or anchor is None or anchor.size <= self._witness_size:
            return
        try:
            write_atomically(path, anchor.note)
            self._witness_size = anchor.size
        except OSError as exc:
            log.warning("cannot write the audit witness file %s: %s", path, exc)

    def sync(self) -> None:
        """Verify what was appended since the last check, and the store's latest checkpoint."""
        with self._lock:
            if self.failure is not None:
                raise self._fail(self.failure)
            if not self._ready:
                self._rebuild()
                self._ready = True
                return
            latest = self._store.latest_checkpoint()
            size = self._store.audit_size()
            self._check_tail(size)
            anchor = self._anchor
            if anchor is not None and (latest is None or latest.size < anchor.size):
                raise self._fail(
                    f"the store's latest checkpoint is of size {latest.size if latest else 0}, "
                    f"but this service verified one of size {anchor.size}: checkpoint rows "
                    "were deleted or the store was rolled back"
                )
            capture = [latest.size] if latest is not None else []
            roots = self._extend(size, capture)
            if latest is None or (anchor is not None and latest.note == anchor.note):
                return
            checkpoint = self._open(latest, "the store's latest checkpoint")
            if latest.size > len(self._leaves):
                raise self._fail(
                    f"the store's latest checkpoint covers {latest.size} records, the log "
                    f"holds {len(self._leaves)}: records were deleted"
                )
            root = roots.get(latest.size) or self._root_at(latest.size)
            self._check_root(checkpoint, root, "the store's latest checkpoint")
            self._anchor = latest
            self._save_witness()

    # -- checkpoints -------------------------------------------------------------

    def checkpoint(self) -> StoredCheckpoint:
        """Sign and store a checkpoint of the verified log (idempotent per size).

        Only after the store's log checked out as a consistent extension of the
        latest checkpoint signed by any replica; AuditIntegrityError otherwise.
        """
        with self._lock:
            self.sync()
            size = len(self._leaves)
            anchor = self._anchor
            if anchor is not None and anchor.size == size:
                return anchor
            root = self._tree.root()
            note = sign_note(
                Checkpoint(self._config.origin, size, root),
                self._config.key_name,
                self.public_key,
                self._sign,
            )
            stored = StoredCheckpoint(size, root, note)
            # The checkpoint is itself an event of the log (it becomes a later record).
            self._store.save_checkpoint(
                stored, AuditEvent("audit.checkpoint", "system", {"size": size, "root": root.hex()})
            )
            self._anchor = stored
            self._save_witness()
            self._last_time = time.monotonic()
            return stored

    def checkpoint_age(self) -> float:
        """Seconds since this process last made (or found) a checkpoint."""
        return time.monotonic() - self._last_time

    def latest(self) -> StoredCheckpoint:
        return self._store.latest_checkpoint() or self.checkpoint()

    def _tree_size(self, requested: int) -> int:
        size = requested or self.latest().size
        if size > self._store.audit_size():
            raise InvalidRequest(f"tree_size: the log holds fewer than {size} records")
        return size

    def _leaf_hashes(self, size: int) -> list[bytes]:
        # Verified leaves where this service has them; the store's for the rest.
        if size <= len(self._leaves):
            return self._leaves[:size]
        return self._store.leaf_hashes(size)

    def inclusion(self, seq: int, tree_size: int) -> tuple[int, bytes, list[bytes]]:
        size = self._tree_size(tree_size)
        if seq >= size:
            raise InvalidRequest(f"seq: record {seq} is not in a tree of size {size}")
        leaves = self._leaf_hashes(size)
        return size, leaves[seq], inclusion_proof(leaves, seq, size)

    def consistency(self, from_size: int, to_size: int) -> tuple[int, list[bytes]]:
        size = self._tree_size(to_size)
        if not 0 < from_size <= size:
            raise InvalidRequest(f"from_size: must be between 1 and {size}")
        return size, consistency_proof(self._leaf_hashes(size), from_size, size)

    def all_checkpoints(self, min_size: int = 0) -> list[StoredCheckpoint]:
        return [c for c in self._store.all_checkpoints() if c.size >= min_size]

    def export(self, from_seq: int, to_seq: int) -> Iterator[bytes]:
        """Chunks of canonical records, one per line, [from_seq, to_seq)."""
        end = to_seq or self._store.audit_size()
        seq = from_seq
        while seq < end:
            rows = self._store.audit_rows(seq, min(EXPORT_CHUNK_RECORDS, end - seq))
            if not rows:
                return
            yield b"".join(data + b"\n" for _seq, data, _leaf in rows)
            seq = rows[-1][0] + 1

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        every_records = self._config.checkpoint_every_records
        every_seconds = self._config.checkpoint_every_seconds
        while not self._stop.wait(min(1.0, every_seconds)):
            if self.failure is not None:
                continue  # nothing more to check or sign until a restart
            try:
                self.sync()
                covered = self._anchor.size if self._anchor else 0
                # +1: the latest checkpoint's own record does not call for another one.
                pending = len(self._leaves) - covered - (1 if self._anchor else 0)
                due = time.monotonic() - self._last_time >= every_seconds
                if pending >= every_records or (pending > 0 and due):
                    self.checkpoint()
            except AuditIntegrityError:
                pass  # logged once by _fail; health reports it
            except Exception:  # the store or HSM is down: try again on the next tick
                log.warning("periodic audit check or checkpoint failed", exc_info=True)

    def stop(self) -> None:
        """Stop the periodic checkpoints and write a final one (unless the log failed)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.failure is None and self._ready:
            self.checkpoint()


class AuditGate:
    """A Signer that signs only while the audit log checks out (see AuditLog.require_intact)."""

    def __init__(self, signer: Signer, audit: AuditLog, hd: HdKeys | None = None) -> None:
        self._signer = signer
        self._audit = audit
        self._hd = hd

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        self._audit.require_intact()
        return self._signer.sign(requests)

    def hd_sign(self, requests: Sequence[HdSignRequest]) -> list[RecoverableSignature]:
        """Signatures by HD wallets' derived keys (hsm.hd), under the same gate."""
        self._audit.require_intact()
        if self._hd is None:
            raise FailedPrecondition("this service signs with no HD wallet keys")
        return self._hd.hd_sign(requests)
