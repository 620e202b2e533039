"""Loading policy documents: strict YAML, the published JSON Schema, cross-reference checks.

Every error names the path of the problem, like `rules[3].match.amount.max: ...`.

`python -m custos.policies.schema --write` regenerates policy.schema.json from the
models in policies.document; `--check` fails when the file is stale; given
file names, it validates those documents.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from custos.policies.document import (
    AMOUNT_JSON_SCHEMA,
    AMOUNT_NEEDS_ASSETS,
    EVM_ADDRESS,
    NETWORK_CLASSES,
    NETWORKS,
    Match,
    PolicyDocument,
    Scope,
    normalize_address,
    parse_document,
    parse_duration,
)
from custos.policies.watch_only import wallet_errors

SCHEMA_PATH = Path(__file__).with_name("policy.schema.json")
SCHEMA_ID = "urn:custos:policy-document:v1"
MAX_ERRORS = 50
_MAX_MESSAGE = 200
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
# Shape only (no checksums): policies/ does not import the chain adapters.
_ADDRESS_FORMS: dict[str, re.Pattern[str]] = {
    "ethereum": EVM_ADDRESS,
    "bsc": EVM_ADDRESS,
    "tron": re.compile(r"T[1-9A-HJ-NP-Za-km-z]{33}"),
    "bitcoin": re.compile(r"(bc1|tb1|bcrt1)[02-9ac-hj-np-z]{8,87}|[1-9A-HJ-NP-Za-km-z]{25,35}"),
}


class PolicyValidationError(ValueError):
    """A document failed validation; `errors` holds one "path: message" line per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = tuple(errors)
        super().__init__("invalid policy document:\n" + "\n".join(self.errors))


class _Generator(GenerateJsonSchema):
    # Optional predicates are None in the models but are simply absent in a
    # document (canonical JSON leaves None out), so null is no valid value.
    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False


