"""`custos keys propose-*|approve|cancel|show-ceremony|list-ceremonies`: key ceremonies.

An approving officer's client does not take the server's word for what it
approves: it fetches the ceremony, recomputes its digest from the fields it
shows (policies.ceremonies.digest), and approves only when that digest, the
server's and the one the officer typed (from the proposer, out of band) agree.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc
from custos.signer.edge.errors import ConfigError
from custos.signer.tools.cli_output import (
    Exit,
    add_output_argument,
    print_fields,
    print_json,
    print_table,
    wants_json,
)
from custos.signer.tools.client import ClientProfile


# The ceremony rules (policies.ceremonies) load the policy models: only the
# commands that show or approve a ceremony import them, not every `custos` run.
@functools.cache
def _kind_tables() -> tuple[dict[int, str], tuple[str, ...]]:
    """KeyCeremony.kind -> the rules' kind name; the kinds whose params are shown as they are."""
    from custos.policies import ceremonies
    from custos.signer.edge.ceremony_kinds import KIND_OF_MESSAGE

    # Kinds whose parameters the message shows as they are (KeyCeremony.params).
    shown_as_params = (
        ceremonies.BACKUP_KEY_INIT,
        ceremonies.BACKUP,
        ceremonies.EXPORT_KEY,
        ceremonies.IMPORT_KEY_INIT,
        ceremonies.EXPORT_WALLET,
    )
    return {int(number): kind for number, kind in KIND_OF_MESSAGE.items()}, shown_as_params


_VERBS = {
    "propose-create": keys_pb2.CEREMONY_KIND_CREATE_KEY,
    "propose-disable": keys_pb2.CEREMONY_KIND_DISABLE_KEY,
    "propose-enable": keys_pb2.CEREMONY_KIND_ENABLE_KEY,
    "propose-retire": keys_pb2.CEREMONY_KIND_RETIRE_KEY,
    "propose-create-wallet": keys_pb2.CEREMONY_KIND_CREATE_WALLET,
}
_CUSTODY_VERBS = {
    "propose-backup-key-init": keys_pb2.CEREMONY_KIND_BACKUP_KEY_INIT,
    "propose-backup": keys_pb2.CEREMONY_KIND_BACKUP,
    "propose-export": keys_pb2.CEREMONY_KIND_EXPORT_KEY,
    "propose-export-wallet": keys_pb2.CEREMONY_KIND_EXPORT_WALLET,
    "propose-import-key-init": keys_pb2.CEREMONY_KIND_IMPORT_KEY_INIT,
}
_CLASS_NAMES = {
    keys_pb2.NETWORK_CLASS_MAINNET: "mainnet",
    keys_pb2.NETWORK_CLASS_TESTNET: "testnet",
}


def recomputed_digest(message: keys_pb2.KeyCeremony) -> str:
    """The digest of the fields a ceremony message shows, by the published encoding."""
    from custos.policies import ceremonies
    from custos.signer.usecases.key_import import import_params, wrapped_of_message

    kind_of_message, shown_as_params = _kind_tables()
    kind = kind_of_message.get(message.kind, "")
    params = {"key_id": message.key_id}
    if kind in shown_as_params:
        params = dict(message.params)
        if kind in (ceremonies.EXPORT_KEY, ceremonies.EXPORT_WALLET):
            # The fingerprint shown must be the recipient key's own, not the server's word.
            recipient = base64.b64decode(params.get("recipient_public_key", ""))
            params["recipient_fingerprint"] = hashlib.sha256(recipient).hexdigest()
    if kind == ceremonies.CREATE_KEY:
        params["network_class"] = _CLASS_NAMES.get(message.network_class, "")
    if kind == ceremonies.IMPORT_KEY:
        network_class = _CLASS_NAMES.get(message.network_class, "")
        params = import_params(
            wrapped_of_message(message.imported_key, message.key_id, network_class)
        )
    if kind in (ceremonies.CREATE_WALLET, ceremonies.IMPORT_WALLET):
        params = {"wallet_id": message.wallet_id, "label": message.label}
    if kind == ceremonies.IMPORT_WALLET:
        imported = message.imported_wallet
        params |= {
            "wrapped_seed": base64.b64encode(imported.wrapped_seed).decode(),
            "master_public_key": imported.master_public_key.hex(),
            "import_key_fingerprint": imported.import_key_fingerprint,
        }
    return ceremonies.digest(
        message.ceremony_id,
        kind,
        tuple(sorted(params.items())),
        message.proposed_by,
        datetime.fromtimestamp(message.proposed_at_unix_ms / 1000, UTC),
        datetime.fromtimestamp(message.expires_at_unix_ms / 1000, UTC),
        message.approvals_required,
        message.policy_version,
    )


