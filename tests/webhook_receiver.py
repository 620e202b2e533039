"""A webhook receiver for tests: HTTPS (a certificate from a test CA), checks every
delivery's signature with `cryptography` against the published public key, the way
the README tells receivers to, and records what it accepted."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from custos.signer.tools.devsetup import DevCa


def verify_delivery(public_key_pem: bytes, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: the Ed25519 signature over f"{timestamp}.".encode() + body."""
    key = load_pem_public_key(public_key_pem)
    assert isinstance(key, Ed25519PublicKey)
    try:
        signature = base64.b64decode(headers["X-Custos-Signature"], validate=True)
        timestamp = int(headers["X-Custos-Timestamp"])
        key.verify(signature, f"{timestamp}.".encode() + body)
    except (KeyError, ValueError, InvalidSignature):
        return False
    return True


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    """Answers `status` (settable: 503 for an outage) and records every request."""

    public_key_pem: bytes
    ca_file: Path
    port: int = 0
    status: int = 200
    requests: list[Delivery] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/hooks/custos"

    def accepted(self) -> list[Delivery]:
        """Deliveries answered 2xx, in arrival order."""
        with self.lock:
            return [d for d in self.requests if d.headers.get("X-Answered") == "2xx"]

    def sequences(self) -> list[int]:
        return [int(d.headers["X-Custos-Sequence"]) for d in self.accepted()]

    def wait_for(self, predicate: Callable[[Receiver], bool], timeout: float = 180.0) -> None:
        """Until `predicate(self)` holds (a bound on a hang, not a speed assertion)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met in {timeout}s")
                self.arrived.wait(min(left, 1.0))

    def deduplicated(self) -> list[int]:
        """What a receiver that drops sequence numbers it has seen processes, in order.

        Fails on a delivery out of order: a sequence number below the last one
        processed that was never processed, or a re-delivery with another body.
        """
        processed: dict[int, bytes] = {}
        last = -1
        for delivery in self.accepted():
            seq = int(delivery.headers["X-Custos-Sequence"])
            if seq <= last:
                assert processed.get(seq) == delivery.body, f"seq {seq} out of order"
                continue
            processed[seq] = delivery.body
            last = seq
        return list(processed)


def start_receiver(directory: Path, public_key_pem: bytes) -> tuple[Receiver, ThreadingHTTPServer]:
    ca = DevCa(directory / "receiver-pki")
    cert, key = ca.issue("localhost", server=True)
    receiver = Receiver(public_key_pem, ca.cert_path)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            verified = verify_delivery(receiver.public_key_pem, headers, body)
            # A receiver refuses what does not verify, or whose body's sequence is
            # not the header's (the header is not signed; the body is).
            if verified and "X-Custos-Sequence" in headers:
                verified = json.loads(body)["seq"] == int(headers["X-Custos-Sequence"])
            status = receiver.status if verified else 401
            headers["X-Answered"] = "2xx" if 200 <= status < 300 else str(status)
            with receiver.arrived:
                receiver.requests.append(Delivery(headers, body, verified))
                receiver.arrived.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    receiver.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return receiver, httpd
