"""custos-client: what a service calling Custos needs, and nothing of the server.

The gRPC stubs of the API (custos_client.v1: signer, keys, policy, audit, webhooks),
generated with the server's own (scripts/gen_protos.py writes both), and `channel()`:
a mutual-TLS channel, the only kind Custos accepts.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

__all__ = ["channel"]

# Signed PSBTs and audit pages can exceed gRPC's default 4 MiB (the server's CLI uses the same).
_MAX_MESSAGE = 64 * 1024 * 1024


def _pem(name: str, value: str | os.PathLike[str] | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {value}: {exc.strerror}") from exc


def channel(
    target: str,
    *,
    ca: str | os.PathLike[str] | bytes,
    cert: str | os.PathLike[str] | bytes,
    key: str | os.PathLike[str] | bytes,
    server_name: str | None = None,
) -> grpc.Channel:
    """A channel to Custos at `target` (host:port) presenting this service's certificate.

    `ca` is the CA that signed the server's certificate; `cert` and `key` are this
    client's certificate (its subject is the identity Custos grants roles and keys
    to) and private key: PEM files or PEM bytes. `server_name` overrides the name
    checked against the server's certificate (when `target` is an IP address).
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem("ca", ca),
        private_key=_pem("key", key),
        certificate_chain=_pem("cert", cert),
    )
    options: list[tuple[str, str | int]] = [("grpc.max_receive_message_length", _MAX_MESSAGE)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=options)
