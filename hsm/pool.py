"""A pool of signing processes, each with its own PKCS#11 login.

PKCS#11 calls must be serialized within a process (see hsm.pkcs11_token), so
the way to use every core is one process per core. Each worker logs in once
at start, signs raw digests, normalizes them to low-S, finds the recovery id
and verifies the result against the key's public key before it leaves the
worker: the parent only ever sees verified signatures.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from hsm.errors import HsmError, HsmUnavailable
from hsm.keystore import SignRequest
from hsm.pkcs11_token import Pkcs11Token
from hsm.secp256k1 import RecoverableSignature, SignatureError, normalize

_worker_token: Pkcs11Token | None = None

Job = tuple[str, bytes, bytes]  # key_id, digest, public key: plain tuples pickle fastest


def _init_worker(library: str, label: str, pin: str) -> None:
    global _worker_token  # noqa: PLW0603 - one login per worker process, by design
    _worker_token = Pkcs11Token(library, label, pin)


def _sign_jobs(jobs: list[Job]) -> list[tuple[int, int, int]]:
    token = _worker_token
    if token is None:
        raise HsmUnavailable("signing worker has no HSM session")
    out = []
    for key_id, digest, public_key in jobs:
        raw = token.sign_raw(key_id, digest)
        try:
            sig = normalize(raw, digest, public_key)
        except SignatureError as exc:
            raise HsmUnavailable(f"HSM returned an invalid signature for key {key_id}") from exc
        out.append((sig.r, sig.s, sig.recovery_id))
    return out


def _ping_worker() -> int:
    if _worker_token is None:
        raise HsmUnavailable("signing worker has no HSM session")
    _worker_token.ping()
    return os.getpid()


class SigningPool:
    """Signs batches across `workers` processes; implements hsm.keystore.Signer."""

    def __init__(self, library: str, label: str, pin: str, workers: int) -> None:
        self._args = (library, label, pin)
        self._workers = max(1, workers)
        self._lock = threading.Lock()
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked child would inherit the parent's PKCS#11 state.
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=self._args,
        )
        # Start every worker now so a bad PIN or token fails start-up, not the first request.
        futures = [executor.submit(_ping_worker) for _ in range(self._workers)]
        try:
            for future in futures:
                future.result(timeout=60)
        except BrokenProcessPool as exc:
            executor.shutdown(wait=False, cancel_futures=True)
            raise HsmUnavailable("signing workers could not log in to the HSM") from exc
        return executor

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        if not requests:
            return []
        jobs: list[Job] = [(r.key_id, r.digest, r.public_key) for r in requests]
        # Contiguous chunks, one per worker, keep the order trivial to restore.
        size = -(-len(jobs) // self._workers)
        executor = self._executor
        try:
            futures: list[Future[list[tuple[int, int, int]]]] = [
                executor.submit(_sign_jobs, jobs[i : i + size]) for i in range(0, len(jobs), size)
            ]
            results = [sig for future in futures for sig in future.result()]
        except BrokenProcessPool as exc:
            self._restart(executor)
            raise HsmUnavailable("a signing worker died; the pool was restarted") from exc
        except HsmError:
            raise
        return [RecoverableSignature(r, s, v) for r, s, v in results]

    def ping(self) -> None:
        """Check every worker's HSM session (health checks)."""
        executor = self._executor
        try:
            for future in [executor.submit(_ping_worker) for _ in range(self._workers)]:
                future.result(timeout=10)
        except BrokenProcessPool as exc:
            self._restart(executor)
            raise HsmUnavailable("a signing worker died; the pool was restarted") from exc

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken:
                return  # another thread already restarted it
            broken.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
