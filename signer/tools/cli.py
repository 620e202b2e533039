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
from collections import deque
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from custos.hsm.errors import HsmConfigError, HsmError, KeyExists, KeyNotFound
from custos.proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    signer_pb2,
    signer_pb2_grpc,
)
from custos.signer.edge.errors import ConfigError
from custos.signer.edge.logs import configure as configure_logs
from custos.signer.edge.logs import register_secret
from custos.signer.store.base import StoreUnavailable
from custos.signer.tools import cli_output
from custos.signer.tools.cli_backup import add_actions as add_backup_actions
from custos.signer.tools.cli_ceremonies import add_commands as add_ceremony_commands
from custos.signer.tools.cli_events import add_commands as add_events_commands
from custos.signer.tools.cli_import import NETWORK_CLASSES
from custos.signer.tools.cli_import import add_actions as add_import_actions
from custos.signer.tools.cli_integrity import add_commands as add_integrity_commands
from custos.signer.tools.cli_output import (
    Exit,
    add_output_argument,
    print_fields,
    print_json,
    print_table,
)
from custos.signer.tools.cli_policy import add_commands as add_policy_commands
from custos.signer.tools.cli_psbt import add_commands as add_psbt_commands
from custos.signer.tools.cli_wallets import add_commands as add_wallet_commands
from custos.signer.tools.client import ClientProfile

EPILOG = (
    """\
Quick start (development):
  custos init --dir .demo                       # token, CA, certificates, config
  custos serve --config .demo/custos.toml       # run the server
  custos keys create hot-1 --network-class testnet --client .demo/clients/officer.toml
  custos sign batch.json --client .demo/clients/payments.toml

Or run `make demo` for all of that with a multi-chain batch.

Commands that show things print a table by default; `-o json` (or
CUSTOS_OUTPUT=json) prints JSON for scripts. Shell completion:
  source <(custos completion bash)              # or: eval "$(custos completion zsh)"

"""
    + cli_output.EXIT_CODES_HELP
)

# The endpoint of the last client profile loaded, to name it when it cannot be reached.
_endpoint: str | None = None


def _profile(args: argparse.Namespace) -> ClientProfile:
    global _endpoint  # noqa: PLW0603 - one command per process
    path = args.client or os.environ.get("CUSTOS_CLIENT")
    if not path:
        raise ConfigError("no client profile: pass --client FILE or set $CUSTOS_CLIENT")
    profile = ClientProfile.load(Path(path))
    _endpoint = profile.endpoint
    return profile


def cmd_init(args: argparse.Namespace) -> int:
    from custos.signer.tools.devsetup import init_dev_report

    result = init_dev_report(Path(args.dir), args.listen, force=args.force)
    for path in result.written:
        print(f"wrote {path}")
    for path in result.kept:
        print(f"kept  {path} (exists; --force rewrites it)")
    print(f"development environment ready: {result.config}")
    print(f"client profiles: {', '.join(str(p) for p in result.profiles)}")
    return Exit.OK