def _kind(message: keys_pb2.KeyCeremony) -> str:
    return _kind_tables()[0].get(message.kind, "unknown")


def _ms(unix_ms: int) -> str:
    return datetime.fromtimestamp(unix_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print(message: keys_pb2.KeyCeremony, args: argparse.Namespace) -> None:
    if wants_json(args):
        print_json(message)
        return
    fields: list[tuple[str, object]] = [
        ("ceremony_id", message.ceremony_id),
        ("kind", _kind(message)),
    ]
    if message.wallet_id:
        fields += [("wallet_id", message.wallet_id), ("label", message.label)]
    if message.HasField("imported_wallet"):
        fields += [
            ("master_public_key", message.imported_wallet.master_public_key.hex()),
            ("import_key_fingerprint", message.imported_wallet.import_key_fingerprint),
        ]
    else:
        fields.append(("key_id", message.key_id))
    if message.network_class:
        fields.append(("network_class", _CLASS_NAMES.get(message.network_class, "?")))
    if _kind(message) in _kind_tables()[1]:
        fields += [
            (name, value)
            for name, value in sorted(message.params.items())
            if name != "recipient_public_key"  # its fingerprint is what people compare
        ]
    if message.HasField("imported_key"):
        imported = message.imported_key
        fields += [
            ("public_key", imported.public_key.hex()),
            ("import_key_fingerprint", imported.import_key_fingerprint),
            ("source", imported.source + (f" {imported.path}" if imported.path else "")),
        ]
    fields += [
        ("state", message.state),
        ("digest", message.digest),
        ("proposed_by", message.proposed_by),
        ("proposed_at", _ms(message.proposed_at_unix_ms)),
        ("expires_at", _ms(message.expires_at_unix_ms)),
        ("policy_version", message.policy_version),
        ("approvals", f"{len(message.approved_by)} of {message.approvals_required}"),
        ("approved_by", ", ".join(message.approved_by) or "-"),
    ]
    if message.cancelled_by:
        fields.append(("cancelled_by", message.cancelled_by))
    if message.outcome:
        fields.append(("outcome", message.outcome))
    if message.delivered_to:
        fields.append(("fetched_by", ", ".join(message.delivered_to)))
    print_fields(fields)


def _stub(profile: ClientProfile) -> keys_pb2_grpc.KeysStub:
    return keys_pb2_grpc.KeysStub(profile.channel())


def cmd_propose(args: argparse.Namespace, profile: ClientProfile) -> int:
    kind = _VERBS[args.action]
    if kind == keys_pb2.CEREMONY_KIND_CREATE_WALLET:
        proposal = keys_pb2.ProposeKeyCeremonyRequest(
            kind=kind, wallet_id=args.wallet_id, label=args.label
        )
        return print_proposal(_stub(profile).ProposeKeyCeremony(proposal), args)
    network_class = keys_pb2.NETWORK_CLASS_UNSPECIFIED
    if kind == keys_pb2.CEREMONY_KIND_CREATE_KEY:
        network_class = {v: k for k, v in _CLASS_NAMES.items()}[args.network_class]
    message = _stub(profile).ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(
            kind=kind, key_id=args.key_id, network_class=network_class
        )
    )
    return print_proposal(message, args)


def cmd_propose_custody(args: argparse.Namespace, profile: ClientProfile) -> int:
    """propose-backup-key-init | propose-backup | propose-export | propose-export-wallet |
    propose-import-key-init."""
    request = keys_pb2.ProposeKeyCeremonyRequest(kind=_CUSTODY_VERBS[args.action])
    if args.action == "propose-backup-key-init":
        request.threshold = args.threshold
        request.holders.extend(args.holder)
    elif args.action == "propose-export":
        request.key_id = args.key_id
        request.recipient_public_key = _recipient_der(args.recipient)
    elif args.action == "propose-export-wallet":
        request.wallet_id = args.wallet_id
        request.recipient_public_key = _recipient_der(args.recipient)
    return print_proposal(_stub(profile).ProposeKeyCeremony(request), args)


