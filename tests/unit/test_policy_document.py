"""Policy documents: schema file freshness, validation errors naming paths, YAML, hashing."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from custos.policies.document import (
    canonical_json,
    document_hash,
    normalize_address,
    parse_document,
    parse_duration,
)
from custos.policies.schema import (
    SCHEMA_PATH,
    PolicyValidationError,
    load_document,
    load_yaml,
    main,
    schema_text,
    validate_document,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "examples" / "default.yaml"
USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"


def base() -> dict[str, Any]:
    """A small valid document that the cases below break one field at a time."""
    return {
        "version": 3,
        "governance": {"officers": ["o1", "o2", "o3"], "approvals_required": 2},
        "identity_groups": {"payments": ["svc-a"], "approvers": ["ann", "bob"]},
        "key_groups": {"hot": ["eth-hot-1"]},
        "address_book": {
            "groups": ["vendors"],
            "entries": [
                {
                    "id": "v1",
                    "chain": "ethereum",
                    "network": "mainnet",
                    "address": "0x5a52E96BAcdaBb82fd05763E25335261B270Efcb",
                    "groups": ["vendors"],
                }
            ],
        },
        "rules": [
            {"id": "r0", "match": {"chains": ["ethereum"]}, "action": "allow"},
            {"id": "r1", "match": {"callers": ["svc-a"]}, "action": "deny"},
            {
                "id": "r2",
                "match": {"caller_groups": ["payments"]},
                "action": "require_approval",
                "approval": {"approvals": 2, "group": "approvers"},
            },
            {
                "id": "r3",
                "match": {"assets": ["native"], "amount": {"min": 1, "max": "1000"}},
                "action": "allow",
            },
        ],
        "limits": [
            {
                "id": "l0",
                "window": "24h",
                "per": ["key", "asset"],
                "max_amount": "10",
                "max_count": 5,
            }
        ],
    }


def test_schema_file_is_generated_from_the_models() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "run: python -m custos.policies.schema --write"
    )
    assert main(["--check"]) == 0
    Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_example_policy_validates_and_round_trips() -> None:
    doc = load_document(EXAMPLE.read_text())
    assert doc.version == 1
    assert len(doc.rules) >= 8
    # The canonical form is itself a valid document with the same hash.
    again = validate_document(json.loads(canonical_json(doc)))
    assert again == doc
    assert document_hash(again) == document_hash(doc)
    assert main([str(EXAMPLE)]) == 0


def test_canonical_hash_ignores_spelling_but_not_meaning() -> None:
    a = base()
    b = copy.deepcopy(a)
    b["rules"][3]["match"]["amount"] = {"min": "1", "max": 1000}  # same amounts, other spelling
    b["address_book"]["cooling_off"] = "24h"  # the default, spelled out
    c = copy.deepcopy(a)
    c["rules"][3]["match"]["amount"]["max"] = 1001
    ha, hb, hc = (document_hash(validate_document(d)) for d in (a, b, c))
    assert ha == hb != hc
    assert len(ha) == 64
    text = canonical_json(validate_document(a))
    assert b" " not in text.replace(b"svc-a", b"")
    assert json.loads(text) == json.loads(json.dumps(json.loads(text), sort_keys=True))


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = doc
    for part in parts[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value


_DELETE = object()

# (field to change, new value, expected "path: message" fragment)
MALFORMED = [
    ("rules.3.match.amount.max", "12abc", "rules[3].match.amount.max: must be an integer"),
    ("rules.3.match.amount.max", -5, "rules[3].match.amount.max: must be an integer"),
    ("rules.3.match.amount.max", "0123", "rules[3].match.amount.max: must be an integer"),
    ("rules.3.match.amount.max", str(2**256), "rules[3].match.amount.max: must be an integer"),
    ("rules.3.match.amount.max", True, "rules[3].match.amount.max: must be an integer"),
    ("rules.3.match.amount", {"min": 5, "max": 1}, "rules[3].match.amount: min must not exceed"),
    ("rules.3.match.amount", {}, "rules[3].match.amount: needs at least one property"),
    ("rules.0.match.colour", "red", "rules[0].match: Additional properties are not allowed"),
    ("rules.0.action", "maybe", "rules[0].action: 'maybe' is not one of"),
    ("rules.2.approval", _DELETE, "rules[2]: 'approval' is a required property"),
    (
        "rules.0.approval",
        {"approvals": 1, "group": "approvers"},
        "rules[0]: must not have approval",
    ),
    ("rules.2.approval.approvals", 0, "rules[2].approval.approvals: 0 is less than the minimum"),
    ("rules.2.approval.approvals", 3, "rules[2].approval.approvals: exceeds the group's members"),
    ("rules.2.approval.group", "nobody", "rules[2].approval.group: unknown identity group"),
    ("rules.2.approval.expires_after", "0s", "rules[2].approval.expires_after: must be longer"),
    ("rules.2.approval.expires_after", "soon", "rules[2].approval.expires_after: 'soon' does not"),
    ("rules.0.match.chains", ["dogecoin"], "rules[0].match.chains[0]: 'dogecoin' is not one of"),
    ("rules.0.match.chains", [], "rules[0].match.chains: [] should be non-empty"),
    ("rules.0.match.networks", ["nile"], "rules[0].match.networks: 'nile' is not a network"),
    ("rules.0.match.caller_groups", ["nope"], "rules[0].match.caller_groups: unknown identity"),
    ("rules.0.match.key_groups", ["cold"], "rules[0].match.key_groups: unknown key group"),
    ("rules.0.match.keys", ["Has Space"], "rules[0].match.keys[0]: 'Has Space' does not match"),
    ("rules.0.match.destinations", {}, "rules[0].match.destinations: needs at least one of"),
    ("rules.0.match.destinations", {"entries": ["v9"]}, "destinations.entries: unknown entry"),
    ("rules.0.match.destinations", {"groups": ["x"]}, "destinations.groups: unknown group"),
    ("rules.0.match.destinations", {"groups": ["vendors"], "mode": "most"}, "mode: 'most'"),
    ("rules.0.match.fee", {}, "rules[0].match.fee: needs at least one property"),
    ("rules.0.match.fee", {"max_gas_limit": "many"}, "rules[0].match.fee.max_gas_limit: 'many'"),
    ("rules.0.match.contract", {"methods": ["mint"]}, "rules[0].match.contract.methods[0]"),
    ("rules.0.match.time", [{"start": "25:00", "end": "06:00"}], "match.time[0].start: '25:00'"),
    ("rules.0.match.time", [{"start": "06:00", "end": "06:00"}], "match.time[0]: start and end"),
    ("rules.0.match.time", [{"days": ["funday"], "start": "06:00", "end": "07:00"}], "days[0]"),
    ("rules.0.match.message_signing", "yes", "rules[0].match.message_signing: 'yes' is not"),
    ("rules.0.match", {"message_signing": True, "fee": {"max_fee": 1}}, "match.fee: does not"),
    ("rules.0.match", {"amount": {"max": 1}}, "rules[0].match: amount needs assets"),
    ("rules.0.match.multisig", {}, "rules[0].match.multisig: needs at least one property"),
    ("rules.0.match.multisig", {"cosigners": ["04" + "a" * 64]}, "multisig.cosigners[0]: '04"),
    ("rules.0.match.multisig", {"cosigners": ["02" + "A" * 64]}, "multisig.cosigners[0]: '02"),
    ("rules.0.match.multisig", {"min_threshold": 17}, "multisig.min_threshold: 17 is greater"),
    (
        "rules.0.match.multisig",
        {"change": "anywhere"},
        "multisig.change: 'same_multisig' was expected",
    ),
    (
        "rules.0.match",
        {"chains": ["ethereum"], "multisig": {"min_threshold": 2}},
        "rules[0].match.multisig: needs bitcoin in chains",
    ),
    (
        "rules.0.match",
        {"message_signing": True, "multisig": {"min_threshold": 2}},
        "match.multisig: does not apply to message signing",
    ),
    ("rules.1.id", "r0", "rules: duplicate rule id 'r0'"),
    ("rules.1.id", "-bad", "rules[1].id: '-bad' does not match"),
    ("rules", _DELETE, "(document): 'rules' is a required property"),
    ("limits.0.per", ["key"], "limits[0]"),
    (
        "limits.0.per",
        ["key", "key", "asset"],
        "limits[0].per: ['key', 'key', 'asset'] has non-unique",
    ),
    ("limits.0.window", "0s", "limits[0].window: must be longer than 0s"),
    (
        "limits.0",
        {"id": "l0", "window": "1h"},
        "limits[0]: needs at least one of max_amount, max_count",
    ),
    ("governance.approvals_required", 3, "governance.approvals_required: exceeds the 2 officers"),
    ("governance.officers", ["o1", "o1", "o2"], "governance.officers: lists an officer twice"),
    ("governance", {"officers": ["o1"]}, "governance: 'approvals_required' is a required"),
    ("address_book.entries.0.network", "nile", "entries[0].network: 'nile' is not a ethereum"),
    ("address_book.entries.0.address", "0x1234567890123456789012", "entries[0].address: is not"),
    ("address_book.entries.0.groups", ["unknown"], "entries[0].groups: undeclared address group"),
    ("identity_groups", {"bad name": ["x"]}, "identity_groups: 'bad name' does not match"),
    ("version", 0, "version: 0 is less than the minimum of 1"),
    ("version", "3", "version: '3' is not of type 'integer'"),
]


@pytest.mark.parametrize(("field", "value", "expected"), MALFORMED)
def test_malformed_documents_are_rejected_naming_the_path(
    field: str, value: Any, expected: str
) -> None:
    doc = base()
    _set(doc, field, value)
    with pytest.raises(PolicyValidationError) as info:
        validate_document(doc)
    assert any(expected in line for line in info.value.errors), info.value.errors
    assert expected.split(":", 1)[0].split(" ", 1)[0] in str(info.value)


def _models_then_references(doc: dict[str, Any]) -> None:
    validate_document(json.loads(canonical_json(parse_document(doc))))


def test_schema_and_models_agree_on_every_malformed_case() -> None:
    # Each case the schema rejects, the models or the reference checks reject
    # too, so a document that bypassed the JSON Schema would still be refused.
    validator = Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    for field, value, _ in MALFORMED:
        doc = base()
        _set(doc, field, value)
        if not list(validator.iter_errors(doc)):
            continue
        with pytest.raises((ValidationError, PolicyValidationError)):
            _models_then_references(doc)
    assert not list(validator.iter_errors(base()))


def test_not_a_mapping() -> None:
    with pytest.raises(PolicyValidationError, match=r"\(document\): \[1, 2\] is not of type"):
        validate_document([1, 2])


def test_many_errors_are_all_reported_in_path_order() -> None:
    doc = base()
    doc["rules"][3]["match"]["amount"]["max"] = "x"
    doc["rules"][0]["match"]["chains"] = ["x"]
    doc["version"] = -1
    with pytest.raises(PolicyValidationError) as info:
        validate_document(doc)
    paths = [line.split(":")[0] for line in info.value.errors]
    assert paths == ["rules[0].match.chains[0]", "rules[3].match.amount.max", "version"]


YAML_HEAD = """
version: 1
governance: {officers: [o1, o2], approvals_required: 1}
rules:
"""


def test_yaml_times_and_numbers_stay_what_they_look_like() -> None:
    doc = load_document(
        YAML_HEAD
        + """
  - id: night
    match:
      time: [{start: 22:00, end: 18:00}]
      assets: [native]
      amount: {max: 123456789012345678901234567890}
    action: allow
