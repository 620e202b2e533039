"""A bare grpcio server that echoes bytes: the gRPC floor of a one-item SignBatch.

`python bench/grpc_echo.py SERVER_KEY SERVER_CERT CA_CERT` serves
/custos.v1.Signer/SignBatch on 127.0.0.1 as `custos serve` does (grpcio's
synchronous server with a thread pool, mTLS with client certificates
required) but with no Custos code at all: the handler returns its request.
It prints its port and serves until its standard input closes. A Python client
calling it back to back measures what one unary call costs on this machine
before any interceptor, decoding, store or HSM work.
"""

from __future__ import annotations

import sys
from concurrent import futures
from pathlib import Path

import grpc

THREADS = 8


def _echo(request: bytes, _context: grpc.ServicerContext) -> bytes:
    return request


def main(argv: list[str]) -> int:
    key, cert, ca = (Path(arg).read_bytes() for arg in argv[:3])
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS), options=[("grpc.so_reuseport", 0)]
    )
    handler = grpc.method_handlers_generic_handler(
        "custos.v1.Signer", {"SignBatch": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the bench closes our input
    server.stop(None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
