"""A pool of HSM worker processes, each with its own PKCS#11 login.

PKCS#11 calls must be serialized within a process (see hsm.pkcs11_token), so
the way to use every core is one process per core. Each worker logs in once at
start, signs raw digests, normalizes them to low-S, finds the recovery id and
verifies the result against the key's public key before it leaves the worker:
the parent only ever sees verified signatures. Key generation and public-key
reads run in a worker too, so the service process never loads the PKCS#11
library: recovering from an HSM failure is replacing the workers.

Each worker is driven over its own pipe (a request, then its reply) rather
than through concurrent.futures: ProcessPoolExecutor's queues and manager
thread cost ~220 µs a call here against ~60 µs for a pipe, on a path every
signature takes.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar, cast

from custos.common.secp256k1 import RecoverableSignature, SignatureError, normalize
from custos.hsm import hd
from custos.hsm.backup_file import BackupEntry, WalletBackupEntry
from custos.hsm.bip32 import ExtendedPublicKey
from custos.hsm.errors import HsmConfigError, HsmUnavailable
from custos.hsm.keystore import SignRequest
from custos.hsm.pkcs11_token import Pkcs11Token

log = logging.getLogger("custos.hsm")

_worker_token: Pkcs11Token | None = None
_worker_error: HsmConfigError | None = None
_worker_args: tuple[str, str, str, bool] = ("", "", "", False)

T = TypeVar("T")

Job = tuple[str, bytes, bytes]  # key_id, digest, public key: plain tuples pickle fastest

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_SECONDS = 0.2
EXIT_GRACE_SECONDS = 5.0


def _exit_between_calls(_signum: int, _frame: object) -> None:
    # A Python signal handler runs between bytecodes, never inside a PKCS#11
    # call: a worker leaving here is not halfway through rewriting a token file.
    os._exit(1)


def _die_with_parent(parent: int, main_thread_spawned: bool) -> None:
    """Make this worker leave within a second of its service, however the service ends."""
    signal.signal(signal.SIGTERM, _exit_between_calls)
    # Ctrl-C reaches the whole process group: the service shuts down gracefully
    # and closes the pool itself, so in-flight signatures finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if main_thread_spawned and sys.platform.startswith("linux"):
        # The kernel signals us when the parent dies. It tracks the spawning
        # thread, not the process, so only workers spawned by the main thread
        # (which lives as long as the process) ask for it.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watch thread below still notices
    threading.Thread(
        target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True
    ).start()


def _exit_with_parent(parent: int) -> None:
    # Compared with the pid the parent passed: a parent that died while this
    # worker was still importing has already been replaced by init here.
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)  # handled between calls, see above
    time.sleep(EXIT_GRACE_SECONDS)
    os._exit(1)  # the main thread is stuck in the HSM: leave anyway


def _worker_main(
    conn: Connection, login: tuple[str, str, str, bool], parent: int, main_thread_spawned: bool
) -> None:
    """A worker process: answer (function, args) requests until EOF; `_login` comes first."""
    global _worker_args  # noqa: PLW0603 - one login per worker process
    _die_with_parent(parent, main_thread_spawned)
    _worker_args = login
    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):
            return  # the service closed the pool or died
        try:
            reply: tuple[bool, object] = (True, _TASKS[name](*args))
        except Exception as exc:  # noqa: BLE001 - sent to the parent, re-raised there
            reply = (False, exc)
        conn.send(reply)


def _login() -> int:
    """Log in once. The pool asks its workers one at a time: each log-in rewrites
    SoftHSM's token.object, and a worker reading it meanwhile sees a half-written
    token (Pkcs11Token retries such transient states with backoff)."""
    global _worker_token, _worker_error  # noqa: PLW0603 - one login per worker process
    if _worker_token is None and _worker_error is None:
        try:
            _worker_token = Pkcs11Token(*_worker_args)
        except HsmConfigError as exc:
            # Kept and raised by every request, so the parent sees the clear message.
            _worker_error = exc
    return _logged_in()


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


def _ed25519_public_key(key_id: str) -> bytes:
    return _token().ed25519_public_key(key_id)


def _sign_eddsa(key_id: str, message: bytes) -> bytes:
    return _token().sign_eddsa(key_id, message)


def _ensure_aes_key(key_id: str) -> None:
    _token().ensure_aes_key(key_id)


def _ensure_seal_key(key_id: str) -> None:
    _token().ensure_seal_key(key_id)


def _seal(key_id: str, plaintext: bytes, aad: bytes) -> bytes:
    return _token().seal(key_id, plaintext, aad)


def _unseal(key_id: str, sealed: bytes, aad: bytes) -> bytes:
    return _token().unseal(key_id, sealed, aad)


def _hd_create_seed(seal_key_id: str, aad: bytes) -> bytes:
    return hd.create_seed(_token(), seal_key_id, aad)


def _hd_account_key(
    seed: tuple[str, bytes, bytes], chain: str, network: str, path: str
) -> tuple[bytes, bytes, int, bytes, int]:
    return hd.account_key(_token(), seed, chain, network, path)


def _hd_sign(jobs: list[hd.HdJob]) -> list[tuple[int, int, int]]:
    return hd.sign(_token(), jobs)


def _hd_import_seed(
    import_key_id: str,
    wrapped: bytes,
    master_public_key: bytes,
    seal_key_id: str,
    aad: bytes,
) -> bytes:
    return hd.import_seed(_token(), import_key_id, wrapped, master_public_key, seal_key_id, aad)


_TASKS: dict[str, Callable[..., object]] = {
    fn.__name__: fn
    for fn in (
        _login,
        _sign_jobs,
        _generate,
        _public_key,
        _ping,
        _logged_in,
        _ensure_health_key,
        _ensure_ed25519,
        _ed25519_public_key,
        _sign_eddsa,
        _ensure_aes_key,
        _ensure_seal_key,
        _seal,
        _unseal,
        _hd_create_seed,
        _hd_account_key,
        _hd_sign,
        _hd_import_seed,
    )
}


def _create_hmac_key(key_id: str) -> None:
    _token().create_hmac_key(key_id)


def _hmac_many(key_id: str, messages: list[bytes]) -> list[bytes]:
    return _token().hmac_many(key_id, messages)


# Registered apart from the table above, so that branches adding tasks don't collide.
_TASKS.update({fn.__name__: fn for fn in (_create_hmac_key, _hmac_many)})


def _create_import_key(key_id: str) -> bytes:
    return _token().create_import_key(key_id)


def _import_key_public(key_id: str) -> bytes:
    return _token().import_key_public(key_id)


def _unwrap_secp256k1(
    import_key_id: str, key_id: str, wrapped: bytes, public_key: bytes, dry_run: bool
) -> None:
    _token().unwrap_secp256k1(import_key_id, key_id, wrapped, public_key, dry_run)


_TASKS.update(
    {fn.__name__: fn for fn in (_create_import_key, _import_key_public, _unwrap_secp256k1)}
)


def _create_backup_key(key_id: str, threshold: int, count: int) -> list[str]:
    return _token().create_backup_key(key_id, threshold, count)


def _make_backup(
    backup_key_id: str,
    entries: list[BackupEntry],
    created_at_ms: int,
    wallets: list[WalletBackupEntry],
) -> tuple[bytes, tuple[str, ...]]:
    return _token().make_backup(backup_key_id, entries, created_at_ms, wallets)


def _export_wrapped(key_id: str, recipient_der: bytes) -> bytes:
    return _token().export_wrapped(key_id, recipient_der)


def _export_seed(seed: tuple[str, bytes, bytes], recipient_der: bytes) -> bytes:
    return _token().export_seed(*seed, recipient_der)


def _trusted_backup_problem(backup_key_id: str) -> str | None:
    return _token().trusted_backup_problem(backup_key_id)


_TASKS.update(
    {
        fn.__name__: fn
        for fn in (
            _create_backup_key,
            _make_backup,
            _export_wrapped,
            _export_seed,
            _trusted_backup_problem,
        )
    }
)

CALL_TIMEOUT = 60.0  # seconds; a worker stuck longer in the HSM is replaced
CHUNKS_PER_WORKER = 2  # a 100-signature batch on two workers: four calls of 25


class WorkerLost(HsmUnavailable):
    """A worker died or hung: its pipe can no longer be trusted to pair replies."""


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, args: tuple[str, str, str, bool]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        # spawn, not fork: a forked child would inherit the parent's threads and locks.
        # A worker whose service died (SIGKILL, OOM) would otherwise live on,
        # holding an HSM login and the token's locks: it watches this pid.
        spawned_by_main = threading.current_thread() is threading.main_thread()
        self.process = context.Process(
            target=_worker_main,
            args=(child, args, os.getpid(), spawned_by_main),
            name="custos-hsm",
            daemon=True,
        )
        self.process.start()
        child.close()

    def send(self, name: str, *args: object) -> None:
        try:
            self.conn.send((name, args))
        except (OSError, ValueError) as exc:
            raise WorkerLost("an HSM worker died") from exc

    def receive(self, timeout: float = CALL_TIMEOUT) -> Any:
        try:
            if not self.conn.poll(timeout):
                raise WorkerLost(f"an HSM worker did not answer within {timeout:.0f} s")
            ok, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            raise WorkerLost("an HSM worker died") from exc
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        return value

    def stop(self) -> None:
        self.conn.close()
        self.process.terminate()
        self.process.join(timeout=5)


class _Workers:
    """A set of workers and the queue of idle ones."""

    def __init__(self, args: tuple[str, str, str, bool], count: int) -> None:
        self.all = [_Worker(args) for _ in range(count)]
        self.idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self.all:
            self.idle.put(worker)
        self.broken = False

    def stop(self) -> None:
        self.broken = True
        for worker in self.all:
            worker.stop()


class SigningPool:
    """HSM operations across `workers` processes; a Signer and a KeyGenerator."""

    def __init__(
        self, library: str, label: str, pin: str, workers: int, *, wrap_with_trusted: bool = False
    ) -> None:
        self._args = (library, label, pin, wrap_with_trusted)
        self._count = max(1, workers)
        self._lock = threading.Lock()
        self._workers = self._start()
        self._call("_ensure_health_key")

    def _start(self) -> _Workers:
        workers = _Workers(self._args, self._count)
        # Log every worker in now, one after another (see _login): a bad PIN or
        # token fails here, not later.
        try:
            for worker in workers.all:
                worker.send("_login")
                worker.receive()
        except BaseException:
            workers.stop()
            raise
        return workers

    def _run(self, calls: Sequence[tuple[str, tuple[object, ...]]]) -> list[Any]:
        """Run calls on idle workers in parallel; results in order.

        Waits only for the first worker; more are taken only if idle right now,
        so two batches never wait on each other while each holds a worker.
        """
        workers = self._workers
        if workers.broken:
            raise HsmUnavailable("no HSM workers are running")
        taken = [workers.idle.get()]
        while len(taken) < len(calls):
            try:
                taken.append(workers.idle.get_nowait())
            except queue.Empty:
                break
        return _exchange(workers, taken, calls, CALL_TIMEOUT)

    def _call(self, name: str, *args: object) -> Any:
        return self._run([(name, args)])[0]

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        if not requests:
            return []
        jobs: list[Job] = [(r.key_id, r.digest, r.public_key) for r in requests]
        chunks = [("_sign_jobs", (chunk,)) for chunk in self._chunks(jobs)]
        results = self._run(chunks)
        return [RecoverableSignature(r, s, v) for chunk in results for r, s, v in chunk]

    def _chunks(self, jobs: list[T]) -> list[list[T]]:
        """Contiguous chunks (the order stays trivial to restore), CHUNKS_PER_WORKER per
        worker: a batch's last chunks end close together, and a worker that finishes
        early takes the next one or leaves for another batch (_exchange)."""
        size = -(-len(jobs) // (self._count * CHUNKS_PER_WORKER))
        return [jobs[i : i + size] for i in range(0, len(jobs), size)]

    def generate_secp256k1(self, key_id: str) -> bytes:
        return bytes(self._call("_generate", key_id))

    def public_key(self, key_id: str) -> bytes:
        return bytes(self._call("_public_key", key_id))

    def ensure_ed25519(self, key_id: str) -> bytes:
        """Public half of an HSM-resident Ed25519 key (created on first use)."""
        return bytes(self._call("_ensure_ed25519", key_id))

    def ed25519_public_key(self, key_id: str) -> bytes:
        """Public half of an existing Ed25519 key; KeyNotFound if the token lacks it."""
        return bytes(self._call("_ed25519_public_key", key_id))

    def sign_eddsa(self, key_id: str, message: bytes) -> bytes:
        return bytes(self._call("_sign_eddsa", key_id, message))

    def ensure_aes_key(self, key_id: str) -> None:
        self._call("_ensure_aes_key", key_id)

    def ensure_seal_key(self, key_id: str) -> None:
        """The wallet seal key: wrappable for backups (Pkcs11Token.ensure_seal_key)."""
        self._call("_ensure_seal_key", key_id)

    def seal(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt a secret under an HSM-resident AES key (AES-256-GCM, `aad` bound)."""
        return bytes(self._call("_seal", key_id, plaintext, aad))

    def unseal(self, key_id: str, sealed: bytes, aad: bytes) -> bytes:
        return bytes(self._call("_unseal", key_id, sealed, aad))

    def create_hmac_key(self, key_id: str) -> None:
        """Create the HSM-resident HMAC key `key_id` (set-up only); KeyExists if present."""
        self._call("_create_hmac_key", key_id)

    def hmac_many(self, key_id: str, messages: Sequence[bytes]) -> list[bytes]:
        """HMAC-SHA256 of every message under `key_id`, in one worker round trip."""
        if not messages:
            return []
        return [bytes(tag) for tag in self._call("_hmac_many", key_id, list(messages))]

    # ---- key import (hsm.keystore.KeyImporter) ----

    def create_import_key(self, key_id: str) -> bytes:
        return bytes(self._call("_create_import_key", key_id))

    def import_key_public(self, key_id: str) -> bytes:
        return bytes(self._call("_import_key_public", key_id))

    def unwrap_secp256k1(
        self,
        import_key_id: str,
        key_id: str,
        wrapped: bytes,
        public_key: bytes,
        *,
        dry_run: bool = False,
    ) -> None:
        self._call("_unwrap_secp256k1", import_key_id, key_id, wrapped, public_key, dry_run)

    # ---- custody ceremonies (signer.usecases.custody): backups and export ----

    def create_backup_key(self, key_id: str, threshold: int, count: int) -> list[str]:
        """The backup key made in the token; its SLIP-39 shares (secrets: seal them)."""
        return [str(share) for share in self._call("_create_backup_key", key_id, threshold, count)]

    def make_backup(
        self,
        backup_key_id: str,
        entries: Sequence[BackupEntry],
        created_at_ms: int,
        wallets: Sequence[WalletBackupEntry] = (),
    ) -> tuple[bytes, tuple[str, ...]]:
        data, skipped = self._call(
            "_make_backup", backup_key_id, list(entries), created_at_ms, list(wallets)
        )
        return bytes(data), tuple(skipped)

    def export_wrapped(self, key_id: str, recipient_der: bytes) -> bytes:
        return bytes(self._call("_export_wrapped", key_id, recipient_der))

    def export_seed(self, seed: hd.SealedSeed, recipient_der: bytes) -> bytes:
        """A wallet's seed wrapped to a recipient's RSA key (Pkcs11Token.export_seed)."""
        return bytes(self._call("_export_seed", seed.as_tuple(), recipient_der))

    def trusted_backup_problem(self, backup_key_id: str) -> str | None:
        problem = self._call("_trusted_backup_problem", backup_key_id)
        return None if problem is None else str(problem)

    # ---- HD wallets (hsm.hd.HdKeys): derivation runs in the workers, see hsm.hd ----

    def hd_create_seed(self, seal_key_id: str, aad: bytes) -> hd.SealedSeed:
        sealed = bytes(self._call("_hd_create_seed", seal_key_id, aad))
        return hd.SealedSeed(seal_key_id, sealed, aad)

    def hd_account_key(
        self, seed: hd.SealedSeed, chain: str, network: str, account_path: str
    ) -> ExtendedPublicKey:
        fields = self._call("_hd_account_key", seed.as_tuple(), chain, network, account_path)
        return ExtendedPublicKey(*fields)

    def hd_import_seed(
        self,
        import_key_id: str,
        wrapped: bytes,
        master_public_key: bytes,
        seal_key_id: str,
        aad: bytes,
    ) -> hd.SealedSeed:
        """Seal an officer's wrapped seed (hsm.hd.import_seed); never returned in clear."""
        sealed = self._call(
            "_hd_import_seed", import_key_id, wrapped, master_public_key, seal_key_id, aad
        )
        return hd.SealedSeed(seal_key_id, bytes(sealed), aad)

    def hd_sign(self, requests: Sequence[hd.HdSignRequest]) -> list[RecoverableSignature]:
        if not requests:
            return []
        jobs: list[hd.HdJob] = [
            (r.seed.as_tuple(), r.chain, r.network, r.path, r.digest, r.public_key)
            for r in requests
        ]
        chunks = [("_hd_sign", (chunk,)) for chunk in self._chunks(jobs)]
        results = self._run(chunks)
        return [RecoverableSignature(r, s, v) for chunk in results for r, s, v in chunk]

    def ping(self) -> None:
        """Every worker signs with the health key; HsmUnavailable if any cannot."""
        workers = self._workers
        if workers.broken:
            raise HsmUnavailable("no HSM workers are running")
        # All of them, one by one: holders of a worker never wait for another, so
        # waiting here for each in turn cannot deadlock.
        taken = [workers.idle.get() for _ in workers.all]
        _exchange(workers, taken, [("_ping", ())] * len(taken), timeout=10)

    def check(self) -> None:
        """Health probe: ping; on failure replace the workers (fresh logins) and ping again.

        A token that disappeared and came back is not usable again from the same
        process (SoftHSM drops it), so recovery means new processes.
        """
        try:
            self.ping()
        except HsmUnavailable:
            log.warning("HSM workers failed their probe; starting fresh workers")
            self._restart()
            self.ping()

    def _restart(self) -> None:
        with self._lock:
            # Old workers go first: SoftHSM holds file locks on the token's objects,
            # and a stuck worker would block its successors.
            self._workers.stop()
            try:
                self._workers = self._start()
            except Exception as exc:
                raise HsmUnavailable(f"fresh HSM workers could not log in: {exc}") from exc

    def close(self) -> None:
        self._workers.stop()