def _write_atomically(path: Path, text: str) -> None:
    """Readers polling for `path` see nothing or all of it, never a partial write."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def cmd_serve(args: argparse.Namespace) -> int:
    from custos.signer.edge.config import load_config, read_pin
    from custos.signer.edge.server import CustosServer

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


_NETWORK_CLASSES = NETWORK_CLASSES


def _enum(value: int, enum_type: Any, prefix: str) -> str:
    """KEY_STATE_ENABLED -> enabled."""
    return str(enum_type.Name(value)).removeprefix(prefix).lower()


def _utc(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix)) if unix else "-"


def _print_key(key: keys_pb2.Key) -> None:
    print_fields(
        [
            ("key_id", key.key_id),
            ("state", _enum(key.state, keys_pb2.KeyState, "KEY_STATE_")),
            ("network_class", _enum(key.network_class, keys_pb2.NetworkClass, "NETWORK_CLASS_")),
            ("origin", _enum(key.origin, keys_pb2.KeyOrigin, "KEY_ORIGIN_")),
            ("algorithm", key.algorithm),
            ("public_key", key.public_key),
            ("created_by", key.created_by),
            ("created_at", _utc(key.created_at_unix)),
        ]
    )
    print()
    print_table(
        ("CHAIN", "NETWORK", "KIND", "ADDRESS"),
        [(a.chain, a.network, a.kind, a.address) for a in key.addresses],
    )


def cmd_keys(args: argparse.Namespace) -> int:
    stub = keys_pb2_grpc.KeysStub(_profile(args).channel())
    as_json = cli_output.wants_json(args)
    if args.action == "list":
        listed = stub.ListKeys(keys_pb2.ListKeysRequest())
        if as_json:
            print_json(listed)
        else:
            print_table(
                ("KEY ID", "STATE", "CLASS", "ORIGIN", "CREATED", "CREATED BY"),
                [
                    (
                        k.key_id,
                        _enum(k.state, keys_pb2.KeyState, "KEY_STATE_"),
                        _enum(k.network_class, keys_pb2.NetworkClass, "NETWORK_CLASS_"),
                        _enum(k.origin, keys_pb2.KeyOrigin, "KEY_ORIGIN_"),
                        _utc(k.created_at_unix),
                        k.created_by,
                    )
                    for k in listed.keys
                ],
            )
        return Exit.OK
    note = ""
    if args.action == "create":
        key = stub.CreateKey(
            keys_pb2.CreateKeyRequest(
                key_id=args.key_id, network_class=_NETWORK_CLASSES[args.network_class]
            )
        )
    elif args.action == "show":
        key = stub.GetKey(keys_pb2.GetKeyRequest(key_id=args.key_id))
    else:
        # Asking first only chooses the words: the server changes nothing (and
        # writes no audit record) for a key already in the state asked for.
        disable = args.action == "disable"
        wanted = keys_pb2.KEY_STATE_DISABLED if disable else keys_pb2.KEY_STATE_ENABLED
        key = stub.GetKey(keys_pb2.GetKeyRequest(key_id=args.key_id))
        if key.state == wanted:
            note = f"key {key.key_id} is already {args.action}d; nothing changed"
        else:
            request = keys_pb2.SetKeyStateRequest(key_id=args.key_id)
            key = (stub.DisableKey if disable else stub.EnableKey)(request)
            note = f"key {key.key_id} {args.action}d"
    if as_json:
        print_json(key)
    elif note:
        print(note)
    else:
        _print_key(key)
    return Exit.OK


def _show_batch(reply: signer_pb2.SignBatchResponse, args: argparse.Namespace) -> int:
    """Print a SignBatch/GetBatch reply; the exit code says signed, pending or failed."""
    status = _enum(reply.status, signer_pb2.BatchStatus, "BATCH_STATUS_")
    if cli_output.wants_json(args):
        print_json(reply)
    else:
        fields: list[tuple[str, object]] = [("request_id", reply.request_id), ("status", status)]
        if reply.approval_id:
            fields.append(("approval_id", reply.approval_id))
        fields.append(("policy_version", reply.policy_version or "-"))
        fields.append(("rules", ", ".join(reply.rules) or "-"))
        if reply.replayed:
            fields.append(("replayed", "yes (the stored result of this request id)"))
        print_fields(fields)
        if reply.items:
            print()
            print_table(
                ("#", "CHAIN", "NETWORK", "KEY", "ADDRESS", "TX ID"),
                [
                    (i, it.chain, it.network, it.key_id, it.address, it.tx_id)
                    for i, it in enumerate(reply.items)
                ],
            )
            print()
            for i, it in enumerate(reply.items):
                print(f"raw_tx[{i}] {it.raw_tx}")
    return cli_output.batch_outcome(reply)


def cmd_sign(args: argparse.Namespace) -> int:
    name = "standard input" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8 text ({exc.reason})") from exc
    try:
        request = json_format.Parse(text, signer_pb2.SignBatchRequest())
    except json_format.ParseError as exc:
        raise ConfigError(f"{name}: not a SignBatchRequest: {exc}") from exc
    stub = signer_pb2_grpc.SignerStub(_profile(args).channel())
    return _show_batch(stub.SignBatch(request, timeout=args.timeout), args)


def cmd_get(args: argparse.Namespace) -> int:
    stub = signer_pb2_grpc.SignerStub(_profile(args).channel())
    return _show_batch(stub.GetBatch(signer_pb2.GetBatchRequest(request_id=args.request_id)), args)


def _checkpoint_dir(export: Path) -> Path:
    return export.with_name(export.name + ".checkpoints")


def cmd_audit_export(args: argparse.Namespace) -> int:
    from custos.audit.export import write_export, write_file_atomically

    stub = audit_pb2_grpc.AuditStub(_profile(args).channel())
    out = Path(args.out)
    # The checkpoints first: the export then certainly covers the latest one.
    checkpoints = list(stub.ListCheckpoints(audit_pb2.ListCheckpointsRequest()))
    if not checkpoints and not args.to:
        checkpoints = [stub.GetLatestCheckpoint(audit_pb2.GetLatestCheckpointRequest())]
    latest = checkpoints[-1] if checkpoints else None
    key = stub.GetAuditKey(audit_pb2.GetAuditKeyRequest())
    # By default the export ends where the latest checkpoint does: every record is proven.
    to_seq = args.to or (latest.size if latest else 0)
    chunks = stub.Export(audit_pb2.ExportRequest(from_seq=0, to_seq=to_seq))
    # Each chunk holds whole newline-terminated records (audit.export's format).
    records = (line for c in chunks for line in c.lines.split(b"\n")[:-1])
    counted = write_export(records, out)
    # Every checkpoint, one file per size: an auditor keeps this directory across
    # exports, so a later export that drops or rewrites history fails against it.
    kept = _checkpoint_dir(out)
    kept.mkdir(exist_ok=True)
    new = 0
    for checkpoint in checkpoints:
        path = kept / f"{checkpoint.size:012d}.note"
        if path.exists():
            if path.read_text(encoding="utf-8", errors="replace") != checkpoint.note:
                print(
                    f"warning: the server's checkpoint of size {checkpoint.size} differs from "
                    f"the one saved in {path}; kept the saved one (verify will judge both)",
                    file=sys.stderr,
                )
                path = kept / f"{checkpoint.size:012d}.server.note"
            else:
                continue
        write_file_atomically(path, [checkpoint.note.encode()])
        new += 1
    if latest is not None:
        write_file_atomically(Path(f"{out}.checkpoint"), [latest.note.encode()])
    write_file_atomically(Path(f"{out}.pub.pem"), [key.public_key_pem.encode()])
    print(f"{counted} records -> {out}")
    if latest is not None and not args.to:
        print(
            f"  (records after the latest checkpoint, size {latest.size}, are left out: no"
            " checkpoint proves them yet; `custos audit checkpoint` signs one)"
        )
    print(f"{len(checkpoints)} checkpoints ({new} new) -> {kept}/")
    if latest is not None:
        print(f"latest checkpoint (size {latest.size}) -> {out}.checkpoint")
    else:
        print("the server holds no checkpoint: nothing proves these records", file=sys.stderr)
    print(
        f"audit public key ({key.key_name}) -> {out}.pub.pem; check its fingerprint against"
        " the one you pinned (custos audit verify --key-fingerprint)"
    )
    return 0


def _saved_checkpoints(export: Path, given: list[str]) -> list[Path]:
    """Note files: those given (a directory: its *.note files), else the export's own."""
    if not given:
        given = [
            str(p) for p in (_checkpoint_dir(export), Path(f"{export}.checkpoint")) if p.exists()
        ]
        if not given:
            raise ConfigError(
                f"no checkpoint to verify against: pass --checkpoint FILE|DIR (none found at "
                f"{_checkpoint_dir(export)}/ or {export}.checkpoint)"
            )
    paths: list[Path] = []
    for name in given:
        path = Path(name)
        paths.extend(sorted(path.glob("*.note")) if path.is_dir() else [path])
    return paths


