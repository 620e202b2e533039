"""Signed HTTPS deliveries: what Custos POSTs to receivers outside it (webhooks, review hooks).

Every delivery is signed with the event-signing key, an Ed25519 key that lives
in the HSM like the audit key and is made only by a set-up step (`custos init`,
`custos events init-key`); its fingerprint is pinned in the config
(`[events] key_fingerprint`), and the service refuses to start with a token
whose key differs. The signature covers the exact body bytes and the time of
sending, `f"{timestamp}.".encode() + body`, so a receiver can refuse a body
that was altered or a delivery replayed long after it was sent.

Headers of a delivery:
  X-Custos-Timestamp  seconds since the epoch, decimal
  X-Custos-Key-Id     SHA-256 (hex) of the raw public key (the pinned fingerprint)
  X-Custos-Signature  base64 Ed25519 signature over f"{timestamp}.".encode() + body

Only HTTPS: redirects are not followed (a 3xx is a failed delivery, never a
second request to another host), the response body read is bounded, and one
timeout bounds the whole exchange (a receiver that drips bytes cannot hold a
delivery past it).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from custos.audit.checkpoint import public_key_pem
from custos.signer.usecases.auditlog import key_fingerprint

MAX_RESPONSE_BYTES = 64 * 1024
MAX_URL_LENGTH = 2048

TIMESTAMP_HEADER = "X-Custos-Timestamp"
KEY_ID_HEADER = "X-Custos-Key-Id"
SIGNATURE_HEADER = "X-Custos-Signature"


def signed_message(body: bytes, timestamp: int) -> bytes:
    """The bytes a delivery's signature covers."""
    return f"{timestamp}.".encode() + body


class DeliverySigner:
    """Signs delivery bodies with the HSM-resident event-signing key (Ed25519)."""

    def __init__(self, public_key: bytes, sign: Callable[[bytes], bytes]) -> None:
        """`public_key`: the raw 32-byte key; `sign`: Ed25519 in the HSM (pool.sign_eddsa)."""
        if len(public_key) != 32:
            raise ValueError("the event-signing key must be a raw 32-byte Ed25519 public key")
        self._public_key = public_key
        self._sign = sign
        self.key_id = key_fingerprint(public_key)

    def sign(self, body: bytes, timestamp: int) -> dict[str, str]:
        """The signature headers of `body` sent at `timestamp` (seconds since the epoch)."""
        signature = self._sign(signed_message(body, timestamp))
        return {
            TIMESTAMP_HEADER: str(timestamp),
            KEY_ID_HEADER: self.key_id,
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        }

    def public_key_pem(self) -> bytes:
        """The public key receivers verify with (PEM SubjectPublicKeyInfo)."""
        return public_key_pem(self._public_key)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    status: int  # the receiver's HTTP status
    body: bytes  # the first MAX_RESPONSE_BYTES of its response
    truncated: bool = False  # the response was longer than that

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class DeliveryError(Exception):
    """The delivery did not get an HTTP answer: bad URL, connection, TLS, or timeout.

    The message names the endpoint's host and what failed, never the body.
    """


def check_url(url: str) -> str:
    """`url` if Custos may deliver to it, else ValueError saying why (an absolute https URL)."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("must be an https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError("has an invalid port") from None
    return url


def post_signed(
    url: str,
    body: bytes,
    signer: DeliverySigner,
    *,
    timeout_s: float,
    ca_file: str | None,
    now: Callable[[], int],
    headers: Mapping[str, str] | None = None,
) -> DeliveryResult:
    """POST `body` (JSON) to `url`, signed at `now()`; the answer, whatever its status.

    `ca_file`: the CAs that may vouch for the receiver (None: the system's).
    `headers`: extra headers (not signed: anything a receiver relies on must be
    in the body too). Raises DeliveryError when no HTTP answer came within
    `timeout_s` seconds in all.
    """
    try:
        check_url(url)
    except ValueError as exc:
        raise DeliveryError(f"cannot deliver to this URL: it {exc}") from None
    parts = urlsplit(url)
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"cannot load the CA file {ca_file}: {exc}") from None
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, timeout=timeout_s, context=context
    )
    request = _Request(
        target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        body=body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": "custos-delivery/1",
            **(headers or {}),
            **signer.sign(body, now()),
        },
    )
    return _exchange(connection, request, f"{parts.hostname}:{parts.port or 443}", timeout_s)


@dataclass(frozen=True, slots=True)
class _Request:
    target: str
    body: bytes
    headers: dict[str, str]


def _exchange(
    connection: http.client.HTTPSConnection, request: _Request, where: str, timeout_s: float
) -> DeliveryResult:
    # One deadline for the whole exchange: the socket timeout bounds each read,
    # the watchdog the sum (a receiver sending one byte per second).
    expired = threading.Event()

    def abort() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timed_out = DeliveryError(f"{where}: no answer within {timeout_s:g} s")
    watchdog = threading.Timer(timeout_s, abort)
    watchdog.daemon = True
    started = time.monotonic()
    watchdog.start()
    try:
        connection.request("POST", request.target, body=request.body, headers=request.headers)
        response = connection.getresponse()
        data = response.read(MAX_RESPONSE_BYTES + 1)
        if expired.is_set():
            raise timed_out
        return DeliveryResult(
            response.status, data[:MAX_RESPONSE_BYTES], len(data) > MAX_RESPONSE_BYTES
        )
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(
            f"{where}: the receiver's certificate did not verify: {exc.verify_message}"
        ) from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"{where}: TLS failed: {exc.reason or exc}") from None
    except TimeoutError:
        raise timed_out from None
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise timed_out from None
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        elapsed = time.monotonic() - started
        raise DeliveryError(f"{where}: delivery failed after {elapsed:.1f} s: {what}") from None
    finally:
        watchdog.cancel()
        connection.close()
