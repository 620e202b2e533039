"""Policy evaluation speed: 1,000 rules, 10,000 address-book entries, many intents.

Builds a synthetic but varied policy (callers, caller and key groups, chains,
assets, destination groups, amount ranges, fee caps, time windows, velocity
limits), validates it through the schema like a real one, compiles it once,
then times `evaluate` on single-intent requests drawn at random (most to
address-book destinations, some to unknown ones; some allowed, some sent to
approval, some denied). Prints JSON with the median time per intent:

    .venv/bin/python bench/policy_bench.py [--intents N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from custos.common.intent import ContractCall, Intent, Transfer  # noqa: E402
from custos.policies.evaluate import Allow, Deny, EvaluationRequest, compile_policy  # noqa: E402
from custos.policies.schema import validate_document  # noqa: E402
from custos.policies.velocity import Spent  # noqa: E402

RULES = 1000
ENTRIES = 10_000
CHAINS = {"ethereum": "mainnet", "bsc": "mainnet", "tron": "mainnet", "bitcoin": "mainnet"}
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def address(rng: random.Random, chain: str) -> str:
    if chain in ("ethereum", "bsc"):
        return "0x" + "".join(rng.choice("0123456789abcdefABCDEF") for _ in range(40))
    if chain == "tron":
        return "T" + "".join(rng.choice(B58) for _ in range(33))
    return "bc1q" + "".join(rng.choice(BECH32) for _ in range(38))


def build(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    callers = [f"CN=svc-{i},O=Bench" for i in range(50)]
    keys = {chain: [f"{chain}-key-{i}" for i in range(50)] for chain in CHAINS}
    tokens = {
        "ethereum": [address(rng, "ethereum") for _ in range(5)],
        "bsc": [address(rng, "bsc") for _ in range(5)],
        "tron": [address(rng, "tron") for _ in range(5)],
        "bitcoin": [],
    }
    groups = [f"dest-{i}" for i in range(200)]
    entries = []
    for i in range(ENTRIES):
        chain = rng.choice(list(CHAINS))
        entries.append(
            {
                "id": f"e{i}",
                "chain": chain,
                "network": CHAINS[chain],
                "address": address(rng, chain),
                "groups": rng.sample(groups, rng.randint(1, 2)),
            }
        )
    rules = []
    for i in range(RULES):
        chain = rng.choice(list(CHAINS))
        match: dict[str, Any] = {"chains": [chain], "networks": ["mainnet"]}
        if rng.random() < 0.8:
            match["caller_groups"] = rng.sample([f"callers-{g}" for g in range(20)], 2)
        if rng.random() < 0.6:
            match["key_groups"] = [f"keys-{chain}-{rng.randrange(5)}"]
        if rng.random() < 0.7:
            match["destinations"] = {"groups": rng.sample(groups, rng.randint(1, 3))}
        asset = rng.choice(["native", *tokens[chain]])
        match["assets"] = [asset]
        if rng.random() < 0.5:
            match["amount"] = {"max": str(rng.randrange(10**6, 10**20))}
        if rng.random() < 0.3:
            caps = {"bitcoin": "max_fee_rate_sat_vb", "tron": "max_fee_limit"}
            match["fee"] = {caps.get(chain, "max_gas_limit"): rng.randrange(10**4, 10**7)}
        if rng.random() < 0.2:
            match["time"] = [{"start": "22:00", "end": "06:00"}, {"start": "08:00", "end": "18:00"}]
        action = rng.choices(["allow", "require_approval", "deny"], [7, 2, 1])[0]
        rule: dict[str, Any] = {"id": f"r{i}", "match": match, "action": action}
        if action == "require_approval":
            rule["approval"] = {"approvals": 2, "group": "approvers"}
        rules.append(rule)
    identity_groups = {f"callers-{g}": rng.sample(callers, 5) for g in range(20)}
    identity_groups["approvers"] = ["CN=a1", "CN=a2", "CN=a3"]
    key_groups = {
        f"keys-{chain}-{g}": rng.sample(keys[chain], 10) for chain in CHAINS for g in range(5)
    }
    limits = [
        {
            "id": f"l{i}",
            "window": rng.choice(["1h", "24h"]),
            "per": rng.choice([["key", "asset"], ["caller", "asset"], ["asset"]]),
            "scope": {"chains": [chain]},
            "max_amount": str(10**24),
            "max_count": 10**6,
        }
        for i, chain in enumerate(list(CHAINS) * 3)
    ]
    doc = {
        "version": 1,
        "governance": {"officers": ["CN=o1", "CN=o2", "CN=o3"], "approvals_required": 2},
        "identity_groups": identity_groups,
        "key_groups": key_groups,
        "address_book": {"groups": groups, "entries": entries},
        "rules": rules,
        "limits": limits,
    }
    return doc, {"callers": callers, "keys": keys, "tokens": tokens, "entries": entries}


def intents(rng: random.Random, world: dict[str, Any], count: int) -> list[tuple[str, Intent]]:
    out = []
    entries = world["entries"]
    for _ in range(count):
        entry = rng.choice(entries)
        chain = entry["chain"]
        to = entry["address"] if rng.random() < 0.9 else address(rng, chain)
        asset = rng.choice(["native", *world["tokens"][chain]])
        amount = rng.randrange(1, 10**19)
        call = None
        fee_details: tuple[tuple[str, int], ...]
        if chain == "bitcoin":
            fee_details = (("vsize", 200), ("fee_rate_sat_vb_milli", rng.randrange(1000, 10**5)))
        elif chain == "tron":
            fee_details = (("fee_limit", rng.randrange(0, 10**8)),)
        else:
            fee_details = (("gas_limit", rng.randrange(21000, 10**6)), ("max_fee_per_gas", 10**10))
        if asset != "native":
            call = ContractCall(asset, "transfer", (("to", to), ("amount", str(amount))))
        intent = Intent(
            chain=chain,
            network="mainnet",
            key_id=rng.choice(world["keys"][chain]),
            from_address=address(rng, chain),
            transfers=(Transfer(to, asset, amount),),
            fee=10**15,
            contract_call=call,
            fee_details=fee_details,
        )
        out.append((rng.choice(world["callers"]), intent))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    raw, world = build(rng)
    started = time.perf_counter()
    doc = validate_document(raw)
    now = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
    policy = compile_policy(doc, activated_at=now - timedelta(days=7))
    compile_s = time.perf_counter() - started
    requests = []
    for caller, intent in intents(rng, world, args.intents):
        request = EvaluationRequest(caller, frozenset(), (intent,), now)
        usage = {d.key: Spent() for d in policy.limit_deltas(request)}
        requests.append((request, usage))
    for request, usage in requests[:1000]:  # warm-up
        policy.evaluate(request, usage)
    timings = []
    outcomes = {"allow": 0, "deny": 0, "require_approval": 0}
    clock = time.perf_counter_ns
    for request, usage in requests:
        t0 = clock()
        decision = policy.evaluate(request, usage)
        timings.append(clock() - t0)
        kind = (
            "allow"
            if isinstance(decision, Allow)
            else "deny"
            if isinstance(decision, Deny)
            else "require_approval"
        )
        outcomes[kind] += 1
    timings.sort()
    result = {
        "policy_eval_us_p50": round(statistics.median(timings) / 1000, 2),
        "policy_eval_us_p99": round(timings[int(len(timings) * 0.99)] / 1000, 2),
        "policy_eval_us_mean": round(statistics.fmean(timings) / 1000, 2),
        "rules": RULES,
        "address_book_entries": ENTRIES,
        "limits": len(raw["limits"]),
        "intents": len(requests),
        "outcomes": outcomes,
        "validate_and_compile_s": round(compile_s, 2),
        "goal_p50_us": 50,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
