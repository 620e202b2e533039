"""How the `custos` CLI shows things: exit codes, `--output table|json`, tables, completion.

Commands that show something print a table (or readable lines) for people by
default and, with `--output json` (or CUSTOS_OUTPUT=json), JSON for scripts:
the RPC's protobuf message in its canonical JSON form (proto field names), so
that a script reads the same fields the API documents.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from custos.proto.custos.v1 import signer_pb2
from custos.signer.edge.errors import ConfigError

OUTPUT_ENV = "CUSTOS_OUTPUT"
OUTPUTS = ("table", "json")


class Exit(enum.IntEnum):
    """The process exit codes, documented in `custos --help` and the README."""

    OK = 0
    ERROR = 1  # the operation failed: refused, unreachable server, HSM/store failure
    USAGE = 2  # the command line, a file it names or the configuration is wrong
    PENDING = 3  # nothing failed, but the batch waits for approval (not signed yet)
    INTERRUPTED = 130  # Ctrl-C
    BROKEN_PIPE = 141  # the reader of stdout went away (as a process killed by SIGPIPE)


EXIT_CODES_HELP = """\
Exit codes:
  0    success
  1    error: the server refused or could not be reached, the HSM or store failed
  2    usage: wrong arguments, or a file or configuration that cannot be used
  3    pending: the batch is held for approval (see `custos approvals`, `custos get`)
  130  interrupted (Ctrl-C)
"""


def version() -> str:
    """`custos X.Y.Z`, from the installed distribution's metadata."""
    from importlib import metadata

    try:
        number = metadata.version("custos")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        number = "unknown (not installed)"
    return f"custos {number} (python {sys.version.split()[0]})"


class VersionAction(argparse.Action):
    """`--version`: like argparse's own, but reads the version only when asked
    (importlib.metadata scans the installed distributions: slow for every run)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings,
            dest,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser._print_message(version() + "\n", sys.stdout)
        parser.exit()


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    """`-o/--output table|json` on a command that shows something."""
    default = os.environ.get(OUTPUT_ENV, "table")
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default=default if default in OUTPUTS else "table",
        help=f"table (for people) or json (for scripts); default ${OUTPUT_ENV}, else table",
    )


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: Message | Mapping[str, Any] | Sequence[Any]) -> None:
    """One JSON document on stdout: a message in protobuf's JSON form, proto field names."""
    data = to_dict(value) if isinstance(value, Message) else value
    print(json.dumps(data, indent=2))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Columns aligned on the widest cell; the last column is never padded."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    for row in [list(headers), *text_rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        print("  ".join([*cells, row[-1]]).rstrip())


def print_fields(fields: Sequence[tuple[str, object]]) -> None:
    """`name   value` lines, names aligned (one record, like `vault read`)."""
    width = max((len(name) for name, _ in fields), default=0)
    for name, value in fields:
        print(f"{name.ljust(width)}  {value}")


def batch_outcome(reply: signer_pb2.SignBatchResponse) -> int:
    """The exit code of a batch's status; on stderr, what to do about a held or failed one.

    stderr, so that stdout stays the reply (JSON with -o json).
    """
    if reply.status == signer_pb2.BATCH_STATUS_SIGNED:
        return Exit.OK
    if reply.status == signer_pb2.BATCH_STATUS_PENDING_APPROVAL:
        approval = reply.approval_id
        print(
            f"held for approval: {approval} (nothing is signed yet; exit code 3)\n"
            f"  approvers review it:   custos approvals show {approval}\n"
            f"  and approve it:        custos approvals approve {approval} --digest DIGEST"
            " [--code CODE]\n"
            f"  then fetch the result: custos get {reply.request_id}",
            file=sys.stderr,
        )
        return Exit.PENDING
    status = signer_pb2.BatchStatus.Name(reply.status).removeprefix("BATCH_STATUS_").lower()
    print(f"custos: batch {reply.request_id} was {status}: nothing signed", file=sys.stderr)
    return Exit.ERROR


