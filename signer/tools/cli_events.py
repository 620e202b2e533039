"""`custos events ...` and `custos webhooks ...`: the event-signing key and webhook endpoints.

The key (signer.usecases.delivery) is created only here (and by `custos init`), never
at start-up, like the audit key: a service that made a fresh key would sign
deliveries with a key no receiver pinned. Webhook commands are RPC clients
(officers; signer.usecases.webhooks).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from custos.signer.edge.errors import ConfigError
from custos.signer.edge.logs import register_secret
from custos.signer.tools.cli_output import (
    Exit,
    add_output_argument,
    print_fields,
    print_json,
    print_table,
    report_pinned_key,
)
from custos.signer.tools.client import ClientProfile


def _token_key(args: argparse.Namespace, *, create: bool) -> tuple[bytes, bool, str | None]:
    """(raw public key, created, pinned fingerprint) of the config's event-signing key."""
    from custos.hsm.errors import KeyNotFound
    from custos.hsm.pool import SigningPool
    from custos.signer.edge.config import load_config, read_pin
    from custos.signer.usecases.auditlog import setup_ed25519_keys

    config = load_config(Path(args.config))
    pin = read_pin(config.hsm)
    register_secret(pin)
    hsm, events = config.hsm, config.events
    if create:
        ((public, created),) = setup_ed25519_keys(
            str(hsm.library), hsm.token_label, pin, hsm.environment, [events.key_id]
        )
        return public, created, events.key_fingerprint
    os.environ.update(hsm.environment)
    pool = SigningPool(str(hsm.library), hsm.token_label, pin, 1)
    try:
        return pool.ed25519_public_key(events.key_id), False, events.key_fingerprint
    except KeyNotFound:
        raise ConfigError(
            f"the token has no event-signing key {events.key_id!r}: "
            f"run `custos events init-key --config {args.config}`"
        ) from None
    finally:
        pool.close()


def cmd_init_key(args: argparse.Namespace) -> int:
    from custos.signer.usecases.auditlog import key_fingerprint

    public, created, pinned = _token_key(args, create=True)
    fingerprint = key_fingerprint(public)
    print(f"event-signing key {'created' if created else 'found'} in the token")
    return report_pinned_key(
        "event-signing key",
        args.config,
        fingerprint,
        pinned,
        [
            "add these lines to the config, and give the public key to webhook receivers",
            "(`custos events public-key`):",
            "[events]",
            f'key_fingerprint = "{fingerprint}"',
        ],
    )


def cmd_public_key(args: argparse.Namespace, profile: ClientProfile | None) -> int:
    from custos.audit.checkpoint import public_key_pem
    from custos.signer.usecases.auditlog import key_fingerprint

    if profile is not None:  # from a running server (any role)
        from custos.proto.custos.v1 import webhooks_pb2, webhooks_pb2_grpc

        stub = webhooks_pb2_grpc.WebhooksStub(profile.channel())
        key = stub.GetEventKey(webhooks_pb2.GetEventKeyRequest())
        print(key.public_key_pem, end="")
        print(f"# X-Custos-Key-Id: {key.key_id}")
        return Exit.OK
    public, _created, pinned = _token_key(args, create=False)
    fingerprint = key_fingerprint(public)
    if pinned is not None and pinned != fingerprint:
        raise ConfigError(
            f"the token's event-signing key has fingerprint {fingerprint}, but {args.config} "
            f"pins {pinned}: not printing a key the service would refuse"
        )
    print(public_key_pem(public).decode(), end="")
    print(f"# X-Custos-Key-Id: {fingerprint}")
    return 0


def cmd_webhooks(args: argparse.Namespace, profile: ClientProfile) -> int:
    from custos.proto.custos.v1 import webhooks_pb2, webhooks_pb2_grpc
    from custos.signer.tools import cli_output

    stub = webhooks_pb2_grpc.WebhooksStub(profile.channel())
    as_json = cli_output.wants_json(args)
    if args.action == "list":
        listed = stub.ListWebhooks(webhooks_pb2.ListWebhooksRequest())
        if as_json:
            print_json(listed)
        else:
            print_table(
                ("WEBHOOK ID", "NEXT SEQ", "KINDS", "URL"),
                [(w.webhook_id, w.next_seq, ",".join(w.kinds), w.url) for w in listed.webhooks],
            )
        return Exit.OK
    if args.action == "remove":
        stub.RemoveWebhook(webhooks_pb2.RemoveWebhookRequest(webhook_id=args.webhook_id))
        print(f"removed {args.webhook_id}")
        return Exit.OK
    if args.action == "add":
        request = webhooks_pb2.AddWebhookRequest(url=args.url, kinds=args.kind)
        if args.from_seq is not None:
            request.from_seq = args.from_seq
        webhook = stub.AddWebhook(request)
    else:
        webhook = stub.ReplayWebhook(
            webhooks_pb2.ReplayWebhookRequest(webhook_id=args.webhook_id, from_seq=args.from_seq)
        )
    if as_json:
        print_json(webhook)
    else:
        print_fields(
            [
                ("webhook id", webhook.webhook_id),
                ("url", webhook.url),
                ("kinds", ",".join(webhook.kinds)),
                ("next seq", webhook.next_seq),
                ("created by", webhook.created_by),
            ]
        )
    return Exit.OK


def _seq(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a sequence number (a whole number >= 0)")
    return int(text)


def add_commands(
    sub: Any, client_help: str, profile: Callable[[argparse.Namespace], ClientProfile]
) -> None:
    _add_webhook_commands(sub, client_help, profile)
    p = sub.add_parser("events", help="the HSM key that signs webhook deliveries")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "init-key",
        help="create the event-signing key in the token (if missing); print its fingerprint",
    )
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.set_defaults(func=cmd_init_key)
    a = actions.add_parser(
        "public-key",
        help="print the event-signing public key (PEM) receivers verify with: from the"
        " server (--client or $CUSTOS_CLIENT, any role) or from the token (--config)",
    )
    where = a.add_mutually_exclusive_group()
    where.add_argument("--config", help="TOML configuration file (reads the token)")
    where.add_argument("--client", help=client_help)
    a.set_defaults(func=lambda args: cmd_public_key(args, None if args.config else profile(args)))


def _add_webhook_commands(
    sub: Any, client_help: str, profile: Callable[[argparse.Namespace], ClientProfile]
) -> None:
    p = sub.add_parser("webhooks", help="HTTPS endpoints that receive signed events (officer)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", help="register an https:// endpoint for event kinds")
    a.add_argument("url", help="https://... (the receiver's certificate must verify)")
    a.add_argument(
        "--kind",
        action="append",
        required=True,
        help="an event kind to deliver (repeat): pending, approved, rejected, expired, signed,"
        " refused, policy.*, key.*, totp.locked, totp.unlocked, checkpoint",
    )
    a.add_argument("--from-seq", type=_seq, help="first audit sequence number (default: now)")
    a = actions.add_parser("list", help="list endpoints and their cursors")
    a = actions.add_parser("remove", help="stop delivering to an endpoint, for good")
    a.add_argument("webhook_id")
    a = actions.add_parser("replay", help="deliver again from a sequence number")
    a.add_argument("webhook_id")
    a.add_argument("--from-seq", type=_seq, required=True, help="audit sequence number")
    for action in actions.choices.values():
        action.add_argument("--client", help=client_help)
        add_output_argument(action)
    p.set_defaults(func=lambda args: cmd_webhooks(args, profile(args)))
