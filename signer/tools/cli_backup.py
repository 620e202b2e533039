"""`custos keys backup verify FILE | restore FILE`: the operator's side of backups.

Making the backup key and a backup are officer ceremonies through the service
(`custos keys propose-backup-key-init | propose-backup`, signer.usecases.custody). These
two run with the service's config on the HSM's host, logging in to the token
with the PIN as `custos integrity init-key` does: verification reads the store
and token, and a restore runs on a new token before any service, store or
policy exists there, so no officer quorum can be asked; the quorum of a
restore is the M share holders who hand over their shares (README). A share is
read only from a file, never from the command line (which `ps` shows).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from custos.signer.edge.errors import ConfigError
from custos.signer.edge.logs import register_secret

MAX_SHARE_FILE_BYTES = 4096


@contextmanager
def _backups(config_path: str) -> Iterator[Any]:
    """signer.usecases.backups.KeyBackups over the configured store and token."""
    from custos.hsm.pkcs11_token import Pkcs11Token
    from custos.signer.edge.config import load_config, read_pin
    from custos.signer.store.factory import open_store
    from custos.signer.usecases.authenticity import open_authenticator
    from custos.signer.usecases.backups import KeyBackups

    config = load_config(Path(config_path))
    if config.backup.mode == "trusted":
        # A trusted backup key is the security officer's: these commands have only the
        # user PIN, and restoring in the other mode would weaken the restored keys.
        raise ConfigError(
            'backup.mode = "trusted": verify and restore need the security officer\'s'
            ' session; this command serves mode "private" only'
        )
    pin = read_pin(config.hsm)
    register_secret(pin)
    os.environ.update(config.hsm.environment)
    try:
        store = open_store(config.store.url)
    except ValueError as exc:
        raise ConfigError(f"store.url: {exc}") from exc
    token = None
    try:
        token = Pkcs11Token(str(config.hsm.library), config.hsm.token_label, pin)
        bound = token
        integrity = open_authenticator(
            lambda key_id: lambda messages: bound.hmac_many(key_id, list(messages)),
            config.integrity.key_id,
            config.integrity.key_check,
            lambda _exc: None,
        )
        yield KeyBackups(store, token, integrity)
    finally:
        if token is not None:
            token.close()
        store.close()


def _read_share(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(MAX_SHARE_FILE_BYTES).strip()
    except OSError as exc:
        raise ConfigError(f"--share-file {path}: cannot read it ({exc.strerror})") from None


def cmd_backup(args: argparse.Namespace) -> int:
    if args.step != "verify":
        raise ConfigError(
            "usage: custos keys backup verify FILE --config CONFIG (a backup is made by"
            " `custos keys propose-backup`, then `custos keys fetch`)"
        )
    return _verify(Path(args.file), args.config)


def _read_backup(path: Path) -> bytes:
    from custos.hsm.backup_file import MAX_FILE_BYTES

    try:
        with path.open("rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def _verify(path: Path, config: str) -> int:
    data = _read_backup(path)
    with _backups(config) as backups:
        report = backups.verify("operator", data)
    print(
        f"{path}: authentic under the current backup key, {report.keys} key(s),"
        f" {report.wallets} wallet(s)"
    )
    if report.missing:
        print(f"missing (keys in custody that it lacks): {', '.join(report.missing)}")
    if report.different:
        print(f"different public keys: {', '.join(report.different)}")
    if report.missing_wallets:
        print(f"missing wallets (in custody, not in it): {', '.join(report.missing_wallets)}")
    if report.different_wallets:
        print(
            "different wallets (another sealed seed or seal key):"
            f" {', '.join(report.different_wallets)}"
        )
    if report.complete:
        print("complete: every key and wallet in custody is in it")
        return 0
    return 1


def cmd_restore(args: argparse.Namespace) -> int:
    shares = [_read_share(f) for f in args.share_file]
    for share in shares:
        register_secret(share)
    data = _read_backup(Path(args.file))
    with _backups(args.config) as backups:
        restored = backups.restore("operator", data, shares)
    keys, wallets = restored.keys, restored.wallets
    print(f"restored {len(keys)} key(s): {', '.join(r.key_id for r in keys) or '-'}")
    print(f"restored {len(wallets)} wallet(s): {', '.join(w.wallet_id for w in wallets) or '-'}")
    return 0


def add_actions(actions: Any) -> None:
    """Register the backup actions under `custos keys`."""
    a = actions.add_parser(
        "backup", help="check a backup file against the current keys: `backup verify FILE`"
    )
    a.add_argument("step", choices=("verify",))
    a.add_argument("file")
    a.set_defaults(func=cmd_backup)
    a = actions.add_parser(
        "restore", help="restore a backup onto a new, empty token and store (operator)"
    )
    a.add_argument("file")
    a.add_argument(
        "--share-file", action="append", default=[], required=True, help="a file holding one share"
    )
    a.set_defaults(func=cmd_restore)
    for name in ("backup", "restore"):
        actions.choices[name].add_argument(
            "--config", required=True, help="the service's config file"
        )