def cmd_audit_verify(args: argparse.Namespace) -> int:
    import re

    from custos.audit.checkpoint import CheckpointError
    from custos.audit.verify import verify_export_files

    export = Path(args.export)
    checkpoints = _saved_checkpoints(export, args.checkpoint)
    try:
        report = verify_export_files(
            export,
            args.public_key,
            checkpoints,
            args.key_name,
            origin=args.origin,
            key_fingerprint=args.key_fingerprint,
        )
    except (OSError, ValueError, CheckpointError) as exc:
        raise ConfigError(f"cannot verify: {exc}") from exc

    def named(text: str) -> str:
        # The verifier numbers checkpoints in the order given: name their files.
        return re.sub(
            r"checkpoint #(\d+)",
            lambda m: f"checkpoint #{m[1]} ({checkpoints[int(m[1]) - 1]})",
            text,
        )

    for note in report.notes:
        print(f"note: {named(note)}")
    if args.key_fingerprint is None:
        print(
            "note: the public key was not checked against a pinned fingerprint"
            " (--key-fingerprint): a key file from the server proves nothing by itself"
        )
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
        print(f"FAILED: {named(problem)}", file=sys.stderr)
    return 1


def cmd_audit_init_key(args: argparse.Namespace) -> int:
    from custos.signer.edge.config import load_config, read_pin
    from custos.signer.usecases.auditlog import key_fingerprint, setup_audit_key

    config = load_config(Path(args.config))
    pin = read_pin(config.hsm)
    register_secret(pin)
    public, created = setup_audit_key(
        str(config.hsm.library),
        config.hsm.token_label,
        pin,
        config.hsm.environment,
        config.audit.key_id,
    )
    fingerprint = key_fingerprint(public)
    pinned = config.audit.key_fingerprint
    what = "created" if created else "found"
    print(f"audit key {config.audit.key_id!r} {what} in token {config.hsm.token_label!r}")
    return cli_output.report_pinned_key(
        "audit key",
        args.config,
        fingerprint,
        pinned,
        [
            "add this line to the [audit] section of the config, and give it to your auditors:",
            f'key_fingerprint = "{fingerprint}"',
        ],
    )


