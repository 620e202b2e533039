"""The `custos` command line: set-up, the server, and a client for every RPC."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from hsm.errors import HsmConfigError, HsmError
from proto.custos.v1 import keys_pb2, keys_pb2_grpc, signer_pb2, signer_pb2_grpc
from signer.client import ClientProfile
from signer.config import load_config, read_pin
from signer.errors import ConfigError
from signer.store.base import StoreUnavailable

EPILOG = """\
Quick start (development):
  custos init --dir .demo                       # token, CA, certificates, config
  custos serve --config .demo/custos.toml       # run the server
  custos keys create hot-1 --client .demo/clients/officer.toml
  custos sign batch.json --client .demo/clients/payments.toml

Or run `make demo` for all of that with a multi-chain batch.
"""


def _print(message: Message) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def _profile(args: argparse.Namespace) -> ClientProfile:
    path = args.client or os.environ.get("CUSTOS_CLIENT")
    if not path:
        raise ConfigError("no client profile: pass --client FILE or set $CUSTOS_CLIENT")
    return ClientProfile.load(Path(path))


def cmd_init(args: argparse.Namespace) -> int:
    from signer.devsetup import init_dev

    config = init_dev(Path(args.dir), args.listen)
    print(f"development environment ready: {config}")
    print(
        f"client profiles: {config.parent / 'clients'}/{{officer,payments,approver,auditor}}.toml"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from signer.server import CustosServer

    config = load_config(Path(args.config))
    server = CustosServer(config, read_pin(config.hsm))
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if args.port_file:
        Path(args.port_file).write_text(str(server.port))
    stopping.wait()
    logging.getLogger("custos.server").info("shutting down")
    server.stop(grace=args.grace)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    stub = keys_pb2_grpc.KeysStub(_profile(args).channel())
    calls: dict[str, Callable[[], Message]] = {
        "create": lambda: stub.CreateKey(keys_pb2.CreateKeyRequest(key_id=args.key_id)),
        "show": lambda: stub.GetKey(keys_pb2.GetKeyRequest(key_id=args.key_id)),
        "list": lambda: stub.ListKeys(keys_pb2.ListKeysRequest()),
        "disable": lambda: stub.DisableKey(keys_pb2.SetKeyStateRequest(key_id=args.key_id)),
        "enable": lambda: stub.EnableKey(keys_pb2.SetKeyStateRequest(key_id=args.key_id)),
    }
    _print(calls[args.action]())
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from exc
    try:
        request = json_format.Parse(text, signer_pb2.SignBatchRequest())
    except json_format.ParseError as exc:
        raise ConfigError(f"{args.file}: not a SignBatchRequest: {exc}") from exc
    stub = signer_pb2_grpc.SignerStub(_profile(args).channel())
    _print(stub.SignBatch(request, timeout=args.timeout))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    stub = signer_pb2_grpc.SignerStub(_profile(args).channel())
    _print(stub.GetBatch(signer_pb2.GetBatchRequest(request_id=args.request_id)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from signer.demo import run_demo

    return run_demo(Path(args.dir), args.listen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="custos",
        description="HSM-backed key custody and multi-chain transaction signing.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a development token, CA, certificates and config")
    p.add_argument("--dir", default=".demo", help="directory to create (default .demo)")
    p.add_argument("--listen", default="127.0.0.1:50051", help="server address to configure")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", help="run the signing server")
    p.add_argument("--config", required=True, help="TOML configuration file")
    p.add_argument("--port-file", help="write the bound port here once serving")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to finish in-flight RPCs")
    p.set_defaults(func=cmd_serve)

    client_help = "client profile TOML (endpoint + mTLS files); default $CUSTOS_CLIENT"
    p = sub.add_parser("keys", help="create, list, show, disable or enable keys (officer)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("create", "generate a secp256k1 key inside the HSM"),
        ("show", "show a key, its public key and its addresses"),
        ("disable", "refuse further signing with a key"),
        ("enable", "allow signing with a key again"),
    ):
        a = actions.add_parser(action, help=text)
        a.add_argument("key_id")
        a.add_argument("--client", help=client_help)
    a = actions.add_parser("list", help="list keys")
    a.add_argument("--client", help=client_help)
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("sign", help="send a SignBatch request from a JSON file (service)")
    p.add_argument("file", help="SignBatchRequest in protobuf JSON form")
    p.add_argument("--client", help=client_help)
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("get", help="fetch the stored result of a request id (service)")
    p.add_argument("request_id")
    p.add_argument("--client", help=client_help)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("demo", help="run the end-to-end demo (what `make demo` runs)")
    p.add_argument("--dir", default=".demo")
    p.add_argument("--listen", default="127.0.0.1:50051", help="server address (port 0: any)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        result: Any = args.func(args)
    except (ConfigError, HsmConfigError) as exc:
        print(f"custos: error: {exc}", file=sys.stderr)
        return 2
    except (HsmError, StoreUnavailable) as exc:
        print(f"custos: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    except grpc.RpcError as exc:
        print(f"custos: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
