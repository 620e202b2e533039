"""`custos wallets list|show|derive|xpub`: HD wallets and their deposit addresses.

A wallet is created by a ceremony (`custos keys propose-create-wallet`); these
commands only read. `xpub` exports an account's extended public key, from
which a watch-only wallet derives the same addresses `derive` shows.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc
from custos.signer.tools.cli_output import (
    Exit,
    add_output_argument,
    print_fields,
    print_json,
    print_table,
    wants_json,
)
from custos.signer.tools.client import ClientProfile

CHAINS = ("bitcoin", "ethereum", "bsc", "tron")
_ORIGIN = {keys_pb2.KEY_ORIGIN_GENERATED: "generated", keys_pb2.KEY_ORIGIN_IMPORTED: "imported"}


def _stub(profile: ClientProfile) -> keys_pb2_grpc.KeysStub:
    return keys_pb2_grpc.KeysStub(profile.channel())


def _when(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _account(args: argparse.Namespace) -> keys_pb2.WalletAccount:
    return keys_pb2.WalletAccount(
        wallet_id=args.wallet_id,
        chain=args.chain,
        # Only Bitcoin's paths depend on the network (coin type 0 or 1).
        network=args.network,
        account=args.account,
        purpose=args.purpose or 0,
    )


def cmd_list(args: argparse.Namespace, profile: ClientProfile) -> int:
    listed = _stub(profile).ListWallets(keys_pb2.ListWalletsRequest())
    if wants_json(args):
        print_json(listed)
        return Exit.OK
    print_table(
        ("WALLET", "LABEL", "ORIGIN", "STATE", "CREATED", "BY"),
        [
            (
                w.wallet_id,
                w.label,
                _ORIGIN.get(w.origin, "?"),
                w.state,
                _when(w.created_at_unix),
                w.created_by,
            )
            for w in listed.wallets
        ],
    )
    return Exit.OK


def cmd_show(args: argparse.Namespace, profile: ClientProfile) -> int:
    wallet = _stub(profile).GetWallet(keys_pb2.GetWalletRequest(wallet_id=args.wallet_id))
    if wants_json(args):
        print_json(wallet)
        return Exit.OK
    print_fields(
        [
            ("wallet_id", wallet.wallet_id),
            ("label", wallet.label),
            ("origin", _ORIGIN.get(wallet.origin, "?")),
            ("state", wallet.state),
            ("created_by", wallet.created_by),
            ("created_at", _when(wallet.created_at_unix)),
        ]
    )
    return Exit.OK


def cmd_derive(args: argparse.Namespace, profile: ClientProfile) -> int:
    reply = _stub(profile).DeriveAddresses(
        keys_pb2.DeriveAddressesRequest(
            account=_account(args), change=args.change, index=args.index, count=args.count
        )
    )
    if wants_json(args):
        print_json(reply)
        return Exit.OK
    print_table(("PATH", "ADDRESS"), [(a.path, a.address) for a in reply.addresses])
    return Exit.OK


def cmd_xpub(args: argparse.Namespace, profile: ClientProfile) -> int:
    reply = _stub(profile).GetAccountKey(_account(args))
    if wants_json(args):
        print_json(reply)
        return Exit.OK
    print_fields(
        [("account_path", reply.account_path), ("extended_public_key", reply.extended_public_key)]
    )
    return Exit.OK


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _account_arguments(a: argparse.ArgumentParser) -> None:
    a.add_argument("wallet_id")
    a.add_argument("--chain", required=True, choices=CHAINS)
    a.add_argument(
        "--network",
        default="mainnet",
        help="bitcoin: mainnet (coin type 0) or testnet|signet|regtest (coin type 1);"
        " default mainnet",
    )
    a.add_argument("--account", type=_whole, default=0, help="account number (default 0)")
    a.add_argument(
        "--purpose",
        type=int,
        choices=(44, 49, 84),
        help="bitcoin only: 44 (P2PKH), 49 (P2SH-P2WPKH) or 84 (P2WPKH, the default)",
    )


def add_commands(
    sub: Any, client_help: str, profile_of: Callable[[argparse.Namespace], ClientProfile]
) -> None:
    """Register `custos wallets ...`."""

    def with_profile(fn: Any) -> Any:
        return lambda args: fn(args, profile_of(args))

    p = sub.add_parser(
        "wallets", help="HD wallets: list, show, derive deposit addresses, export account keys"
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="the wallets you may see")
    a.set_defaults(func=with_profile(cmd_list))
    a = actions.add_parser("show", help="one wallet")
    a.add_argument("wallet_id")
    a.set_defaults(func=with_profile(cmd_show))
    a = actions.add_parser("derive", help="addresses of an account: paths and addresses")
    _account_arguments(a)
    a.add_argument("--index", type=_whole, required=True, help="the first address index")
    a.add_argument("--count", type=_whole, default=1, help="how many (1 to 1000; default 1)")
    a.add_argument("--change", type=int, choices=(0, 1), default=0, help="bitcoin: 1 = change")
    a.set_defaults(func=with_profile(cmd_derive))
    a = actions.add_parser(
        "xpub", help="an account's extended public key (xpub/ypub/zpub, tpub/upub/vpub)"
    )
    _account_arguments(a)
    a.set_defaults(func=with_profile(cmd_xpub))
    for name in ("list", "show", "derive", "xpub"):
        actions.choices[name].add_argument("--client", help=client_help)
        add_output_argument(actions.choices[name])
