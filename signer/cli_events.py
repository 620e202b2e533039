"""`custos events ...`: set-up and publication of the event-signing key (signer.delivery).

The key is created only here (and by `custos init`), never at start-up, like
the audit key: a service that made a fresh key would sign deliveries with a
key no receiver pinned.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from signer.config import load_config, read_pin
from signer.errors import ConfigError
from signer.logs import register_secret


def _token_key(args: argparse.Namespace, *, create: bool) -> tuple[bytes, bool, str | None]:
    """(raw public key, created, pinned fingerprint) of the config's event-signing key."""
    from hsm.errors import KeyNotFound  # noqa: PLC0415
    from hsm.pool import SigningPool  # noqa: PLC0415
    from signer.auditlog import setup_ed25519_keys  # noqa: PLC0415

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
    from signer.auditlog import key_fingerprint  # noqa: PLC0415

    public, created, pinned = _token_key(args, create=True)
    fingerprint = key_fingerprint(public)
    print(f"event-signing key {'created' if created else 'found'} in the token")
    if pinned == fingerprint:
        print(f"{args.config} already pins it: key_fingerprint = {fingerprint}")
        return 0
    if pinned is not None:
        raise ConfigError(
            f"{args.config} pins event-signing key fingerprint {pinned}, but the token's key "
            f"has {fingerprint}: this is not the token the config was set up with"
        )
    print("add these lines to the config, and give the public key to webhook receivers")
    print("(`custos events public-key`):")
    print("[events]")
    print(f'key_fingerprint = "{fingerprint}"')
    return 0


def cmd_public_key(args: argparse.Namespace) -> int:
    from audit.checkpoint import public_key_pem  # noqa: PLC0415
    from signer.auditlog import key_fingerprint  # noqa: PLC0415

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


def add_commands(sub: Any) -> None:
    p = sub.add_parser("events", help="the HSM key that signs webhook deliveries")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "init-key",
        help="create the event-signing key in the token (if missing); print its fingerprint",
    )
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.set_defaults(func=cmd_init_key)
    a = actions.add_parser(
        "public-key", help="print the event-signing public key (PEM) receivers verify with"
    )
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.set_defaults(func=cmd_public_key)
