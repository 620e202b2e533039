"""`custos integrity ...`: set-up of the HSM key that authenticates stored state.

The key is created only here (and by `custos init`, which runs this), never at
start-up: a service that silently made a fresh key would accept a database
rebuilt by whoever could write it.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path
from typing import Any

from custos.signer.edge.errors import ConfigError
from custos.signer.edge.logs import register_secret

# Subcommands import their heavy modules lazily so `custos --help` stays instant.


def cmd_init_key(args: argparse.Namespace) -> int:
    from custos.hsm.errors import KeyExists
    from custos.hsm.pool import SigningPool
    from custos.signer.edge.config import load_config, read_pin
    from custos.signer.usecases.authenticity import key_check_value

    config = load_config(Path(args.config))
    pin = read_pin(config.hsm)
    register_secret(pin)
    os.environ.update(config.hsm.environment)
    key_id = config.integrity.key_id
    pool = SigningPool(str(config.hsm.library), config.hsm.token_label, pin, 1)
    try:
        try:
            pool.create_hmac_key(key_id)
            created = True
        except KeyExists:
            created = False
        check = key_check_value(lambda messages: pool.hmac_many(key_id, messages))
    finally:
        pool.close()
    if not args.quiet:
        state = "created" if created else "already in the token"
        print(f"# state-authentication key {key_id!r} {state}; pin it in the config:")
        print("[integrity]")
        print(f'key_id = "{key_id}"')
    print(f'key_check = "{check}"')
    return 0


def cmd_seal(args: argparse.Namespace) -> int:
    """Vouch, once, for the rows of a store written before state authentication."""
    from custos.audit.record import AuditEvent
    from custos.hsm.pool import SigningPool
    from custos.signer.edge.config import load_config, read_pin
    from custos.signer.store.base import KeyRecord, StoreError
    from custos.signer.store.factory import open_store
    from custos.signer.store.policy_tables import PendingRow, PolicyRow
    from custos.signer.usecases.authenticity import (
        StateAuthenticator,
        open_authenticator,
        pending_fact,
        totp_fact,
    )
    from custos.signer.usecases.keys import key_fact
    from custos.signer.usecases.policy_governor import policy_fact

    class _Sealer:
        """signer.store.base.LegacySealer over the token's state key."""

        def __init__(self, integrity: StateAuthenticator) -> None:
            self._integrity = integrity

        def key(self, record: KeyRecord) -> bytes:
            return self._integrity.tag(key_fact(record))

        def policy(self, row: PolicyRow) -> bytes:
            return self._integrity.tag(policy_fact(row))

        def pending(self, row: PendingRow) -> bytes:
            return self._integrity.tag(pending_fact(row))

        def totp(self, subject: str, sealed: bytes, state: str, rev: int) -> bytes:
            return self._integrity.tag(totp_fact(subject, sealed, state, rev))

    config = load_config(Path(args.config))
    pin = read_pin(config.hsm)
    register_secret(pin)
    os.environ.update(config.hsm.environment)
    try:
        store = open_store(config.store.url)  # applies the migration that adds the columns
    except ValueError as exc:
        raise ConfigError(f"store.url: {exc}") from exc
    pool = SigningPool(str(config.hsm.library), config.hsm.token_label, pin, 1)
    try:
        integrity = open_authenticator(
            lambda key_id: functools.partial(pool.hmac_many, key_id),
            config.integrity.key_id,
            config.integrity.key_check,
            lambda _exc: None,
        )

        def event(sealed: dict[str, list[str]]) -> AuditEvent:
            fields = {table: ",".join(ids) for table, ids in sealed.items()}
            return AuditEvent("state.sealed", "operator", fields)

        try:
            sealed = store.seal_legacy_rows(_Sealer(integrity), event)
        except StoreError as exc:
            raise ConfigError(f"refusing to seal: {exc}") from None
    finally:
        pool.close()
        store.close()
    for table, ids in sorted(sealed.items()):
        print(f"sealed {len(ids)} row(s) of {table}: {', '.join(ids)}")
    if not sealed:
        print("nothing to seal")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("integrity", help="the HSM key that authenticates stored state")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "init-key",
        help="create the state-authentication key in the token (if missing); print its check",
    )
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.add_argument("--quiet", action="store_true", help="print only the key_check line")
    a.set_defaults(func=cmd_init_key)
    a = actions.add_parser(
        "seal",
        help="tag, once, the rows of a store written before state authentication"
        " (service stopped; vouches that the store is intact now)",
    )
    a.add_argument("--config", required=True, help="TOML configuration file")
    a.set_defaults(func=cmd_seal)