def _recipient_der(path: str) -> bytes:
    """The recipient's public key file (PEM or DER) as DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--recipient {path}: cannot read it ({exc.strerror})") from None
    try:
        key = (
            serialization.load_pem_public_key(raw)
            if raw.lstrip().startswith(b"-----")
            else serialization.load_der_public_key(raw)
        )
    except ValueError:
        raise ConfigError(f"--recipient {path}: not a PEM or DER public key") from None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def cmd_fetch(args: argparse.Namespace, profile: ClientProfile) -> int:
    """Write an executed ceremony's result for this officer to a new file (mode 0600)."""
    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"--out {out}: exists; a result is never written over a file")
    result = _stub(profile).FetchKeyCeremonyResult(
        keys_pb2.FetchKeyCeremonyResultRequest(ceremony_id=args.ceremony_id, totp_code=args.code)
    )
    if result.sha256 and hashlib.sha256(result.data).hexdigest() != result.sha256:
        print("custos: refused: the result does not match its SHA-256", file=sys.stderr)
        return Exit.ERROR
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(result.data)
        handle.flush()
        os.fsync(handle.fileno())
    print(f"{out}: {result.format}" + (f", sha256 {result.sha256}" if result.sha256 else ""))
    if result.ceremony.kind == keys_pb2.CEREMONY_KIND_BACKUP_KEY_INIT:
        print("your share: keep it offline (paper), then delete this file")
    return Exit.OK


def print_proposal(message: keys_pb2.KeyCeremony, args: argparse.Namespace) -> int:
    """A proposal as made, and what the approvers run next."""
    _print(message, args)
    if message.state == "open" and not wants_json(args):
        print(
            f"\neach of {message.approvals_required} other officer(s) runs: custos keys approve"
            f" {message.ceremony_id} --digest {message.digest} --code CODE"
        )
    return Exit.OK


def cmd_approve(args: argparse.Namespace, profile: ClientProfile) -> int:
    stub = _stub(profile)
    shown = stub.GetKeyCeremony(keys_pb2.GetKeyCeremonyRequest(ceremony_id=args.ceremony_id))
    mine = recomputed_digest(shown)
    if not (mine == shown.digest == args.digest):
        print(
            f"custos: refused: the ceremony's fields hash to {mine}, the server says"
            f" {shown.digest}, you gave {args.digest}; nothing was approved",
            file=sys.stderr,
        )
        return Exit.ERROR
    message = stub.ApproveKeyCeremony(
        keys_pb2.ApproveKeyCeremonyRequest(
            ceremony_id=args.ceremony_id, digest=args.digest, totp_code=args.code
        )
    )
    _print(message, args)
    return Exit.OK


def cmd_cancel(args: argparse.Namespace, profile: ClientProfile) -> int:
    message = _stub(profile).CancelKeyCeremony(
        keys_pb2.CancelKeyCeremonyRequest(ceremony_id=args.ceremony_id, totp_code=args.code)
    )
    _print(message, args)
    return Exit.OK


def cmd_show(args: argparse.Namespace, profile: ClientProfile) -> int:
    message = _stub(profile).GetKeyCeremony(
        keys_pb2.GetKeyCeremonyRequest(ceremony_id=args.ceremony_id)
    )
    _print(message, args)
    return Exit.OK


def cmd_list(args: argparse.Namespace, profile: ClientProfile) -> int:
    listed = _stub(profile).ListKeyCeremonies(keys_pb2.ListKeyCeremoniesRequest())
    if wants_json(args):
        print_json(listed)
        return Exit.OK
    print_table(
        ("CEREMONY", "KIND", "KEY/WALLET", "STATE", "APPROVALS", "PROPOSED", "BY"),
        [
            (
                c.ceremony_id,
                _kind(c),
                c.key_id or c.wallet_id,
                c.state,
                f"{len(c.approved_by)}/{c.approvals_required}",
                _ms(c.proposed_at_unix_ms),
                c.proposed_by,
            )
            for c in listed.ceremonies
        ],
    )
    return Exit.OK


