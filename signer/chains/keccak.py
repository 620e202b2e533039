"""Keccak-256, Ethereum's hash, at a third of eth_hash's cost per call.

Every EVM transaction is hashed twice on the signing path (its signing payload
and its transaction id). eth_hash's pycryptodome backend builds a hash object,
a SmartPointer and an output buffer for each call (about 8.5 µs here); this
calls the same pycryptodome C functions (keccak_reset, keccak_absorb,
keccak_digest) on one Keccak state per thread (about 3 µs). One state per
thread because cffi releases the GIL during each call. Where pycryptodome runs
on ctypes instead of cffi, eth_hash is used as it is.

tests/unit/test_keccak.py checks it against eth_hash and published vectors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from eth_hash.auto import keccak as _eth_hash_keccak

_KECCAK_256_CAPACITY = 64  # bytes: twice the digest size
_KECCAK_ROUNDS = 24
_KECCAK_PADDING = 0x01  # Keccak's original padding (SHA-3 uses 0x06)


def _direct() -> Callable[[bytes], bytes] | None:
    try:
        from Crypto.Hash import keccak as pycryptodome_keccak  # noqa: PLC0415
        from Crypto.Util import _raw_api  # noqa: PLC0415
    except ImportError:  # pragma: no cover - a pycryptodome without these internals
        return None
    lib: Any = getattr(pycryptodome_keccak, "_raw_keccak_lib", None)
    if _raw_api.backend != "cffi" or not hasattr(lib, "keccak_reset"):
        return None  # pragma: no cover
    ffi = _raw_api.ffi

    class _State(threading.local):
        def __init__(self) -> None:
            pointer = ffi.new("void **")
            if lib.keccak_init(pointer, _KECCAK_256_CAPACITY, _KECCAK_ROUNDS):
                raise MemoryError("cannot allocate a Keccak state")
            # Freed with the thread's copy of this object.
            self.state: Any = ffi.gc(pointer[0], lib.keccak_destroy)
            self.out: Any = ffi.new("uint8_t[32]")

    local = _State()

    def keccak(data: bytes) -> bytes:
        if type(data) is not bytes:
            data = bytes(data)  # cffi takes bytes for a uint8_t *, not bytearray or memoryview
        state, out = local.state, local.out
        if (
            lib.keccak_reset(state)
            or lib.keccak_absorb(state, data, len(data))
            or lib.keccak_digest(state, out, 32, _KECCAK_PADDING)
        ):
            raise ValueError("Keccak failed")  # pragma: no cover - only on bad arguments
        digest: bytes = ffi.buffer(out)[:]
        return digest

    return keccak


def _eth_hash(data: bytes) -> bytes:
    return bytes(_eth_hash_keccak(data))


keccak: Callable[[bytes], bytes] = _direct() or _eth_hash
