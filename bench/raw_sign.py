"""Raw SoftHSM C_Sign in a process of its own: the ceiling the service is measured against.

`python bench/raw_sign.py PIN_FILE KEY_ID SIGNS` prints, as JSON: the rate and median
latency of SIGNS back-to-back C_Sign calls over 32-byte digests (CKM_ECDSA, one
session), the CPU per call (SoftHSM signs in this process), and the median of
C_Sign calls that each follow about 1 ms of other Python work
(`after_work_p50_ms`): what one signature costs inside a request, whose parsing,
policy and store work push SoftHSM's code and data out of the core's caches
(a back-to-back loop keeps them hot), and of calls after 2 ms asleep
(`after_idle_p50_ms`): an HSM worker between one-item requests, whose core may
have gone idle (on these VMs a pipe round trip to a process asleep 3 ms takes
0.17 ms against 0.04-0.08 ms to one kept busy).

`... --window START SECONDS` signs back to back from the wall-clock time START
for SECONDS and prints the rate: two such processes started together measure
what two cores of C_Sign alone give (the e2e run's real ceiling).

SOFTHSM2_CONF must name the token's configuration.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time

from custos.hsm.errors import KeyNotFound
from custos.hsm.pkcs11_token import Pkcs11Token
from custos.signer.tools.devsetup import SOFTHSM_LIBRARY, TOKEN_LABEL

WARM_UP = 200
WORK_SECONDS = 0.001
IDLE_SECONDS = 0.002  # a worker's rest between one-item requests that met the budget


def _other_work(seconds: float) -> None:
    """About `seconds` of allocation-heavy Python, like a request's own work."""
    end = time.perf_counter() + seconds
    scratch: dict[int, str] = {}
    while time.perf_counter() < end:
        scratch[len(scratch)] = str(len(scratch))


def _token(pin_file: str, key_id: str) -> Pkcs11Token:
    with open(pin_file) as handle:
        token = Pkcs11Token(SOFTHSM_LIBRARY, TOKEN_LABEL, handle.read())
    try:
        token.public_key(key_id)
    except KeyNotFound:  # the first run makes the key
        token.generate_secp256k1(key_id)
    return token


def back_to_back(token: Pkcs11Token, key_id: str, signs: int) -> dict[str, float]:
    digests = [hashlib.sha256(str(i).encode()).digest() for i in range(signs)]
    for digest in digests[:WARM_UP]:
        token.sign_raw(key_id, digest)
    latencies = []
    cpu = time.process_time()
    start = time.perf_counter()
    for digest in digests:
        began = time.perf_counter()
        token.sign_raw(key_id, digest)
        latencies.append(time.perf_counter() - began)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu
    after_work, after_idle = [], []
    for digest in digests[: max(50, signs // 8)]:
        _other_work(WORK_SECONDS)
        began = time.perf_counter()
        token.sign_raw(key_id, digest)
        after_work.append(time.perf_counter() - began)
        time.sleep(IDLE_SECONDS)
        began = time.perf_counter()
        token.sign_raw(key_id, digest)
        after_idle.append(time.perf_counter() - began)
    return {
        "per_s": signs / total,
        "p50_ms": statistics.median(latencies) * 1000,
        "cpu_us": cpu / signs * 1e6,
        "after_work_p50_ms": statistics.median(after_work) * 1000,
        "after_idle_p50_ms": statistics.median(after_idle) * 1000,
    }


def window(token: Pkcs11Token, key_id: str, start: float, seconds: float) -> dict[str, float]:
    digest = hashlib.sha256(key_id.encode()).digest()
    for _ in range(WARM_UP):
        token.sign_raw(key_id, digest)
    while time.time() < start:
        time.sleep(0.001)
    # A process ready late (a loaded machine) counts from its own start.
    began, end, count = time.time(), start + seconds, 0
    while time.time() < end:
        token.sign_raw(key_id, digest)
        count += 1
    return {"per_s": count / max(end - began, 1e-3), "late_s": max(0.0, began - start)}


def main(argv: list[str]) -> int:
    pin_file, key_id = argv[0], argv[1]
    token = _token(pin_file, key_id)
    if argv[2] == "--window":
        result = window(token, key_id, float(argv[3]), float(argv[4]))
    else:
        result = back_to_back(token, key_id, int(argv[2]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
