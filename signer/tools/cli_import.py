"""`custos keys import-key init|show` and `custos keys import`: bring an existing key under custody.

The secret is read here, on the officer's machine, from the terminal (never
from the command line, where `ps` and shell history would keep it) or from
standard input when it is not a terminal, and it leaves this process only
encrypted to the HSM's import key (hsm.import_material). Before encrypting,
the import key's fingerprint is shown and must match the one the officer pins
(--fingerprint) or confirms at the prompt.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custos.proto.custos.v1 import keys_pb2, keys_pb2_grpc
from custos.signer.edge.errors import ConfigError
from custos.signer.tools.cli_ceremonies import print_proposal
from custos.signer.tools.cli_output import add_output_argument, print_fields, print_json, wants_json
from custos.signer.tools.client import ClientProfile

if TYPE_CHECKING:
    from custos.hsm.import_material import SecretKey

# hsm.import_material (cryptography, coincurve, BIP32/39) is imported by the
# commands that read or wrap a key, not by every `custos` run that builds this
# parser; its two constants the parser shows are repeated here (a unit test
# keeps them equal).
SOURCES = ("hex", "wif", "keystore", "mnemonic")
DEFAULT_PATH = "m/44'/60'/0'/0/0"

NETWORK_CLASSES = {
    "mainnet": keys_pb2.NETWORK_CLASS_MAINNET,
    "testnet": keys_pb2.NETWORK_CLASS_TESTNET,
}


def add_actions(
    actions: Any,
    client_help: str,
    profile: Callable[[argparse.Namespace], ClientProfile],
    print_key: Callable[[keys_pb2.Key], None],
) -> None:
    """The import actions of `custos keys`."""
    a = actions.add_parser("import-key", help="the HSM's import key: init once, show to pin it")
    a.add_argument("step", choices=("init", "show"))
    a.add_argument("--client", help=client_help)
    add_output_argument(a)
    a.set_defaults(func=lambda args: import_key_command(args, profile(args)))

    a = actions.add_parser(
        "propose-import-wallet",
        help="propose importing an HD wallet from its BIP39 mnemonic (officer ceremony)",
        description="The mnemonic's seed is computed and encrypted here to the HSM's import"
        " key. The mnemonic (and passphrase) are asked for at the terminal (or read from"
        " standard input, one a line); never pass them as arguments.",
    )
    a.add_argument("wallet_id")
    a.add_argument("--label", default="", help="shown with the wallet (default: its id)")
    a.add_argument(
        "--passphrase", action="store_true", help="the mnemonic has a BIP39 passphrase: ask for it"
    )
    a.add_argument("--fingerprint", help="the import key's fingerprint as recorded (pins it)")
    a.add_argument("--client", help=client_help)
    add_output_argument(a)
    a.set_defaults(func=lambda args: import_wallet_command(args, profile(args)))

    for verb, text in (
        ("import", "import an existing secp256k1 key alone (where the policy's quorum is 0)"),
        ("propose-import", "propose importing an existing secp256k1 key (officer ceremony)"),
    ):
        a = actions.add_parser(
            verb,
            help=text,
            description="The key is encrypted here to the HSM's import key. The secret is"
            " asked for at the terminal (or read from standard input, one item a line: key,"
            " password, mnemonic, passphrase); never pass it as an argument.",
        )
        _add_import_arguments(a, client_help)
        a.set_defaults(func=lambda args: import_command(args, profile(args), print_key))


def _add_import_arguments(a: argparse.ArgumentParser, client_help: str) -> None:
    a.add_argument("key_id")
    a.add_argument("--network-class", required=True, choices=tuple(NETWORK_CLASSES))
    a.add_argument("--from", dest="source", required=True, choices=SOURCES)
    a.add_argument("--keystore", help="the keystore v3 file (--from keystore)")
    a.add_argument(
        "--path", help=f"derivation path (--from mnemonic; default {DEFAULT_PATH}, eth-account's)"
    )
    a.add_argument(
        "--passphrase", action="store_true", help="the mnemonic has a BIP39 passphrase: ask for it"
    )
    a.add_argument(
        "--fingerprint",
        help="the import key's fingerprint as recorded when it was made (pins it; without it"
        " the fingerprint is shown and must be confirmed)",
    )
    a.add_argument("--client", help=client_help)
    add_output_argument(a)


def _print_import_key(key: keys_pb2.ImportWrappingKey) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = serialization.load_der_public_key(key.public_key_der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    print_fields([("algorithm", key.algorithm), ("fingerprint", key.fingerprint)])
    print()
    print(pem.decode(), end="")


def import_key_command(args: argparse.Namespace, profile: ClientProfile) -> int:
    stub = keys_pb2_grpc.KeysStub(profile.channel())
    if args.step == "init":
        key = stub.CreateImportKey(keys_pb2.CreateImportKeyRequest())
    else:
        key = stub.GetImportKey(keys_pb2.GetImportKeyRequest())
    if wants_json(args):
        print_json(key)
    else:
        _print_import_key(key)
        if args.step == "init":
            print("\nRecord this fingerprint where officers can check it (the ceremony minutes).")
    return 0


def _ask(prompt: str) -> str:
    """One secret line: from the terminal without echo, or from standard input."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    line = sys.stdin.readline()
    if not line:
        raise ConfigError(f"standard input ended before: {prompt.rstrip(': ')}")
    return line.rstrip("\r\n")


