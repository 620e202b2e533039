"""A pool of HSM worker processes, each with its own PKCS#11 login.

PKCS#11 calls must be serialized within a process (see hsm.pkcs11_token), so
the way to use every core is one process per core. Each worker logs in once at
start, signs raw digests, normalizes them to low-S, finds the recovery id and
verifies the result against the key's public key before it leaves the worker:
the parent only ever sees verified signatures. Key generation and public-key
reads run in a worker too, so the service process never loads the PKCS#11
library: recovering from an HSM failure is replacing the workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from hsm.errors import HsmConfigError, HsmUnavailable, TokenNotFound
from hsm.keystore import SignRequest
from hsm.pkcs11_token import Pkcs11Token
from hsm.secp256k1 import RecoverableSignature, SignatureError, normalize

log = logging.getLogger("custos.hsm")

T = TypeVar("T")

LOGIN_ATTEMPTS = 10

_worker_token: Pkcs11Token | None = None
_worker_error: HsmConfigError | None = None

Job = tuple[str, bytes, bytes]  # key_id, digest, public key: plain tuples pickle fastest


def _exit_with_parent(parent: int) -> None:
    # A worker whose service died (SIGKILL, OOM) would otherwise live on, idle,
    # holding an HSM login and the token's locks.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _init_worker(library: str, label: str, pin: str) -> None:
    global _worker_token, _worker_error  # noqa: PLW0603 - one login per worker process
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()
    try:
        _worker_token = _login(library, label, pin)
    except HsmConfigError as exc:
        # Kept and raised by every task: an initializer that raises breaks the
        # pool and the clear message would be lost.
        _worker_error = exc


def _login(library: str, label: str, pin: str) -> Pkcs11Token:
    # SoftHSM rewrites token.object on login; a process reading it at that moment
    # sees no token. Retry that case briefly, never a wrong PIN (real HSMs lock it).
    for _attempt in range(LOGIN_ATTEMPTS - 1):
        try:
            return Pkcs11Token(library, label, pin)
        except TokenNotFound:
            time.sleep(0.2)
    return Pkcs11Token(library, label, pin)


def _token() -> Pkcs11Token:
    if _worker_token is None:
        raise _worker_error or HsmUnavailable("HSM worker has no session")
    return _worker_token


def _sign_jobs(jobs: list[Job]) -> list[tuple[int, int, int]]:
    token = _token()
    out = []
    for key_id, digest, public_key in jobs:
        raw = token.sign_raw(key_id, digest)
        try:
            sig = normalize(raw, digest, public_key)
        except SignatureError as exc:
            raise HsmUnavailable(f"HSM returned an invalid signature for key {key_id}") from exc
        out.append((sig.r, sig.s, sig.recovery_id))
    return out


def _generate(key_id: str) -> bytes:
    return _token().generate_secp256k1(key_id)


def _public_key(key_id: str) -> bytes:
    return _token().public_key(key_id)


def _ping() -> int:
    _token().ping()
    return os.getpid()


def _logged_in() -> int:
    _token()
    return os.getpid()


def _ensure_health_key() -> None:
    _token().ensure_health_key()


def _ensure_ed25519(key_id: str) -> bytes:
    return _token().ensure_ed25519(key_id)


def _sign_eddsa(key_id: str, message: bytes) -> bytes:
    return _token().sign_eddsa(key_id, message)


def _ensure_aes_key(key_id: str) -> None:
    _token().ensure_aes_key(key_id)


def _seal(key_id: str, plaintext: bytes, aad: bytes) -> bytes:
    return _token().seal(key_id, plaintext, aad)


def _unseal(key_id: str, sealed: bytes, aad: bytes) -> bytes:
    return _token().unseal(key_id, sealed, aad)


class SigningPool:
    """HSM operations across `workers` processes; a Signer and a KeyGenerator."""

    def __init__(self, library: str, label: str, pin: str, workers: int) -> None:
        self._args = (library, label, pin)
        self._workers = max(1, workers)
        self._lock = threading.Lock()
        self._executor = self._start()
        self._call(_ensure_health_key)

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: a forked child would inherit the parent's threads and locks.
        executor = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=self._args,
        )
        # Start and check every worker now: a bad PIN or token fails here, not later.
        try:
            for future in [executor.submit(_logged_in) for _ in range(self._workers)]:
                future.result(timeout=60)
        except BaseException:
            # wait=True: an executor still closing when the interpreter exits makes
            # CPython 3.11's exit hook write to its closed wake-up pipe (a traceback).
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        return executor

    def _submit(self, fn: Callable[..., T], *args: object) -> Future[T]:
        try:
            return self._executor.submit(fn, *args)
        except (BrokenProcessPool, RuntimeError) as exc:
            # RuntimeError: the workers were stopped and fresh ones could not start yet.
            raise HsmUnavailable("no HSM workers are running") from exc

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return self._submit(fn, *args).result()
        except BrokenProcessPool as exc:
            raise HsmUnavailable("an HSM worker died") from exc

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        if not requests:
            return []
        jobs: list[Job] = [(r.key_id, r.digest, r.public_key) for r in requests]
        # Contiguous chunks, one per worker, keep the order trivial to restore.
        size = -(-len(jobs) // self._workers)
        try:
            futures = [
                self._submit(_sign_jobs, jobs[i : i + size]) for i in range(0, len(jobs), size)
            ]
            results = [sig for future in futures for sig in future.result()]
        except BrokenProcessPool as exc:
            raise HsmUnavailable("an HSM worker died") from exc
        return [RecoverableSignature(r, s, v) for r, s, v in results]

    def generate_secp256k1(self, key_id: str) -> bytes:
        return self._call(_generate, key_id)

    def public_key(self, key_id: str) -> bytes:
        return self._call(_public_key, key_id)

    def ensure_ed25519(self, key_id: str) -> bytes:
        """Public half of an HSM-resident Ed25519 key (created on first use)."""
        return self._call(_ensure_ed25519, key_id)

    def sign_eddsa(self, key_id: str, message: bytes) -> bytes:
        return self._call(_sign_eddsa, key_id, message)

    def ensure_aes_key(self, key_id: str) -> None:
        self._call(_ensure_aes_key, key_id)

    def seal(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt a secret under an HSM-resident AES key (AES-256-GCM, `aad` bound)."""
        return self._call(_seal, key_id, plaintext, aad)

    def unseal(self, key_id: str, sealed: bytes, aad: bytes) -> bytes:
        return self._call(_unseal, key_id, sealed, aad)

    def ping(self) -> None:
        """Every worker signs with the health key; HsmUnavailable if any cannot."""
        try:
            for future in [self._submit(_ping) for _ in range(self._workers)]:
                future.result(timeout=10)
        except BrokenProcessPool as exc:
            raise HsmUnavailable("an HSM worker died") from exc

    def check(self) -> None:
        """Health probe: ping; on failure replace the workers (fresh logins) and ping again.

        A token that disappeared and came back is not usable again from the same
        process (SoftHSM drops it), so recovery means new processes.
        """
        try:
            self.ping()
        except (HsmUnavailable, TimeoutError):
            log.warning("HSM workers failed their probe; starting fresh workers")
            self._restart()
            self.ping()

    def _restart(self) -> None:
        with self._lock:
            # Old workers go first: SoftHSM holds file locks on the token's objects,
            # and a stuck worker would block its successors.
            _terminate(self._executor)
            try:
                self._executor = self._start()
            except Exception as exc:
                raise HsmUnavailable(f"fresh HSM workers could not log in: {exc}") from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _terminate(executor: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor has no public way to stop a worker stuck in a C call.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)
