"""`custos keys backup-key init | backup [verify] FILE | restore FILE`: backups (signer.backups).

Operator commands with the service's config, run on the HSM's host: they log in
to the token with the PIN, as `custos integrity init-key` does. Shares are
written each to its own new file (mode 0600, never overwritten) named on the
command line: in production each holder receives only their own file (or the
words, on paper) at the ceremony, and the files are then destroyed. A share is
read back only from a file, never from the command line (which `ps` shows).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from signer.config import load_config, read_pin
from signer.errors import ConfigError
from signer.logs import register_secret

MAX_SHARE_FILE_BYTES = 4096


@contextmanager
def _backups(config_path: str) -> Iterator[Any]:
    """signer.backups.KeyBackups over the configured store and token."""
    from hsm.pkcs11_token import Pkcs11Token  # noqa: PLC0415
    from signer.authenticity import open_authenticator  # noqa: PLC0415
    from signer.backups import KeyBackups  # noqa: PLC0415
    from signer.store.factory import open_store  # noqa: PLC0415

    config = load_config(Path(config_path))
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


def _write_share(path: Path, share: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: exists; a share file is never overwritten") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(share + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _read_share(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(MAX_SHARE_FILE_BYTES).strip()
    except OSError as exc:
        raise ConfigError(f"--share-file {path}: cannot read it ({exc.strerror})") from None


def cmd_backup_key(args: argparse.Namespace) -> int:
    files = [Path(f) for f in args.share_file]
    if len(files) != args.shares:
        raise ConfigError(
            f"--share-file: give {args.shares} files, one per share (got {len(files)})"
        )
    if len(set(files)) != len(files):
        raise ConfigError("--share-file: each share needs a file of its own")
    for path in files:
        if path.exists():
            raise ConfigError(f"--share-file {path}: exists; a share file is never overwritten")
    with _backups(args.config) as backups:
        shares = backups.create_backup_key("operator", args.threshold, args.shares)
    for share in shares:
        register_secret(share)
    for path, share in zip(files, shares, strict=True):
        _write_share(path, share)
    print(
        f"backup key created: {args.shares} shares, any {args.threshold} restore it;"
        f" each share is in its own file ({', '.join(map(str, files))}):"
        " hand each to its holder, then delete it"
    )
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from signer.auditlog import write_atomically  # noqa: PLC0415

    if args.target[0] == "verify":
        if len(args.target) != 2:
            raise ConfigError("usage: custos keys backup verify FILE --config CONFIG")
        return _verify(Path(args.target[1]), args.config)
    if len(args.target) != 1:
        raise ConfigError("usage: custos keys backup FILE --config CONFIG")
    out = Path(args.target[0])
    if out.exists():
        raise ConfigError(f"{out}: exists; a backup file is never overwritten")
    with _backups(args.config) as backups:
        written = backups.backup("operator")
    write_atomically(out, written.data.decode())
    print(f"backup written: {out} sha256 {written.digest}")
    print(f"keys: {', '.join(written.key_ids) or '-'}")
    if written.skipped:
        print(
            f"left out (created non-extractable, no backup possible): {', '.join(written.skipped)}"
        )
    return 0


def _read_backup(path: Path) -> bytes:
    from hsm.backup_file import MAX_FILE_BYTES  # noqa: PLC0415

    try:
        with path.open("rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def _verify(path: Path, config: str) -> int:
    data = _read_backup(path)
    with _backups(config) as backups:
        report = backups.verify("operator", data)
    print(f"{path}: authentic under the current backup key, {report.keys} key(s)")
    if report.missing:
        print(f"missing (keys in custody that it lacks): {', '.join(report.missing)}")
    if report.different:
        print(f"different public keys: {', '.join(report.different)}")
    if report.complete:
        print("complete: every key in custody is in it")
        return 0
    return 1


def cmd_restore(args: argparse.Namespace) -> int:
    shares = [_read_share(f) for f in args.share_file]
    for share in shares:
        register_secret(share)
    data = _read_backup(Path(args.file))
    with _backups(args.config) as backups:
        records = backups.restore("operator", data, shares)
    print(f"restored {len(records)} key(s): {', '.join(r.key_id for r in records) or '-'}")
    return 0


def add_actions(actions: Any) -> None:
    """Register the backup actions under `custos keys`."""
    a = actions.add_parser(
        "backup-key", help="set up the backup key: its SLIP-39 shares, one file each (operator)"
    )
    a.add_argument("step", choices=("init",))
    a.add_argument("--threshold", type=int, required=True, help="M: shares needed to restore")
    a.add_argument("--shares", type=int, required=True, help="N: shares made")
    a.add_argument(
        "--share-file", action="append", default=[], required=True, help="one new file per share"
    )
    a.set_defaults(func=cmd_backup_key)
    a = actions.add_parser(
        "backup", help="write every key, wrapped, to FILE; or `backup verify FILE` (operator)"
    )
    a.add_argument("target", nargs="+", metavar="[verify] FILE")
    a.set_defaults(func=cmd_backup)
    a = actions.add_parser(
        "restore", help="restore a backup onto a new, empty token and store (operator)"
    )
    a.add_argument("file")
    a.add_argument(
        "--share-file", action="append", default=[], required=True, help="a file holding one share"
    )
    a.set_defaults(func=cmd_restore)
    for name in ("backup-key", "backup", "restore"):
        actions.choices[name].add_argument(
            "--config", required=True, help="the service's config file"
        )