def add_commands(
    actions: Any, client_help: str, profile_of: Callable[[argparse.Namespace], ClientProfile]
) -> None:
    """Register the ceremony actions under `custos keys`."""

    def with_profile(fn: Any) -> Any:
        return lambda args: fn(args, profile_of(args))

    for verb, text in (
        ("propose-create", "propose generating a key in the HSM (officer)"),
        ("propose-disable", "propose refusing further signing with a key (officer)"),
        ("propose-enable", "propose allowing a disabled key to sign again (officer)"),
        ("propose-retire", "propose retiring a key for good: it never signs again (officer)"),
    ):
        a = actions.add_parser(verb, help=text)
        a.add_argument("key_id")
        if verb == "propose-create":
            a.add_argument(
                "--network-class",
                required=True,
                choices=tuple(_CLASS_NAMES.values()),
                help="mainnet or testnet; fixed for the key's life",
            )
        a.set_defaults(func=with_profile(cmd_propose))
    for verb, text in (
        ("propose-backup-key-init", "propose making the backup key and its SLIP-39 shares"),
        ("propose-backup", "propose a backup file of every key, wrapped (officer)"),
        ("propose-export", "propose exporting one key encrypted to a recipient's RSA key"),
        (
            "propose-export-wallet",
            "propose exporting an HD wallet's seed encrypted to a recipient's RSA key",
        ),
        ("propose-import-key-init", "propose making the HSM's RSA import key (officer)"),
    ):
        a = actions.add_parser(verb, help=text)
        if verb == "propose-backup-key-init":
            a.add_argument("--threshold", type=int, required=True, help="M: shares to restore")
            a.add_argument(
                "--holder",
                action="append",
                required=True,
                help="an officer who gets one share (repeat: N holders)",
            )
        if verb in ("propose-export", "propose-export-wallet"):
            a.add_argument("key_id" if verb == "propose-export" else "wallet_id")
            a.add_argument(
                "--recipient", required=True, help="the recipient's RSA public key (PEM or DER)"
            )
        a.set_defaults(func=with_profile(cmd_propose_custody))
    a = actions.add_parser(
        "fetch", help="fetch your result of an executed backup, export or backup-key ceremony"
    )
    a.add_argument("ceremony_id")
    a.add_argument("--out", required=True, help="a new file to write it to (mode 0600)")
    a.add_argument("--code", required=True, help="your current TOTP code")
    a.set_defaults(func=with_profile(cmd_fetch))
    a = actions.add_parser(
        "propose-create-wallet",
        help="propose an HD wallet whose seed the HSM generates (officer)",
    )
    a.add_argument("wallet_id")
    a.add_argument("--label", default="", help="shown with the wallet (default: its id)")
    a.set_defaults(func=with_profile(cmd_propose))
    a = actions.add_parser(
        "approve", help="approve a key ceremony with your TOTP code (another officer)"
    )
    a.add_argument("ceremony_id")
    a.add_argument("--digest", required=True, help="the digest you reviewed (from the proposer)")
    a.add_argument("--code", required=True, help="your current TOTP code")
    a.set_defaults(func=with_profile(cmd_approve))
    a = actions.add_parser("cancel", help="cancel a key ceremony before its quorum (officer)")
    a.add_argument("ceremony_id")
    a.add_argument("--code", required=True, help="your current TOTP code")
    a.set_defaults(func=with_profile(cmd_cancel))
    a = actions.add_parser("show-ceremony", help="one key ceremony: what, who, its digest")
    a.add_argument("ceremony_id")
    a.set_defaults(func=with_profile(cmd_show))
    a = actions.add_parser("list-ceremonies", help="key ceremonies, newest first")
    a.set_defaults(func=with_profile(cmd_list))
    for name in (
        *_VERBS,
        *_CUSTODY_VERBS,
        "fetch",
        "approve",
        "cancel",
        "show-ceremony",
        "list-ceremonies",
    ):
        actions.choices[name].add_argument("--client", help=client_help)
        add_output_argument(actions.choices[name])