def _wait(conns: list[Connection], timeout: float) -> list[Connection]:
    """The connections with a reply (or EOF) waiting; WorkerLost if none within `timeout`."""
    ready = multiprocessing.connection.wait(conns, timeout)
    if not ready:
        raise WorkerLost(f"an HSM worker did not answer within {timeout:.0f} s")
    return [cast(Connection, conn) for conn in ready]


def _exchange(
    workers: _Workers,
    taken: list[_Worker],
    calls: Sequence[tuple[str, tuple[object, ...]]],
    timeout: float,
) -> list[Any]:
    """Run `calls` on the `taken` workers, results in order: each worker takes the next
    call as soon as it answers, and an idle worker joins while calls are left.

    A worker goes back to the idle queue as soon as no call is left for it: one
    batch's worker never waits for another worker to finish its chunk (with calls
    sent in waves, the first to finish idled until the last did, about a tenth of
    the workers' time in the e2e bench). Only idle workers join (get_nowait), so
    holders of a worker still never wait for another. A worker's own error stops
    further calls and is re-raised once every outstanding reply is read, so no
    reply is left for the next caller; a lost worker marks the whole set broken.
    """
    results: list[Any] = [None] * len(calls)
    failed: BaseException | None = None
    pending = collections.deque(range(len(calls)))
    busy: dict[Connection, tuple[_Worker, int]] = {}
    held = list(taken)

    def release(worker: _Worker) -> None:
        held.remove(worker)
        workers.idle.put(worker)

    def start(worker: _Worker) -> None:
        index = pending.popleft()
        name, args = calls[index]
        busy[worker.conn] = (worker, index)
        worker.send(name, *args)

    try:
        for worker in taken:
            if pending:
                start(worker)
            else:
                release(worker)
        while busy:
            # One outstanding call (a one-item batch) waits in receive() itself.
            ready = list(busy) if len(busy) == 1 else _wait(list(busy), timeout)
            for conn in ready:
                worker, index = busy.pop(conn)
                try:
                    results[index] = worker.receive(timeout)
                except WorkerLost:
                    raise
                except Exception as exc:  # noqa: BLE001 - the worker's own error, re-raised
                    failed = failed or exc
                if pending and failed is None:
                    start(worker)
                else:
                    release(worker)
            while pending and failed is None and not workers.broken:
                try:
                    extra = workers.idle.get_nowait()
                except queue.Empty:
                    break
                held.append(extra)
                start(extra)
    except WorkerLost as exc:
        # A pipe out of step cannot be trusted: every worker is replaced by the
        # next health probe (check()); until then calls fail fast.
        workers.broken = True
        failed = exc
    finally:
        if busy:  # left by an unexpected error with a reply still on its way
            workers.broken = True  # a pipe out of step: replaced like a lost worker
        for worker in list(held):
            release(worker)
    if failed is not None:
        raise failed
    return results
