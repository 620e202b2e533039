"""The service side of the audit log: signed checkpoints, proofs, export.

Records are appended by the store in the same transactions as the changes
they describe (signer.store). This module makes checkpoints (every N records
or T seconds, at shutdown and on demand) signed by an Ed25519 key that lives
in the HSM, and answers auditors' questions from the stored leaf hashes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from audit.checkpoint import Checkpoint, public_key_pem, sign_note
from audit.merkle import TreeBuilder, consistency_proof, inclusion_proof
from audit.record import AuditEvent
from signer.config import AuditConfig
from signer.errors import InvalidRequest
from signer.store.base import Store, StoredCheckpoint

log = logging.getLogger("custos.audit")

EXPORT_CHUNK_RECORDS = 2000


class AuditLog:
    """Checkpoints and proofs over the store's log."""

    def __init__(
        self,
        store: Store,
        config: AuditConfig,
        public_key: bytes,
        sign: Callable[[bytes], bytes],
    ) -> None:
        self._store = store
        self._config = config
        self.public_key = public_key
        self._sign = sign
        self._lock = threading.Lock()
        # The tree over every record so far, kept in memory and topped up from
        # the store: a checkpoint costs the new leaves only, not a full rebuild.
        self._tree = TreeBuilder()
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

    def checkpoint(self) -> StoredCheckpoint:
        """Sign and store a checkpoint of the whole log as it is now (idempotent per size)."""
        with self._lock:
            size = self._store.audit_size()
            latest = self._store.latest_checkpoint()
            if latest is not None and latest.size == size:
                return latest
            while self._tree.size < size:
                rows = self._store.audit_rows(self._tree.size, min(size - self._tree.size, 10_000))
                self._tree.extend(leaf for _seq, _data, leaf in rows)
            root = self._tree.root()
            note = sign_note(
                Checkpoint(self._config.origin, size, root),
                self._config.key_name,
                self.public_key,
                self._sign,
            )
            stored = StoredCheckpoint(size, root, note)
            # The checkpoint is itself an event of the log (it becomes record `size`).
            self._store.save_checkpoint(
                stored, AuditEvent("audit.checkpoint", "system", {"size": size, "root": root.hex()})
            )
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

    def inclusion(self, seq: int, tree_size: int) -> tuple[int, bytes, list[bytes]]:
        size = self._tree_size(tree_size)
        if seq >= size:
            raise InvalidRequest(f"seq: record {seq} is not in a tree of size {size}")
        leaves = self._store.leaf_hashes(size)
        return size, leaves[seq], inclusion_proof(leaves, seq, size)

    def consistency(self, from_size: int, to_size: int) -> tuple[int, list[bytes]]:
        size = self._tree_size(to_size)
        if not 0 < from_size <= size:
            raise InvalidRequest(f"from_size: must be between 1 and {size}")
        return size, consistency_proof(self._store.leaf_hashes(size), from_size, size)

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
            try:
                latest = self._store.latest_checkpoint()
                covered = latest.size if latest else 0
                # +1: the latest checkpoint's own record does not call for another one.
                pending = self._store.audit_size() - covered - (1 if latest else 0)
                due = time.monotonic() - self._last_time >= every_seconds
                if pending >= every_records or (pending > 0 and due):
                    self.checkpoint()
            except Exception:  # the store or HSM is down: try again on the next tick
                log.warning("periodic checkpoint failed", exc_info=True)

    def stop(self) -> None:
        """Stop the periodic checkpoints and write a final one."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.checkpoint()
