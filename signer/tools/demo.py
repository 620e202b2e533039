"""`custos demo` (what `make demo` runs): one multi-chain batch through the real service.

Sets up (or reuses) a development environment in DIR, starts `custos serve` on
the embedded SQLite store, creates one key per chain, signs a batch holding a
Bitcoin, an Ethereum, a BNB Smart Chain and a Tron transaction over mTLS,
shows that a retry replays the stored result, writes DIR/result.json, and
stops the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pyotp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from custos.proto.custos.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    signer_pb2_grpc,
)
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.bitcoin_address import script_for_address, sha256d
from custos.signer.tools.client import ClientProfile
from custos.signer.tools.devsetup import init_dev, subject_string

KEYS = {"bitcoin": "demo-btc", "ethereum": "demo-eth", "bsc": "demo-bsc", "tron": "demo-tron"}
# An ERC-20 contract address for the BSC item: the first EIP-55 example address.
EXAMPLE_TOKEN = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # noqa: S105 - an address


def _address(key: keys_pb2.Key, chain: str, network: str, kind: str = "account") -> str:
    return next(
        a.address for a in key.addresses if (a.chain, a.network, a.kind) == (chain, network, kind)
    )


def start_server(config: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`custos serve` as a child process; returns it and its port once it listens."""
    port_file = workdir / "server.port"
    port_file.unlink(missing_ok=True)
    log = (workdir / "server.log").open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "custos.signer.tools.cli",
            "serve",
            "--config",
            str(config),
            "--port-file",
            str(port_file),
        ],
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 60
    while (port := read_port_file(port_file)) is None:
        if process.poll() is not None:
            raise SystemExit(f"the server exited at start-up; see {workdir / 'server.log'}")
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the server did not start within 60 s")
        time.sleep(0.1)
    return process, port