def _print_record(item: audit_pb2.AuditRecord, as_json: bool) -> None:
    from custos.audit.record import AuditRecord

    if as_json:  # JSON Lines: each record exactly as the log holds it
        print(item.encoded.decode().rstrip("\n"), flush=True)
        return
    record = AuditRecord.decode(item.encoded)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.ts_ms / 1000))
    fields = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(record.event.fields.items()))
    print(
        f"{record.seq:>8} {when}Z {record.event.kind:<18} {record.event.actor}  {fields}",
        flush=True,
    )


def cmd_audit_tail(args: argparse.Namespace) -> int:
    stub = audit_pb2_grpc.AuditStub(_profile(args).channel())
    as_json = cli_output.wants_json(args)
    if args.from_seq is not None:
        # N records from --from-seq on; with --follow, everything from there on.
        stream = stub.StreamRecords(
            audit_pb2.StreamRecordsRequest(from_seq=args.from_seq, follow=args.follow)
        )
        try:
            for count, item in enumerate(stream):
                if count >= args.n and not args.follow:
                    break
                _print_record(item, as_json)
        finally:
            stream.cancel()
        return Exit.OK
    # The last N: records after the latest checkpoint are few, so reading from
    # N before it and keeping the last N is cheap, and exact however many were
    # appended since the checkpoint.
    size = stub.GetLatestCheckpoint(audit_pb2.GetLatestCheckpointRequest()).size
    last: deque[audit_pb2.AuditRecord] = deque(maxlen=args.n)
    last.extend(stub.StreamRecords(audit_pb2.StreamRecordsRequest(from_seq=max(0, size - args.n))))
    for item in last:
        _print_record(item, as_json)
    if args.follow:
        start = last[-1].seq + 1 if last else 0
        stream = stub.StreamRecords(audit_pb2.StreamRecordsRequest(from_seq=start, follow=True))
        try:
            for item in stream:
                _print_record(item, as_json)
        finally:
            stream.cancel()
    return Exit.OK


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    stub = audit_pb2_grpc.AuditStub(_profile(args).channel())
    print(stub.CreateCheckpoint(audit_pb2.CreateCheckpointRequest()).note, end="")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from custos.signer.edge.config import load_config

    config = load_config(Path(args.config))
    url = config.store.url
    if url.startswith(("postgresql://", "postgres://")):
        from custos.signer.store.migrations import POSTGRES
        from custos.signer.store.postgres import PostgresStore, describe_url

        # The pool warns at each failed attempt; the one line below says why instead.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        try:
            store = PostgresStore(url, migrate=False)
        except ValueError as exc:
            raise ConfigError(f"store.url: {exc}") from exc
        try:
            applied = store.migrate()
        finally:
            store.close()
        target = f"{describe_url(url)} (schema {store.schema})"
        latest = POSTGRES[-1].version
        if applied:
            versions = ", ".join(str(v) for v in applied)
            print(f"{target}: applied migration(s) {versions}; schema at version {latest}")
        else:
            print(f"{target}: schema already at version {latest}; nothing to apply")
        return Exit.OK
    from custos.signer.store.factory import open_store

    try:
        open_store(url).close()  # SQLite brings its one file up to date when it opens it
    except ValueError as exc:
        raise ConfigError(f"store.url: {exc}") from exc
    print(f"{url}: schema up to date")
    return Exit.OK


