"""`custos integrity ...`: set-up of the HSM key that authenticates stored state.

The key is created only here (and by `custos init`, which runs this), never at
start-up: a service that silently made a fresh key would accept a database
rebuilt by whoever could write it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from hsm.errors import KeyExists
from hsm.pool import SigningPool
from signer.authenticity import key_check_value
from signer.config import load_config, read_pin
from signer.logs import register_secret


def cmd_init_key(args: argparse.Namespace) -> int:
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