def read_secret(args: argparse.Namespace) -> SecretKey:
    """The key to import, read as `--from` says; ImportMaterialError names what is wrong."""
    from custos.hsm.import_material import (
        DEFAULT_PATH,
        MAX_KEYSTORE_BYTES,
        from_hex,
        from_keystore,
        from_mnemonic,
        from_wif,
    )

    if args.path and args.source != "mnemonic":
        raise ConfigError("--path is for --from mnemonic only")
    if args.source == "hex":
        return from_hex(_ask("private key (hex): "))
    if args.source == "wif":
        return from_wif(_ask("private key (WIF): "))
    if args.source == "keystore":
        if not args.keystore:
            raise ConfigError("--from keystore needs --keystore FILE")
        try:
            data = Path(args.keystore).read_bytes()[: MAX_KEYSTORE_BYTES + 1]
        except OSError as exc:
            raise ConfigError(f"cannot read {args.keystore}: {exc.strerror}") from exc
        return from_keystore(data, _ask("keystore password: "))
    words = _ask("mnemonic: ")
    passphrase = _ask("BIP39 passphrase: ") if args.passphrase else ""
    return from_mnemonic(words, passphrase, args.path or DEFAULT_PATH)


def _same_fingerprint(a: str, b: str) -> bool:
    return a.replace(":", "").strip().lower() == b.replace(":", "").strip().lower()


def confirm_import_key(args: argparse.Namespace, key: keys_pb2.ImportWrappingKey) -> None:
    """The import key is the one the officer expects, or ConfigError (nothing was sent)."""
    from custos.hsm.import_material import import_key_fingerprint

    # Recomputed here: the fingerprint the server states proves nothing by itself.
    fingerprint = import_key_fingerprint(key.public_key_der)
    print(f"import key: {key.algorithm}, fingerprint {fingerprint}", file=sys.stderr)
    if args.fingerprint:
        if not _same_fingerprint(args.fingerprint, fingerprint):
            raise ConfigError(
                "the server's import key does not have the pinned fingerprint: nothing was sent"
            )
        return
    if not sys.stdin.isatty():
        raise ConfigError("not interactive: pin the import key with --fingerprint")
    answer = input("Is this the import key's fingerprint as recorded? Type yes: ")
    if answer.strip().lower() != "yes":
        raise ConfigError("import key not confirmed: nothing was sent")


def import_command(
    args: argparse.Namespace, profile: ClientProfile, print_key: Callable[[keys_pb2.Key], None]
) -> int:
    from custos.hsm.import_material import import_key_fingerprint, wrap_for_import

    stub = keys_pb2_grpc.KeysStub(profile.channel())
    import_key = stub.GetImportKey(keys_pb2.GetImportKeyRequest())
    confirm_import_key(args, import_key)
    secret = read_secret(args)
    request = keys_pb2.ImportKeyRequest(
        key_id=args.key_id,
        network_class=NETWORK_CLASSES[args.network_class],
        wrapped_key=wrap_for_import(secret, import_key.public_key_der),
        public_key=secret.public_key,
        import_key_fingerprint=import_key_fingerprint(import_key.public_key_der),
        source=secret.source,
        path=secret.path,
    )
    del secret  # only the wrapped form travels
    if args.action == "propose-import":
        proposal = stub.ProposeKeyCeremony(
            keys_pb2.ProposeKeyCeremonyRequest(
                kind=keys_pb2.CEREMONY_KIND_IMPORT_KEY,
                key_id=request.key_id,
                network_class=request.network_class,
                imported_key=request,
            )
        )
        return print_proposal(proposal, args)
    key = stub.ImportKey(request)
    if wants_json(args):
        print_json(key)
    else:
        print_key(key)
    return 0


def import_wallet_command(args: argparse.Namespace, profile: ClientProfile) -> int:
    from custos.hsm.import_material import (
        import_key_fingerprint,
        wallet_from_mnemonic,
        wrap_seed_for_import,
    )

    stub = keys_pb2_grpc.KeysStub(profile.channel())
    import_key = stub.GetImportKey(keys_pb2.GetImportKeyRequest())
    confirm_import_key(args, import_key)
    words = _ask("mnemonic: ")
    passphrase = _ask("BIP39 passphrase: ") if args.passphrase else ""
    wallet = wallet_from_mnemonic(words, passphrase)
    del words, passphrase
    imported = keys_pb2.ImportedWallet(
        wrapped_seed=wrap_seed_for_import(wallet, import_key.public_key_der),
        master_public_key=wallet.master_public_key,
        import_key_fingerprint=import_key_fingerprint(import_key.public_key_der),
    )
    del wallet  # only the wrapped form travels
    proposal = stub.ProposeKeyCeremony(
        keys_pb2.ProposeKeyCeremonyRequest(
            kind=keys_pb2.CEREMONY_KIND_IMPORT_WALLET,
            wallet_id=args.wallet_id,
            label=args.label,
            imported_wallet=imported,
        )
    )
    return print_proposal(proposal, args)