def cmd_demo(args: argparse.Namespace) -> int:
    from custos.signer.tools.demo import run_demo

    return run_demo(Path(args.dir), args.listen)


def _add_audit_commands(sub: Any, client_help: str) -> None:
    p = sub.add_parser("audit", help="export, verify and read the audit log")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "export", help="download the log, every checkpoint and the audit key (auditor)"
    )
    a.add_argument(
        "--out",
        required=True,
        help="export file; OUT.checkpoints/ (every checkpoint, one file per size, kept across"
        " exports), OUT.checkpoint (the latest) and OUT.pub.pem beside it",
    )
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
    a.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a signed checkpoint you saved earlier, or a directory of *.note files"
        " (repeatable; default: EXPORT.checkpoints/ and EXPORT.checkpoint)",
    )
    a.add_argument(
        "--key-fingerprint",
        help="SHA-256 (hex) of the raw audit public key, as pinned (config audit.key_fingerprint)",
    )
    a.add_argument("--key-name", default="custos-audit", help="name in the signature lines")
    a.add_argument("--origin", help="the log's origin line, if known")
    a.add_argument(
        "--allow-uncovered",
        action="store_true",
        help="accept records after the last checkpoint (unproven) instead of failing",
    )
    a.set_defaults(func=cmd_audit_verify)
    a = actions.add_parser("tail", help="the latest events, readable (auditor)")
    a.add_argument(
        "-n",
        type=_count,
        default=20,
        help="how many records (default 20): the last N, or N from --from-seq",
    )
    a.add_argument("--from-seq", type=_count, help="N records from this sequence number on")
    a.add_argument(
        "-f", "--follow", action="store_true", help="then keep printing new records (no limit)"
    )
    a.add_argument("--client", help=client_help)
    add_output_argument(a)  # json: JSON Lines, each record as the log holds it
    a.set_defaults(func=cmd_audit_tail)
    a = actions.add_parser(
        "init-key",
        help="create the token's audit key if missing and print the fingerprint to pin (set-up)",
    )
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.set_defaults(func=cmd_audit_init_key)
    a = actions.add_parser("checkpoint", help="sign a checkpoint now (officer)")
    a.add_argument("--client", help=client_help)
    a.set_defaults(func=cmd_audit_checkpoint)


def _add_key_commands(sub: Any, client_help: str) -> None:
    p = sub.add_parser(
        "keys", help="list, show and import keys; propose and approve key ceremonies (officer)"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "create",
        help="generate a secp256k1 key inside the HSM alone (only where the policy's"
        " ceremonies.create_key is 0; else propose-create)",
    )
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
    add_output_argument(a)
    for action, text in (
        ("show", "show a key, its class, its public key and its addresses"),
        (
            "disable",
            "disable a key alone (where ceremonies.disable_key is 0; else propose-disable)",
        ),
        ("enable", "enable a key alone (where ceremonies.enable_key is 0; else propose-enable)"),
    ):
        a = actions.add_parser(action, help=text)
        a.add_argument("key_id")
        a.add_argument("--client", help=client_help)
        add_output_argument(a)
    a = actions.add_parser("list", help="list keys")
    a.add_argument("--client", help=client_help)
    add_output_argument(a)
    add_import_actions(actions, client_help, _profile, _print_key)
    p.set_defaults(func=cmd_keys)
    add_ceremony_commands(actions, client_help, _profile)
    add_backup_actions(actions)


