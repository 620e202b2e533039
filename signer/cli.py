"""The `custos` command line: set-up, the server, and a client for every RPC."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from hsm.errors import HsmConfigError, HsmError
from proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    signer_pb2,
    signer_pb2_grpc,
)
from signer.cli_integrity import add_commands as add_integrity_commands
from signer.cli_policy import add_commands as add_policy_commands
from signer.client import ClientProfile
from signer.config import load_config, read_pin
from signer.errors import ConfigError
from signer.logs import configure as configure_logs
from signer.logs import register_secret
from signer.store.base import StoreUnavailable

EPILOG = """\
Quick start (development):
  custos init --dir .demo                       # token, CA, certificates, config
  custos serve --config .demo/custos.toml       # run the server
  custos keys create hot-1 --network-class testnet --client .demo/clients/officer.toml
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


def _write_atomically(path: Path, text: str) -> None:
    """Readers polling for `path` see nothing or all of it, never a partial write."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def cmd_serve(args: argparse.Namespace) -> int:
    from signer.server import CustosServer

    config = load_config(Path(args.config))
    pin = read_pin(config.hsm)
    register_secret(pin)
    server = CustosServer(config, pin)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if args.port_file:
        _write_atomically(Path(args.port_file), f"{server.port}\n")
    stopping.wait()
    logging.getLogger("custos.server").info("shutting down")
    server.stop(grace=args.grace)
    return 0


_NETWORK_CLASSES = {
    "mainnet": keys_pb2.NETWORK_CLASS_MAINNET,
    "testnet": keys_pb2.NETWORK_CLASS_TESTNET,
}


def cmd_keys(args: argparse.Namespace) -> int:
    stub = keys_pb2_grpc.KeysStub(_profile(args).channel())
    calls: dict[str, Callable[[], Message]] = {
        "create": lambda: stub.CreateKey(
            keys_pb2.CreateKeyRequest(
                key_id=args.key_id, network_class=_NETWORK_CLASSES[args.network_class]
            )
        ),
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


def cmd_audit_export(args: argparse.Namespace) -> int:
    stub = audit_pb2_grpc.AuditStub(_profile(args).channel())
    out = Path(args.out)
    # The checkpoint first: the export then certainly covers it.
    checkpoint = stub.GetLatestCheckpoint(audit_pb2.GetLatestCheckpointRequest())
    key = stub.GetAuditKey(audit_pb2.GetAuditKeyRequest())
    count = 0
    # By default the export ends where the checkpoint does: every record in it is proven.
    to_seq = args.to or checkpoint.size
    with out.open("wb") as handle:
        for chunk in stub.Export(audit_pb2.ExportRequest(from_seq=0, to_seq=to_seq)):
            handle.write(chunk.lines)
            count += chunk.lines.count(b"\n")
    Path(f"{out}.checkpoint").write_text(checkpoint.note)
    Path(f"{out}.pub.pem").write_text(key.public_key_pem)
    print(f"{count} records -> {out}")
    print(f"checkpoint (size {checkpoint.size}) -> {out}.checkpoint")
    print(f"audit public key ({key.key_name}) -> {out}.pub.pem")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from audit.verify import verify_export_files

    try:
        report = verify_export_files(
            args.export, args.public_key, args.checkpoint, args.key_name, origin=args.origin
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot verify: {exc}") from exc
    for note in report.notes:
        print(f"note: {note}")
    if report.ok and report.trusted_size < report.records and not args.allow_uncovered:
        print(
            f"FAILED: records {report.trusted_size}..{report.records - 1} are not covered by any"
            " verified checkpoint: nothing proves they were written by the log"
            " (pass --allow-uncovered to accept them unproven)",
            file=sys.stderr,
        )
        return 1
    if report.ok:
        print(
            f"OK: {report.records} records, hash chain intact, "
            f"{report.checkpoints_verified} signed checkpoint(s) verified"
        )
        return 0
    if report.first_bad_seq is not None:
        print(f"FAILED at record {report.first_bad_seq}", file=sys.stderr)
    for problem in report.problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1


def cmd_audit_tail(args: argparse.Namespace) -> int:
    from audit.record import AuditRecord

    stub = audit_pb2_grpc.AuditStub(_profile(args).channel())
    size = stub.GetLatestCheckpoint(audit_pb2.GetLatestCheckpointRequest()).size
    start = max(0, size + 1 - args.n) if not args.from_seq else args.from_seq
    request = audit_pb2.StreamRecordsRequest(from_seq=start, follow=args.follow)
    for item in stub.StreamRecords(request):
        record = AuditRecord.decode(item.encoded)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.ts_ms / 1000))
        fields = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(record.event.fields.items()))
        print(f"{record.seq:>8} {when}Z {record.event.kind:<18} {record.event.actor}  {fields}")
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    stub = audit_pb2_grpc.AuditStub(_profile(args).channel())
    print(stub.CreateCheckpoint(audit_pb2.CreateCheckpointRequest()).note, end="")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from signer.store.factory import open_store

    config = load_config(Path(args.config))
    try:
        store = open_store(config.store.url)  # opening applies pending migrations
    except ValueError as exc:
        raise ConfigError(f"store.url: {exc}") from exc
    applied: list[int] = getattr(store, "migrate", list)()
    store.close()
    print(f"store schema up to date ({len(applied)} migration(s) applied now)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from signer.demo import run_demo

    return run_demo(Path(args.dir), args.listen)


def _add_audit_commands(sub: Any, client_help: str) -> None:
    p = sub.add_parser("audit", help="export, verify and read the audit log")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "export", help="download the log, its latest checkpoint and the audit key (auditor)"
    )
    a.add_argument("--out", required=True, help="export file; .checkpoint and .pub.pem beside it")
    a.add_argument(
        "--to", type=int, default=0, help="stop before this record (default: the checkpoint's size)"
    )
    a.add_argument("--client", help=client_help)
    a.set_defaults(func=cmd_audit_export)
    a = actions.add_parser(
        "verify", help="verify an export offline: chain, Merkle roots, signed checkpoints"
    )
    a.add_argument("export", help="file written by `custos audit export`")
    a.add_argument("--public-key", required=True, help="the audit key, PEM (Ed25519)")
    a.add_argument("--checkpoint", action="append", default=[], help="signed checkpoint note")
    a.add_argument("--key-name", default="custos-audit", help="name in the signature lines")
    a.add_argument("--origin", help="the log's origin line, if known")
    a.add_argument(
        "--allow-uncovered",
        action="store_true",
        help="accept records after the last checkpoint (unproven) instead of failing",
    )
    a.set_defaults(func=cmd_audit_verify)
    a = actions.add_parser("tail", help="the latest events, readable (auditor)")
    a.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    a.add_argument("--from-seq", type=int, default=0, help="start at this sequence number")
    a.add_argument("--follow", action="store_true", help="keep printing new records")
    a.add_argument("--client", help=client_help)
    a.set_defaults(func=cmd_audit_tail)
    a = actions.add_parser("checkpoint", help="sign a checkpoint now (officer)")
    a.add_argument("--client", help=client_help)
    a.set_defaults(func=cmd_audit_checkpoint)


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
    p.add_argument(
        "--log-format", choices=("json", "text"), default="json", help="log lines (default json)"
    )
    p.set_defaults(func=cmd_serve)

    client_help = "client profile TOML (endpoint + mTLS files); default $CUSTOS_CLIENT"
    p = sub.add_parser("keys", help="create, list, show, disable or enable keys (officer)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("create", help="generate a secp256k1 key inside the HSM")
    a.add_argument("key_id")
    # Required, no default: the class is fixed for the key's life, and either
    # wrong default costs something that cannot be undone (a mainnet key made
    # as testnet signs mainnet spends under testnet rules; the reverse is a
    # key that can never sign for the networks it was meant for).
    a.add_argument(
        "--network-class",
        required=True,
        choices=tuple(_NETWORK_CLASSES),
        help="mainnet, or testnet (testnet/signet/regtest, Sepolia, Holesky, BSC testnet,"
        " nile, shasta); fixed for the key's life",
    )
    a.add_argument("--client", help=client_help)
    for action, text in (
        ("show", "show a key, its class, its public key and its addresses"),
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

    _add_audit_commands(sub, client_help)
    add_policy_commands(sub, client_help, _profile)
    add_integrity_commands(sub)

    p = sub.add_parser("db", help="store maintenance")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("upgrade", help="apply schema migrations (also done at start-up)")
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("demo", help="run the end-to-end demo (what `make demo` runs)")
    p.add_argument("--dir", default=".demo")
    p.add_argument("--listen", default="127.0.0.1:50051", help="server address (port 0: any)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    json_lines = getattr(args, "log_format", "text") == "json"
    configure_logs(logging.DEBUG if args.verbose else logging.INFO, json_lines=json_lines)

    def fail(message: str) -> None:
        if json_lines:  # stderr holds only JSON objects in this mode
            logging.getLogger("custos").error(message)
        else:
            print(message, file=sys.stderr)

    try:
        result: Any = args.func(args)
    except (ConfigError, HsmConfigError) as exc:
        fail(f"custos: error: {exc}")
        return 2
    except (HsmError, StoreUnavailable) as exc:
        fail(f"custos: error: {type(exc).__name__}: {exc}")
        return 3
    except grpc.RpcError as exc:
        print(f"custos: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
