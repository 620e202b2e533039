"""Policy on messages: message_kinds and typed-data matchers, permits judged and charged like approve.

Intents come from the real adapters (signer/chains/messages.py) so that the
facts policy reads are those the service computes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from custos.common.intent import Intent
from custos.policies.evaluate import NO_RULE_MATCHED, RULE_DENIED, Allow, Deny, EvaluationRequest
from custos.policies.schema import PolicyValidationError, validate_document
from custos.policies.velocity import Spent, batch_deltas
from tests import typed_data as td
from tests.unit.test_chain_messages import ADDRESS, SEPOLIA, SPENDER, TOKEN, prepare
from tests.unit.test_policy_evaluate import NOW, compiled, document, erc20

OTHER_TOKEN = "0x779877A7B0D9E8603169DdbD7836e478b4624789"
CALLER = "svc-pay"


def intent_of(item: Any) -> Intent:
    intent = prepare(item).intent
    # The policy's key ids (eth-hot is in the test document's key group "hot").
    return replace(intent, key_id="eth-hot")


def decide(policy: Any, *intents: Intent) -> Any:
    request = EvaluationRequest(CALLER, frozenset(), intents, NOW)
    usage = {d.key: Spent() for d in policy.limit_deltas(request)}
    return policy.evaluate(request, usage)


def rule_of(decision: Any) -> str | None:
    return decision.rule_ids[0] if isinstance(decision, Allow) else None


MAIL = intent_of(td.typed_item("k", td.MAIL, 1))
PERSONAL = intent_of(td.personal_item("k", b"log in", 1))
PERMIT_600 = intent_of(
    td.typed_item("k", td.eip2612_permit(TOKEN, ADDRESS, SPENDER, 600, SEPOLIA), SEPOLIA)
)


@pytest.mark.parametrize(
    ("typed", "hit"),
    [
        ({"domain_names": ["Ether Mail"]}, True),
        ({"domain_names": ["Other"]}, False),
        ({"chain_ids": [1]}, True),
        ({"chain_ids": [56]}, False),
        # Compared as accounts: the rule's lower case matches the domain's checksum.
        ({"verifying_contracts": ["0xcccccccccccccccccccccccccccccccccccccccc"]}, True),
        ({"verifying_contracts": ["0xdddddddddddddddddddddddddddddddddddddddd"]}, False),
        ({"primary_types": ["Mail"]}, True),
        ({"primary_types": ["Permit"]}, False),
        ({"domain_names": ["Ether Mail"], "primary_types": ["Order"]}, False),
    ],
)
def test_typed_data_matchers_hit_and_miss(typed: dict[str, Any], hit: bool) -> None:
    policy = compiled(
        [{"id": "mail", "match": {"message_signing": True, "typed_data": typed}, "action": "allow"}]
    )
    assert rule_of(decide(policy, MAIL)) == ("mail" if hit else None)
    # A typed-data matcher never matches another kind of message.
    assert rule_of(decide(policy, PERSONAL)) is None


def test_message_kinds_and_message_rules_never_judge_transactions() -> None:
    policy = compiled(
        [
            {
                "id": "logins",
                "match": {"message_signing": True, "message_kinds": ["personal_sign"]},
                "action": "allow",
            },
            {"id": "no-typed", "match": {"message_signing": True}, "action": "deny"},
            {"id": "tx", "match": {}, "action": "allow"},
        ]
    )
    assert rule_of(decide(policy, PERSONAL)) == "logins"
    denied = decide(policy, MAIL)
    assert isinstance(denied, Deny)
    assert (denied.code, denied.rule_id) == (RULE_DENIED, "no-typed")
    assert rule_of(decide(policy, erc20())) == "tx"
    # A transaction rule does not let a message through.
    only_tx = compiled([{"id": "tx", "match": {}, "action": "allow"}])
    assert isinstance(decide(only_tx, PERSONAL), Deny)


def test_a_permit_needs_a_rule_naming_its_token_as_approve_does() -> None:
    generic = compiled([{"id": "msgs", "match": {"message_signing": True}, "action": "allow"}])
    assert rule_of(decide(generic, MAIL)) == "msgs"
    refused = decide(generic, PERMIT_600)
    assert isinstance(refused, Deny)
    assert refused.code == NO_RULE_MATCHED
    rule = {
        "id": "usdc-permits",
        "match": {
            "message_signing": True,
            "assets": [TOKEN],
            "contract": {"addresses": [TOKEN], "methods": ["permit"]},
            "amount": {"max": 1000},
        },
        "action": "allow",
    }
    policy = compiled([rule])
    assert rule_of(decide(policy, PERMIT_600)) == "usdc-permits"
    big = intent_of(
        td.typed_item("k", td.eip2612_permit(TOKEN, ADDRESS, SPENDER, 1001, SEPOLIA), SEPOLIA)
    )
    assert isinstance(decide(policy, big), Deny)
    # PermitBatch: every token must be named by the rule.
    batch = intent_of(
        td.typed_item(
            "k", td.permit2_batch([(TOKEN, 5), (OTHER_TOKEN, 5)], SPENDER, SEPOLIA), SEPOLIA
        )
    )
    assert isinstance(decide(policy, batch), Deny)


def test_a_denied_spender_is_refused() -> None:
    doc_extra = {
        "address_book": {
            "cooling_off": "0s",
            "groups": ["blocked"],
            "entries": [
                {
                    "id": "drainer",
                    "chain": "ethereum",
                    "network": "sepolia",
                    "address": SPENDER,
                    "groups": ["blocked"],
                }
            ],
        }
    }
    policy = compiled(
        [
            {
                "id": "no-drainers",
                "match": {"destinations": {"groups": ["blocked"], "mode": "any"}},
                "action": "deny",
            },
            {
                "id": "any-permit",
                "match": {"message_signing": True, "contract": {"methods": ["permit"]}},
                "action": "allow",
            },
        ],
        **doc_extra,
    )
    # A transaction deny list refuses the permit's spender too: it is about the
    # account, whatever is signed.
    denied = decide(policy, PERMIT_600)
    assert isinstance(denied, Deny)
    assert (denied.code, denied.rule_id) == (RULE_DENIED, "no-drainers")
    # ... and only a spender on it: a permit to another spender is allowed.
    other = intent_of(
        td.typed_item("k", td.eip2612_permit(TOKEN, ADDRESS, ADDRESS, 600, SEPOLIA), SEPOLIA)
    )
    assert rule_of(decide(policy, other)) == "any-permit"
    # A deny rule with no destinations stays a transaction rule: messages pass it.
    keyed = compiled(
        [
            {"id": "no-eth", "match": {"chains": ["ethereum"]}, "action": "deny"},
            {"id": "msgs", "match": {"message_signing": True}, "action": "allow"},
        ]
    )
    assert rule_of(decide(keyed, MAIL)) == "msgs"
    policy = compiled(
        [
            {
                "id": "no-drainers",
                "match": {
                    "message_signing": True,
                    "destinations": {"groups": ["blocked"], "mode": "any"},
                },
                "action": "deny",
            },
            {
                "id": "any-permit",
                "match": {"message_signing": True, "contract": {"methods": ["permit"]}},
                "action": "allow",
            },
        ],
        **doc_extra,
    )
    denied = decide(policy, PERMIT_600)
    assert isinstance(denied, Deny)
    assert denied.rule_id == "no-drainers"


def test_permits_are_charged_to_limits_and_other_messages_are_not() -> None:
    limit = {
        "id": "token-daily",
        "window": "24h",
        "per": ["key", "asset"],
        "scope": {"assets": [TOKEN]},
        "max_amount": 1000,
    }
    policy = compiled([{"id": "all", "match": {}, "action": "allow"}], limits=[limit])
    deltas = batch_deltas(policy.limits, CALLER, frozenset(), [PERMIT_600, MAIL, PERSONAL])
    assert [(d.limit_id, d.amount, d.count) for d in deltas] == [("token-daily", 600, 1)]
    # Charged on the token of the network the domain's chain id names.
    assert f"|asset=ethereum:sepolia:{TOKEN.lower()}" in deltas[0].key


@pytest.mark.parametrize(
    ("match", "error"),
    [
        ({"typed_data": {"primary_types": ["Mail"]}}, "match.typed_data: needs message_signing"),
        ({"message_kinds": ["typed_data"]}, "match.message_kinds: needs message_signing"),
        ({"message_signing": True, "fee": {"max_fee": 1}}, "match.fee: does not apply"),
        ({"message_signing": True, "typed_data": {}}, "typed_data"),
        ({"message_signing": True, "message_kinds": ["eth_sign"]}, "message_kinds"),
        (
            {"message_signing": True, "typed_data": {"verifying_contracts": ["T" * 34]}},
            "typed_data.verifying_contracts[0]: is not an EVM address",
        ),
    ],
)
def test_document_checks(match: dict[str, Any], error: str) -> None:
    with pytest.raises(PolicyValidationError) as caught:
        validate_document(document([{"id": "r", "match": match, "action": "allow"}]))
    assert error in str(caught.value)


def test_assets_destinations_amount_and_contract_are_accepted_on_message_rules() -> None:
    match = {
        "message_signing": True,
        "assets": [TOKEN],
        "amount": {"max": 5},
        "contract": {"addresses": [TOKEN]},
        "destinations": {"groups": ["vendors"]},
        "typed_data": {"chain_ids": [1], "primary_types": ["Permit"]},
    }
    validate_document(document([{"id": "r", "match": match, "action": "allow"}]))


def test_approvers_read_the_message_facts() -> None:
    from custos.signer.usecases.admission import summarize

    summary = summarize(PERMIT_600, "eth-hot")
    assert summary["message"] == "typed_data"
    assert summary["typed_data"]["primary_type"] == "Permit"
    assert summary["typed_data"]["chain_id"] == SEPOLIA
    assert summary["grants"] == [f"permit {SPENDER} to spend 600 of {TOKEN}"]
    assert summarize(PERSONAL, "eth-hot")["message"] == "personal_sign"
    assert "message" not in summarize(erc20(), "eth-hot")


def test_custos_approvals_show_prints_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    from custos.proto.custos.v1 import policy_pb2
    from custos.signer.tools.cli_policy import _print_batch

    shown = policy_pb2.PendingMessage(
        kind="typed_data",
        text='{"a":\n1}',
        digest="ab" * 32,
        primary_type="PermitSingle",
        domain_name="Permit2",
        chain_id="1",
        verifying_contract=td.PERMIT2,
        grants=[f"spender={SPENDER} token={TOKEN} amount=77"],
    )
    item = policy_pb2.PendingItem(chain="ethereum", network="mainnet", key_id="k", message=shown)
    _print_batch(policy_pb2.PendingBatch(approval_id="a", items=[item]), full=False)
    out = capsys.readouterr().out
    assert "typed_data message, digest " + "ab" * 32 in out
    assert f"PermitSingle in domain 'Permit2' chain id 1 contract {td.PERMIT2}" in out
    assert f"grants allowance: spender={SPENDER} token={TOKEN} amount=77" in out
    assert '      | {"a":\n      | 1}' in out