def _count(text: str) -> int:
    """A whole number >= 0; anything else is a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def cmd_completion(args: argparse.Namespace) -> int:
    print(cli_output.completion_script(build_parser(), args.shell), end="")
    return Exit.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="custos",
        description="HSM-backed key custody and multi-chain transaction signing.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action=cli_output.VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a development token, CA, certificates and config")
    p.add_argument("--dir", default=".demo", help="directory to create (default .demo)")
    p.add_argument("--listen", default="127.0.0.1:50051", help="server address to configure")
    p.add_argument(
        "--force",
        action="store_true",
        help="rewrite the config and client profiles even if they exist (edits are lost)",
    )
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
    _add_key_commands(sub, client_help)

    p = sub.add_parser(
        "sign",
        help="send a SignBatch request from a JSON file or stdin (service)",
        epilog="Exit code 3: the batch is held for approval; it prints what to run next.",
    )
    p.add_argument("file", help="SignBatchRequest in protobuf JSON form; - reads standard input")
    p.add_argument("--client", help=client_help)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    add_output_argument(p)
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser(
        "get",
        help="fetch the stored result of a request id (service)",
        epilog="Exit code 3 while the batch waits for approval, 1 if it was rejected or expired.",
    )
    p.add_argument("request_id")
    p.add_argument("--client", help=client_help)
    add_output_argument(p)
    p.set_defaults(func=cmd_get)

    _add_audit_commands(sub, client_help)
    add_policy_commands(sub, client_help, _profile)
    add_psbt_commands(sub, client_help, _profile)
    add_wallet_commands(sub, client_help, _profile)
    add_integrity_commands(sub)
    add_events_commands(sub, client_help, _profile)

    p = sub.add_parser("db", help="store maintenance")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("upgrade", help="apply schema migrations (also done at start-up)")
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("demo", help="run the end-to-end demo (what `make demo` runs)")
    p.add_argument("--dir", default=".demo")
    p.add_argument("--listen", default="127.0.0.1:50051", help="server address (port 0: any)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "completion",
        help="print a shell completion script",
        epilog='bash: source <(custos completion bash)   zsh: eval "$(custos completion zsh)"',
    )
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=cmd_completion)
    return parser


def _silence_stdout() -> None:
    """After EPIPE: the interpreter's final flush of stdout must not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file descriptor (tests): nothing to flush
        pass


def _usage_errors() -> tuple[type[Exception], ...]:
    """The errors that mean bad input or configuration (exit 2).

    ImportMaterialError counts once `custos keys import` has loaded its module:
    hsm.import_material loads cryptography and coincurve, too slow to import on
    every run for an except clause; unless it was loaded, no exception is one.
    Called when an exception is being matched, so after the command ran.
    """
    module = sys.modules.get("custos.hsm.import_material")
    extra: tuple[type[Exception], ...] = () if module is None else (module.ImportMaterialError,)
    return (ConfigError, HsmConfigError, *extra)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits 2 here
    json_lines = getattr(args, "log_format", "text") == "json"
    configure_logs(logging.DEBUG if args.verbose else logging.INFO, json_lines=json_lines)

    def fail(message: str) -> None:
        if json_lines:  # stderr holds only JSON objects in this mode
            logging.getLogger("custos").error(message)
        else:
            print(message, file=sys.stderr)

    # One place turns every failure into one line and an exit code (README,
    # "Exit codes"); a traceback only with --verbose, for what nobody foresaw.
    try:
        result: Any = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        # `custos ... | head`: the reader has what it wanted; stop quietly.
        _silence_stdout()
        return Exit.BROKEN_PIPE
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except _usage_errors() as exc:
        fail(f"custos: error: {exc}")
        return Exit.USAGE
    except (HsmError, KeyNotFound, KeyExists, StoreUnavailable) as exc:
        fail(f"custos: error: {type(exc).__name__}: {exc}")
        return Exit.ERROR
    except grpc.RpcError as exc:
        fail(_rpc_error(exc))
        return Exit.ERROR
    except OSError as exc:
        fail(f"custos: error: {exc}")
        return Exit.ERROR
    except Exception as exc:
        if args.verbose:
            raise
        fail(f"custos: error: {type(exc).__name__}: {exc} (run with -v for details)")
        return Exit.ERROR
    return int(result)


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        where = f" at {_endpoint}" if _endpoint else ""
        return f"custos: error: cannot reach the server{where}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"custos: error: no reply in time (--timeout): {details}"
    return f"custos: {code.name if code else 'error'}: {details}"


if __name__ == "__main__":
    sys.exit(main())