def _tidy(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("default", 0) is None:
            del node["default"]
        # Dicts keyed by group name: a key that fails the pattern is an error,
        # not an extra property that JSON Schema would let through.
        if "patternProperties" in node:
            node["additionalProperties"] = False
        for value in node.values():
            _tidy(value)
    elif isinstance(node, list):
        for value in node:
            _tidy(value)


def generate_schema() -> dict[str, Any]:
    """The JSON Schema of PolicyDocument, as published in policy.schema.json."""
    schema = PolicyDocument.model_json_schema(schema_generator=_Generator)
    _tidy(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_text() -> str:
    """policy.schema.json's exact content."""
    return json.dumps(generate_schema(), indent=2, sort_keys=True) + "\n"


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


# ---- YAML ----------------------------------------------------------------


def _plain_resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    # YAML 1.1 reads 18:00 as the integer 1080 (base 60), 0755 as octal, `on`
    # as true and 2024-01-01 as a date. Only plain decimal ints, true/false and
    # null stay implicit; everything else is a string for the schema to judge.
    keep = {"tag:yaml.org,2002:null"}
    table: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
        table[first] = [(tag, rx) for tag, rx in resolvers if tag in keep]
    extra = (
        ("tag:yaml.org,2002:int", re.compile(r"^[-+]?(0|[1-9][0-9]*)$"), "-+0123456789"),
        ("tag:yaml.org,2002:bool", re.compile(r"^(true|false)$"), "tf"),
    )
    for tag, rx, firsts in extra:
        for first in firsts:
            table.setdefault(first, []).append((tag, rx))
    return table


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys or YAML 1.1 implicit types."""

    yaml_implicit_resolvers = _plain_resolvers()

    def compose_node(self, parent: Any, index: Any) -> Any:
        # Aliases let a few bytes expand into gigabytes and make review harder.
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not allowed in policy documents")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        # A reviewer reads the first of two equal keys; PyYAML would keep the last.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise yaml.YAMLError(f"mapping keys must be strings (line {line})")
            if key in seen:
                raise yaml.YAMLError(f"duplicate key {key!r} at line {line}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse policy YAML strictly (see _StrictLoader); YAMLError when it is not."""
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise yaml.YAMLError(f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


# ---- cross-references ----------------------------------------------------


def _check_scope(
    doc: PolicyDocument, scope: Scope, path: str, errors: list[tuple[str, str]]
) -> None:
    for name in scope.caller_groups or ():
        if name not in doc.identity_groups:
            errors.append((f"{path}.caller_groups", f"unknown identity group {name!r}"))
    for name in scope.key_groups or ():
        if name not in doc.key_groups:
            errors.append((f"{path}.key_groups", f"unknown key group {name!r}"))
    if scope.chains and scope.networks:
        known = {n for chain in scope.chains for n in NETWORKS[chain]}
        for network in scope.networks:
            if network not in known:
                errors.append((f"{path}.networks", f"{network!r} is not a network of the chains"))
    if scope.networks and scope.network_classes:
        in_classes = {n for c in scope.network_classes for n in NETWORK_CLASSES[c]}
        for network in scope.networks:
            if network not in in_classes:
                errors.append(
                    (f"{path}.networks", f"{network!r} is not in the scope's network_classes")
                )


def _duplicates(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]


def _check_staking_match(match: Match, path: str, errors: list[tuple[str, str]]) -> None:
    if match.staking is None:
        return
    # A staking contract is a Tron transaction that calls no contract.
    if match.message_signing:
        errors.append((f"{path}.staking", "cannot be combined with message_signing"))
    if match.contract is not None:
        errors.append((f"{path}.staking", "cannot be combined with contract"))
    if match.chains is not None and "tron" not in match.chains:
        errors.append((f"{path}.staking", "needs chains to include tron (staking is Tron's)"))


def _check_message_match(match: Match, path: str, errors: list[tuple[str, str]]) -> None:
    if match.message_signing:
        # Assets, destinations, amount and contract judge the spending a
        # typed-data permit grants (token, spender, amount), as for approve.
        for field in ("fee", "multisig"):
            if getattr(match, field) is not None:
                errors.append((f"{path}.{field}", "does not apply to message signing"))
        contracts = match.typed_data.verifying_contracts if match.typed_data else None
        for i, address in enumerate(contracts or ()):
            if not EVM_ADDRESS.fullmatch(address):
                errors.append(
                    (f"{path}.typed_data.verifying_contracts[{i}]", "is not an EVM address")
                )
        return
    for field in ("message_kinds", "typed_data"):
        if getattr(match, field) is not None:
            errors.append((f"{path}.{field}", "needs message_signing: true"))


def _check_destinations(
    doc: PolicyDocument, match: Match, path: str, errors: list[tuple[str, str]]
) -> None:
    dest = match.destinations
    if dest is None:
        return
    known = (
        ("entries", "entry", {e.id for e in doc.address_book.entries}),
        ("groups", "group", set(doc.address_book.groups)),
        ("watch_only", "watch-only wallet", set(doc.watch_only or {})),
    )
    for field, kind, names in known:
        for name in getattr(dest, field) or ():
            if name not in names:
                errors.append((f"{path}.destinations.{field}", f"unknown {kind} {name!r}"))


def _ceremony_errors(doc: PolicyDocument) -> list[tuple[str, str]]:
    """Key ceremony quorums that no set of officers other than the proposer can reach."""
    if doc.ceremonies is None:
        return []
    others = len(set(doc.governance.officers)) - 1  # the proposer never counts
    return [
        (f"ceremonies.{kind}", f"exceeds the {others} officers other than a proposer")
        for kind, quorum in doc.ceremonies.model_dump(exclude_none=True).items()
        if isinstance(quorum, int) and quorum > others
    ]


def reference_errors(doc: PolicyDocument) -> list[tuple[str, str]]:
    """(path, message) for every problem the JSON Schema cannot express."""
    errors: list[tuple[str, str]] = []
    gov = doc.governance
    if len(set(gov.officers)) != len(gov.officers):
        errors.append(("governance.officers", "lists an officer twice"))
    # Without self-approval the proposer never counts, so M others must exist.
    reachable = len(set(gov.officers)) - (0 if gov.allow_self_approval else 1)
    if gov.approvals_required > reachable:
        errors.append(
            ("governance.approvals_required", f"exceeds the {reachable} officers who can approve")
        )
    errors += _ceremony_errors(doc)
    book = doc.address_book
    entry_ids = [e.id for e in book.entries]
    for dup in _duplicates(entry_ids):
        errors.append(("address_book.entries", f"duplicate entry id {dup!r}"))
    seen_addresses: dict[tuple[str, str, str], str] = {}
    for i, entry in enumerate(book.entries):
        path = f"address_book.entries[{i}]"
        if entry.network not in NETWORKS[entry.chain]:
            errors.append((f"{path}.network", f"{entry.network!r} is not a {entry.chain} network"))
        if not _ADDRESS_FORMS[entry.chain].fullmatch(entry.address):
            errors.append((f"{path}.address", f"is not a {entry.chain} address"))
        where = (entry.chain, entry.network, normalize_address(entry.address))
        if where in seen_addresses:
            errors.append((f"{path}.address", f"same address as entry {seen_addresses[where]!r}"))
        seen_addresses.setdefault(where, entry.id)
        for group in entry.groups:
            if group not in book.groups:
                errors.append((f"{path}.groups", f"undeclared address group {group!r}"))
    errors += wallet_errors(doc)
    for dup in _duplicates([r.id for r in doc.rules]):
        errors.append(("rules", f"duplicate rule id {dup!r}"))
    for i, rule in enumerate(doc.rules):
        path = f"rules[{i}].match"
        match = rule.match
        _check_scope(doc, match, path, errors)
        _check_destinations(doc, match, path, errors)
        _check_message_match(match, path, errors)
        _check_staking_match(match, path, errors)
        if match.multisig is not None and match.chains and "bitcoin" not in match.chains:
            errors.append((f"{path}.multisig", "needs bitcoin in chains (PSBT multisig inputs)"))
        if rule.approval:
            if not parse_duration(rule.approval.expires_after):
                errors.append((f"rules[{i}].approval.expires_after", "must be longer than 0s"))
            members = doc.identity_groups.get(rule.approval.group)
            if members is None:
                errors.append((f"rules[{i}].approval.group", "unknown identity group"))
            elif members and rule.approval.approvals > len(set(members)):
                errors.append((f"rules[{i}].approval.approvals", "exceeds the group's members"))
    for dup in _duplicates([lim.id for lim in doc.limits]):
        errors.append(("limits", f"duplicate limit id {dup!r}"))
    for i, limit in enumerate(doc.limits):
        _check_scope(doc, limit.scope, f"limits[{i}].scope", errors)
        if not timedelta(0) < parse_duration(limit.window) <= timedelta(days=366):
            errors.append((f"limits[{i}].window", "must be longer than 0s and at most 366 days"))
    return errors


# ---- validation ----------------------------------------------------------


def format_path(parts: Iterable[str | int]) -> str:
    """`rules[3].match.amount.max` from ("rules", 3, "match", "amount", "max")."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(document)"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _schema_message(error: SchemaError) -> str:
    # jsonschema's defaults print the whole offending instance, which for a
    # rule or a limit is a wall of text; these say what is wrong instead.
    value: Any = error.validator_value
    if error.validator == "anyOf" and value == AMOUNT_JSON_SCHEMA["anyOf"]:
        return "must be an integer from 0 to 2^256-1 or a decimal string of one"
    if error.validator == "anyOf" and all(set(v) == {"required"} for v in value):
        return "needs at least one of " + ", ".join(v["required"][0] for v in value)
    if error.validator == "dependentRequired" and value == {"amount": ["assets"]}:
        return AMOUNT_NEEDS_ASSETS
    if error.validator == "maxLength":
        # Not the value: a key pasted into the wrong place must not be echoed.
        return f"is longer than {value} characters"
    if error.validator == "minProperties":
        return "needs at least one property"
    if error.validator == "not" and set(value) == {"required"}:
        return f"must not have {', '.join(value['required'])} here"
    return _short(error.message)


def _sort_key(error: SchemaError) -> list[tuple[int, str | int]]:
    return [(0, p) if isinstance(p, int) else (1, p) for p in error.absolute_path]


def _pydantic_lines(exc: ValidationError) -> list[str]:
    lines = []
    for item in exc.errors(include_url=False, include_input=False):
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{format_path(item['loc'])}: {_short(message)}")
    return lines


def validate_document(data: object) -> PolicyDocument:
    """Check parsed YAML/JSON against the schema, the models and cross-references."""
    schema_errors = sorted(_validator().iter_errors(data), key=_sort_key)
    if schema_errors:
        lines = [f"{format_path(e.absolute_path)}: {_schema_message(e)}" for e in schema_errors]
        raise PolicyValidationError(lines[:MAX_ERRORS])
    try:
        doc = parse_document(data)
    except ValidationError as exc:
        raise PolicyValidationError(_pydantic_lines(exc)[:MAX_ERRORS]) from None
    problems = reference_errors(doc)
    if problems:
        raise PolicyValidationError([f"{path}: {msg}" for path, msg in problems][:MAX_ERRORS])
    return doc


def load_document(text: str) -> PolicyDocument:
    """Parse and validate a policy YAML document."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise PolicyValidationError([f"(yaml): {_short(str(exc))}"]) from None
    return validate_document(data)


def main(argv: Sequence[str]) -> int:
    """CLI: --write / --check the schema file, or validate the documents named."""
    if argv == ["--write"]:
        SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
        return 0
    if argv == ["--check"]:
        fresh = SCHEMA_PATH.exists() and SCHEMA_PATH.read_text(encoding="utf-8") == schema_text()
        if not fresh:
            print(f"{SCHEMA_PATH} is stale: run python -m custos.policies.schema --write")
        return 0 if fresh else 1
    if not argv:
        print("usage: python -m custos.policies.schema --write | --check | FILE...")
        return 2
    status = 0
    for name in argv:
        try:
            load_document(Path(name).read_text(encoding="utf-8"))
            print(f"{name}: ok")
        except PolicyValidationError as exc:
            status = 1
            print(f"{name}:\n  " + "\n  ".join(exc.errors))
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