"""
    )
    window = doc.rules[0].match.time
    assert window is not None
    assert (window[0].start, window[0].end) == ("22:00", "18:00")  # not 1320 and 1080
    assert doc.rules[0].match.amount is not None
    assert doc.rules[0].match.amount.max == 123456789012345678901234567890


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("  - {id: a, action: allow}\n  - {id: b, action: allow, action: deny}\n", "duplicate key"),
        ("  - &r {id: a, action: allow}\n  - *r\n", "aliases are not allowed"),
        ("  - {id: a, action: allow, match: {amount: {max: 0755}}}\n", "amount.max: must be"),
        ("  - {id: a, action: allow, match: {message_signing: on}}\n", "message_signing: 'on'"),
        ("  - {id: 2024-01-01, action: allow}\n", None),
        ("  - {id: a, action: allow\n", "(yaml)"),
    ],
)
def test_yaml_is_strict(snippet: str, message: str | None) -> None:
    text = YAML_HEAD + snippet
    if message is None:
        assert load_document(text).rules[0].id == "2024-01-01"  # a string, not a date
        return
    with pytest.raises(PolicyValidationError) as info:
        load_document(text)
    assert message in str(info.value)


def test_yaml_size_is_capped() -> None:
    with pytest.raises(PolicyValidationError, match="larger than"):
        load_document("#" * (9 * 1024 * 1024))
    assert load_yaml("a: 1") == {"a": 1}


@pytest.mark.parametrize(
    ("address", "normal"),
    [
        (
            "0x5a52E96BAcdaBb82fd05763E25335261B270Efcb",
            "0x5a52e96bacdabb82fd05763e25335261b270efcb",
        ),
        (
            "BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ",
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        ),
        (
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
        ),
        ("TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G", "TNXoiAJ3dct8Fjg4M9fkLFh9S2v9TXc32G"),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"),
        ("native", "native"),
    ],
)
def test_address_normalization(address: str, normal: str) -> None:
    assert normalize_address(address) == normal


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("1h30m", 5400), ("90s", 90), ("7d", 604800), ("0s", 0)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