def read_port_file(path: Path) -> int | None:
    """The port `custos serve --port-file` wrote, or None while it is not (fully) there.

    The server writes it atomically (temporary file, then rename); a file from an
    older server that wrote in place may still be seen empty or partial: not yet.
    """
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _port_in_use(listen: str) -> bool:
    """Whether another process already listens on `listen` (host:port; port 0 never is)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return False
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As grpc binds: connections of a server stopped a moment ago (TIME_WAIT)
        # do not count, a listening socket does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]") or "127.0.0.1", int(port)))
        except OSError:
            return True
    return False


def _wait_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 30
    while True:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service="custos.v1.Signer"), timeout=5)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _ensure_key(stub: keys_pb2_grpc.KeysStub, key_id: str) -> keys_pb2.Key:
    try:
        # Demo keys sign for test networks only (the batch is testnet, Sepolia, BSC testnet, nile).
        key: keys_pb2.Key = stub.CreateKey(
            keys_pb2.CreateKeyRequest(key_id=key_id, network_class=keys_pb2.NETWORK_CLASS_TESTNET)
        )
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        key = stub.GetKey(keys_pb2.GetKeyRequest(key_id=key_id))
    if key.network_class != keys_pb2.NETWORK_CLASS_TESTNET:
        # A store from before network classes: its keys became mainnet keys.
        raise SystemExit(
            f"[demo] key {key_id} is not a testnet key (made before network classes,"
            " which made it mainnet); remove the demo directory and run again"
        )
    return key


def funding_tx(address: str, value: int) -> bytes:
    """A one-input, one-output transaction paying `value` to `address` (made up, testnet)."""
    script = script_for_address(address, "testnet")[1]
    outpoint = hashlib.sha256(f"custos demo funding {address}".encode()).digest() + bytes(4)
    return b"".join(
        [
            (2).to_bytes(4, "little"),  # version
            b"\x01" + outpoint + b"\x00" + b"\xff" * 4,  # one input, empty scriptSig
            b"\x01" + value.to_bytes(8, "little") + bytes([len(script)]) + script,
            bytes(4),  # lock time
        ]
    )


def build_batch(keys: dict[str, keys_pb2.Key], request_id: str) -> pb.SignBatchRequest:
    btc, eth, bsc, tron = (keys[c] for c in ("bitcoin", "ethereum", "bsc", "tron"))
    own_btc = _address(btc, "bitcoin", "testnet", "p2wpkh")
    # A made-up previous transaction paying our own P2WPKH address (testnet); the
    # input carries it whole, and the server proves the value and script from it.
    prev_tx = funding_tx(own_btc, 100_000)
    funding = sha256d(prev_tx)[::-1].hex()
    now_ms = int(time.time() * 1000)
    recipient = _address(eth, "bsc", "testnet")
    transfer = "0xa9059cbb" + recipient[2:].lower().rjust(64, "0") + f"{25 * 10**18:064x}"
    return pb.SignBatchRequest(
        request_id=request_id,
        items=[
            pb.SignItem(
                key_id=btc.key_id,
                bitcoin=pb.BitcoinTransaction(
                    network="testnet",
                    inputs=[
                        pb.BitcoinInput(
                            txid=funding,
                            vout=0,
                            prev_tx=prev_tx,
                            value=100_000,  # optional: checked against prev_tx
                            script_type="p2wpkh",
                        )
                    ],
                    outputs=[
                        pb.BitcoinOutput(
                            address=_address(eth, "bitcoin", "testnet", "p2wpkh"), value=60_000
                        ),
                        pb.BitcoinOutput(address=own_btc, value=39_000),  # change
                    ],
                ),
            ),
            pb.SignItem(
                key_id=eth.key_id,
                evm=pb.EvmTransaction(
                    chain_id=11155111,
                    type=pb.EVM_TX_TYPE_EIP1559,
                    nonce=0,
                    to=_address(bsc, "ethereum", "sepolia"),
                    value=str(10**16),
                    gas_limit=21_000,
                    max_fee_per_gas="30000000000",
                    max_priority_fee_per_gas="1500000000",
                ),
            ),
            pb.SignItem(
                key_id=bsc.key_id,
                evm=pb.EvmTransaction(
                    chain_id=97,
                    type=pb.EVM_TX_TYPE_LEGACY,
                    nonce=0,
                    to=EXAMPLE_TOKEN,
                    value="0",
                    data=transfer,
                    gas_limit=60_000,
                    gas_price="10000000000",
                ),
            ),
            pb.SignItem(
                key_id=tron.key_id,
                tron=pb.TronTransaction(
                    network="nile",
                    trx_transfer=pb.TronTrxTransfer(
                        to=_address(btc, "tron", "nile"), amount=1_500_000
                    ),
                    ref_block_bytes=f"{now_ms // 3000 % 65536:04x}",
                    ref_block_hash=hashlib.sha256(str(now_ms).encode()).hexdigest()[:16],
                    timestamp=now_ms,
                    expiration=now_ms + 60_000,
                ),
            ),
        ],
    )


def result_document(request: pb.SignBatchRequest, response: pb.SignBatchResponse) -> dict[str, Any]:
    items = []
    for item, signed in zip(request.items, response.items, strict=True):
        entry: dict[str, Any] = {
            "chain": signed.chain,
            "network": signed.network,
            "key_id": signed.key_id,
            "address": signed.address,
            "tx_id": signed.tx_id,
            "raw_tx": json.loads(signed.raw_tx) if signed.chain == "tron" else signed.raw_tx,
        }
        if signed.chain == "bitcoin":
            script = script_for_address(signed.address, signed.network)[1]
            entry["prevouts"] = [
                {
                    "txid": i.txid,
                    "vout": i.vout,
                    "value": i.value,
                    "script_pubkey": script.hex(),
                    "prev_tx": i.prev_tx.hex(),
                }
                for i in item.bitcoin.inputs
            ]
            entry["fee_sat"] = signed.fee
        items.append(entry)
    return {"request_id": response.request_id, "items": items}


def approval_flow(
    directory: Path, endpoint: str, key: keys_pb2.Key, signer: signer_pb2_grpc.SignerStub
) -> dict[str, Any]:
    """A 2 ETH Sepolia payment: held by the policy, approved by two approvers with TOTP."""

    def channel(name: str) -> grpc.Channel:
        return ClientProfile.load(directory / "clients" / f"{name}.toml").channel(endpoint)

    officer = policy_pb2_grpc.PoliciesStub(channel("officer"))
    totp: dict[str, pyotp.TOTP] = {}
    for name in ("approver", "approver2"):
        # The officer hands out a one-time token; each approver enrolls itself with it,
        # so only the approver ever sees its secret.
        token = officer.IssueTotpToken(
            policy_pb2.IssueTotpTokenRequest(subject=subject_string(name))
        ).enrollment_token
        uri = policy_pb2_grpc.PoliciesStub(channel(name)).EnrollTotp(
            policy_pb2.EnrollTotpRequest(enrollment_token=token)
        )
        # What the approver's authenticator app does with the otpauth:// URI.
        totp[name] = pyotp.TOTP(pyotp.parse_uri(uri.otpauth_uri).secret)
    print("[demo] approver and approver2 enrolled their own TOTP with officer-issued tokens")

    events: list[str] = []
    watch = policy_pb2_grpc.ApprovalsStub(channel("payments")).WatchEvents(
        policy_pb2.WatchEventsRequest()
    )

    def pump() -> None:
        with contextlib.suppress(grpc.RpcError):
            for event in watch:
                events.append(event.kind)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 10
    while "watching" not in events and time.monotonic() < deadline:
        time.sleep(0.02)
    request = pb.SignBatchRequest(
        request_id=f"demo-large-{time.strftime('%Y%m%dT%H%M%S')}",
        items=[
            pb.SignItem(
                key_id=key.key_id,
                evm=pb.EvmTransaction(
                    chain_id=11155111,
                    type=pb.EVM_TX_TYPE_EIP1559,
                    nonce=1,
                    to=_address(key, "ethereum", "sepolia"),
                    value=str(2 * 10**18),
                    gas_limit=21_000,
                    max_fee_per_gas="30000000000",
                    max_priority_fee_per_gas="1500000000",
                ),
            )
        ],
    )
    held = signer.SignBatch(request, timeout=60)
    print(
        f"[demo] 2 ETH on Sepolia: held for approval ({', '.join(held.rules)}),"
        f" approval id {held.approval_id}"
    )
    approvals = {n: policy_pb2_grpc.ApprovalsStub(channel(n)) for n in totp}
    pending = next(
        b
        for b in approvals["approver"].ListPending(policy_pb2.ListPendingRequest()).batches
        if b.approval_id == held.approval_id
    )
    print(f"[demo] approver sees: {pending.items[0].destinations[0]} (needs {pending.missing[0]})")
    for name, otp in totp.items():
        decide = policy_pb2.DecideRequest(
            approval_id=held.approval_id,
            request_digest=pending.request_digest,
            totp_code=otp.now(),
        )
        print(f"[demo] {name} approved with a TOTP code: {approvals[name].Approve(decide).state}")
    signed = signer.GetBatch(pb.GetBatchRequest(request_id=request.request_id), timeout=30)
    deadline = time.monotonic() + 10
    while "signed" not in events and time.monotonic() < deadline:
        time.sleep(0.05)
    watch.cancel()
    events.remove("watching")
    print(f"[demo] WatchEvents delivered: {', '.join(events)}; tx {signed.items[0].tx_id}")
    item = signed.items[0]
    return {
        "approval_id": held.approval_id,
        "events": events,
        "chain": item.chain,
        "network": item.network,
        "address": item.address,
        "tx_id": item.tx_id,
        "raw_tx": item.raw_tx,
    }


def run_demo(directory: Path, listen: str = "127.0.0.1:50051") -> int:
    directory = directory.resolve()
    if _port_in_use(listen):
        # Another Custos (say, a second `make demo`) listens there. The server
        # refuses a shared port, so this demo takes a free one instead.
        print(f"[demo] {listen} is in use by another process; using a free port instead")
        listen = listen.rpartition(":")[0] + ":0"
    config = init_dev(directory, listen)
    print(f"[demo] development token, CA and identities in {directory}")
    process, port = start_server(config, directory)
    endpoint = f"127.0.0.1:{port}"
    try:
        officer = ClientProfile.load(directory / "clients" / "officer.toml").channel(endpoint)
        _wait_serving(officer)
        print(f"[demo] server up on {endpoint} (mTLS, SQLite store, SoftHSM token)")
        keys_stub = keys_pb2_grpc.KeysStub(officer)
        keys = {chain: _ensure_key(keys_stub, key_id) for chain, key_id in KEYS.items()}
        print(
            "[demo] keys: " + ", ".join(f"{k.key_id} ({k.public_key[:12]}…)" for k in keys.values())
        )
        payments = ClientProfile.load(directory / "clients" / "payments.toml").channel(endpoint)
        signer = signer_pb2_grpc.SignerStub(payments)
        request = build_batch(keys, f"demo-{time.strftime('%Y%m%dT%H%M%S')}-{port}")
        started = time.perf_counter()
        response = signer.SignBatch(request, timeout=60)
        elapsed_ms = (time.perf_counter() - started) * 1000
        count = len(response.items)
        print(f"[demo] SignBatch {request.request_id}: {count} items in {elapsed_ms:.0f} ms")
        for signed in response.items:
            print(f"  {signed.chain:8} {signed.network:8} {signed.address:44} tx {signed.tx_id}")
        replay = signer.SignBatch(request, timeout=60)
        same = [i.tx_id for i in replay.items] == [i.tx_id for i in response.items]
        print(
            f"[demo] retry with the same request id: replayed={replay.replayed}, same tx ids={same}"
        )
        document = result_document(request, response)
        document["approval_flow"] = approval_flow(directory, endpoint, keys["ethereum"], signer)
        (directory / "result.json").write_text(json.dumps(document, indent=2) + "\n")
        print(f"[demo] wrote {directory / 'result.json'}")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        print("[demo] server stopped")
    return 0 if same else 1
