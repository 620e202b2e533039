"""`custos sign-psbt FILE`: add a key's signatures to a BIP174 PSBT through SignPsbt."""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from custos.proto.custos.v1 import signer_pb2, signer_pb2_grpc
from custos.signer.edge.errors import ConfigError
from custos.signer.tools.cli_output import batch_outcome
from custos.signer.tools.client import ClientProfile

PSBT_MAGIC = b"psbt\xff"


def add_commands(
    sub: Any, client_help: str, profile: Callable[[argparse.Namespace], ClientProfile]
) -> None:
    p = sub.add_parser("sign-psbt", help="add the key's signatures to a BIP174 PSBT (service)")
    p.add_argument("file", help="the PSBT, binary or base64; - reads standard input")
    p.add_argument("--key", required=True, help="key id that signs")
    p.add_argument("--network", required=True, help="mainnet | testnet | signet | regtest")
    p.add_argument("--finalize", action="store_true", help="finalize inputs once complete")
    p.add_argument("--out", help="write the signed PSBT (base64) to this file")
    p.add_argument("--request-id", default="", help="default: derived from the request")
    p.add_argument("--client", help=client_help)
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=lambda args: sign_psbt(args, profile(args)))


def read_psbt(path: str) -> bytes:
    """The binary PSBT in `path`, written in binary or (as Bitcoin Core's RPCs) in base64."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if data.startswith(PSBT_MAGIC):
        return data
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except ValueError as exc:
        raise ConfigError(f"{path}: neither a binary nor a base64 PSBT") from exc


def sign_psbt(args: argparse.Namespace, profile: ClientProfile) -> int:
    data = read_psbt(args.file)
    # The default request id is the request's digest: running the command
    # again (after an approval, or a lost answer) is the same request.
    digest = hashlib.sha256(
        b"\0".join([args.key.encode(), args.network.encode(), bytes([args.finalize]), data])
    ).hexdigest()
    request = signer_pb2.SignPsbtRequest(
        request_id=args.request_id or f"psbt-{digest[:32]}",
        key_id=args.key,
        network=args.network,
        psbt=data,
        finalize=args.finalize,
    )
    stub = signer_pb2_grpc.SignerStub(profile.channel())
    response = stub.SignPsbt(request, timeout=args.timeout)
    if args.out and response.psbt:
        out = Path(args.out)
        # Readers polling for the file see nothing or all of it.
        temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        temporary.write_text(base64.b64encode(response.psbt).decode() + "\n")
        os.replace(temporary, out)
    print(json_format.MessageToJson(response, preserving_proto_field_name=True, indent=2))
    return batch_outcome(response.batch)  # 3 while held for approval, as `custos sign`
