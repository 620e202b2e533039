"""signer.chains.keccak against eth_hash and published Keccak-256 values."""

from __future__ import annotations

import threading

from eth_hash.auto import keccak as eth_hash_keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.signer.chains.keccak import keccak


def test_published_values() -> None:
    # Keccak-256 of "" and "abc" (Keccak team's original padding, as Ethereum uses).
    assert keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert (
        keccak(b"abc").hex() == "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    )


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300), st.binary(min_size=134, max_size=138), st.binary(max_size=5000)
    )
)
def test_matches_eth_hash(data: bytes) -> None:
    # 136 bytes is Keccak-256's rate: one block, and the lengths around it.
    assert keccak(data) == bytes(eth_hash_keccak(data))
    assert keccak(bytearray(data)) == keccak(memoryview(data)) == keccak(data)


def test_threads_do_not_share_a_state() -> None:
    # cffi releases the GIL during each call: a shared state would mix inputs.
    failures: list[int] = []

    def hash_many(seed: int) -> None:
        for i in range(3000):
            data = f"{seed}:{i}".encode() * (1 + i % 7)
            if keccak(data) != bytes(eth_hash_keccak(data)):
                failures.append(seed)
                return

    threads = [threading.Thread(target=hash_many, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
