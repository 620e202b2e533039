"""One replica in its own process (multiprocessing spawn): appends and spends against one bucket."""

from __future__ import annotations

from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from custos.signer.store.base import ClaimOutcome
from custos.signer.store.postgres import PostgresStore
from tests.store.helpers import budget, event

DIGEST = b"\x33" * 32


def run_replica(
    url: str,
    schema: str,
    name: str,
    rounds: int,
    amount: int,
    limit: int,
    start: Barrier,
    results: Queue[tuple[str, int, int]],
) -> None:
    store = PostgresStore(url, schema=schema)
    try:
        start.wait(timeout=60)
        claimed = refused = 0
        for i in range(rounds):
            store.append_audit([event("replica.tick", name, i=i)])
            claim = store.claim_batch(
                name,
                f"r{i}",
                DIGEST,
                60_000,
                [event("sign.authorized", name, i=i)],
                admission=budget("shared", amount, limit),
            )
            if claim.outcome is ClaimOutcome.CLAIMED:
                claimed += 1
                assert claim.token is not None
                store.complete_batch(
                    name, f"r{i}", b"ok", [event("sign.signed", name, i=i)], token=claim.token
                )
            else:
                assert claim.outcome is ClaimOutcome.OVER_LIMIT, claim
                refused += 1
        results.put((name, claimed, refused))
    finally:
        store.close()