# -- shell completion -----------------------------------------------------------------


def _tree(parser: argparse.ArgumentParser) -> dict[str, tuple[list[str], list[str]]]:
    """{"keys create": ([subcommands], [options])} for every command path ("" is the root)."""
    out: dict[str, tuple[list[str], list[str]]] = {}

    def walk(path: str, p: argparse.ArgumentParser) -> None:
        options: list[str] = []
        children: dict[str, argparse.ArgumentParser] = {}
        for action in p._actions:  # argparse has no public walk of its tree
            if isinstance(action, argparse._SubParsersAction):
                children.update(action.choices)
            elif action.option_strings:
                options.extend(action.option_strings)
            elif action.choices:  # a positional with fixed values, e.g. the shell
                options.extend(str(c) for c in action.choices)
        out[path] = (sorted(children), sorted(options))
        for name, child in children.items():
            walk(f"{path} {name}".strip(), child)

    walk("", parser)
    return out


def _choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Options whose values are a fixed list, e.g. --output: table json."""
    out: dict[str, list[str]] = {}

    def walk(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    walk(child)
            elif action.choices and action.option_strings:
                for option in action.option_strings:
                    out[option] = [str(c) for c in action.choices]

    walk(parser)
    return out


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A bash or zsh completion script generated from the parser itself.

    Completes command and subcommand names, each command's options and the
    values of options with fixed choices; anything else falls back to file
    names. zsh loads it through bashcompinit.
    """
    tree = _tree(parser)
    cases = []
    for path, (children, options) in sorted(tree.items()):
        words = " ".join(children + options)
        cases.append(f'    "{path}") words="{words}" ;;')
    choice_cases = [
        f'    {option}) COMPREPLY=($(compgen -W "{" ".join(values)}" -- "$cur")); return ;;'
        for option, values in sorted(_choices(parser).items())
    ]
    commands = sorted(path for path, (children, _) in tree.items() if children)
    body = f"""\
_custos() {{
  local cur prev path word words i
  cur="${{COMP_WORDS[COMP_CWORD]}}"
  prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  case "$prev" in
{chr(10).join(choice_cases)}
  esac
  # The command path so far: the words that name (sub)commands, options skipped.
  path=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="${{COMP_WORDS[i]}}"
    case "$word" in -*) continue ;; esac
    case " {" ".join(f"|{c}|" for c in commands)} " in
      *"|$path|"*) path="${{path:+$path }}$word" ;;
    esac
  done
  case "$path" in
{chr(10).join(cases)}
    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
  if [ ${{#COMPREPLY[@]}} -eq 0 ] && [[ "$cur" != -* ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}}
complete -o filenames -F _custos custos
"""
    if shell == "bash":
        return "# bash completion for custos: source it, or save it as\n" + (
            "# /etc/bash_completion.d/custos (custos completion bash > ...)\n" + body
        )
    if shell == "zsh":
        return (
            '#compdef custos\n# zsh completion for custos: eval "$(custos completion zsh)"'
            " in ~/.zshrc\nautoload -U +X bashcompinit && bashcompinit\n" + body
        )
    raise ValueError(f"no completion for shell {shell!r}")


def report_pinned_key(
    what: str, config: str, fingerprint: str, pinned: str | None, pin_lines: Sequence[str]
) -> int:
    """After `init-key`: the token's key against the fingerprint the config pins.

    Already pinned: say so. Pinned to another key: refuse (this is not the token
    the config was set up with). Not pinned yet: print `pin_lines` to add.
    """
    if pinned == fingerprint:
        print(f"{config} already pins it: key_fingerprint = {fingerprint}")
        return 0
    if pinned is not None:
        raise ConfigError(
            f"{config} pins {what} fingerprint {pinned}, but the token's key has "
            f"{fingerprint}: this is not the token the config was set up with"
        )
    for line in pin_lines:
        print(line)
    return 0
