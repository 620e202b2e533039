"""`custos policy`, `custos totp` and `custos approvals`: the human side of policy."""

from __future__ import annotations

import argparse
import difflib
import hashlib
import io
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import qrcode
from coincurve import PrivateKey
from google.protobuf import json_format

from policies.evaluate import Allow, Deny, RequireApproval, compile_policy
from policies.schema import PolicyValidationError, load_document, load_yaml
from proto.custos.v1 import policy_pb2, policy_pb2_grpc
from proto.custos.v1 import signer_pb2 as pb
from signer.admission import judge
from signer.chains.base import InvalidField, KeyInfo
from signer.chains.registry import ADAPTERS
from signer.client import ClientProfile
from signer.errors import BudgetExceeded, ConfigError, PolicyDenied
from signer.governance import ActivePolicy

Profile = Any  # a callable returning the ClientProfile for the parsed arguments


def _print(message: Any) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def _policies(profile: ClientProfile) -> Any:
    return policy_pb2_grpc.PoliciesStub(profile.channel())


def _approvals(profile: ClientProfile) -> Any:
    return policy_pb2_grpc.ApprovalsStub(profile.channel())


# -- policy ---------------------------------------------------------------------------


def cmd_propose(args: argparse.Namespace, profile: ClientProfile) -> int:
    version = _policies(profile).ProposePolicy(
        policy_pb2.ProposePolicyRequest(document_yaml=_read(args.file))
    )
    print(f"proposed version {version.version}, hash {version.hash}")
    print(
        "each approving officer runs: custos policy approve "
        f"{version.version} --hash {version.hash} --code CODE"
    )
    return 0


def cmd_approve(args: argparse.Namespace, profile: ClientProfile) -> int:
    version = _policies(profile).ApprovePolicy(
        policy_pb2.ApprovePolicyRequest(version=args.version, hash=args.hash, totp_code=args.code)
    )
    print(
        f"version {version.version}: {version.state}; approved by {', '.join(version.approved_by)}"
    )
    return 0


def cmd_show(args: argparse.Namespace, profile: ClientProfile) -> int:
    version = _policies(profile).GetPolicy(policy_pb2.GetPolicyRequest(version=args.version))
    print(f"# version {version.version} ({version.state}), hash {version.hash}")
    print(version.document_yaml, end="")
    return 0


def cmd_history(args: argparse.Namespace, profile: ClientProfile) -> int:
    for v in _policies(profile).ListPolicies(policy_pb2.ListPoliciesRequest()).versions:
        when = datetime.fromtimestamp(v.proposed_at_unix, UTC).strftime("%Y-%m-%d %H:%M")
        approvers = ", ".join(v.approved_by) or "-"
        print(
            f"v{v.version:<4} {v.state:<11} {when}Z  {v.hash[:16]}  by {v.proposed_by}"
            f"  approved: {approvers}"
        )
    return 0


def cmd_diff(args: argparse.Namespace, profile: ClientProfile) -> int:
    stub = _policies(profile)
    old = stub.GetPolicy(policy_pb2.GetPolicyRequest(version=args.old))
    new_text = (
        _read(args.new)
        if args.new and not args.new.isdigit()
        else stub.GetPolicy(policy_pb2.GetPolicyRequest(version=int(args.new or 0))).document_yaml
    )
    sys.stdout.writelines(
        difflib.unified_diff(
            old.document_yaml.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            f"v{old.version}",
            args.new or "active",
        )
    )
    return 0


def _placeholder_key(key_id: str) -> KeyInfo:
    # Offline there is no HSM: a stand-in key per key id gives the intent its shape.
    secret = hashlib.sha256(b"custos policy test " + key_id.encode()).digest()
    return KeyInfo(key_id, PrivateKey(secret).public_key.format(compressed=False))


def cmd_test(args: argparse.Namespace) -> int:
    """Evaluate example requests against a policy file; nothing is signed, no server needed."""
    try:
        doc = load_document(_read(args.policy))
    except PolicyValidationError as exc:
        raise ConfigError("policy: " + "; ".join(exc.errors)) from None
    now = datetime.now(UTC)
    policy = ActivePolicy(doc.version, "test", doc, compile_policy(doc, activated_at=now))
    cases = load_yaml(_read(args.cases))
    if not isinstance(cases, list):
        raise ConfigError(f"{args.cases}: a list of cases (name, caller, at, items) is expected")
    for number, case in enumerate(cases):
        name = case.get("name", f"case {number}")
        at = datetime.fromisoformat(case["at"]) if case.get("at") else now
        try:
            request = json_format.ParseDict(
                {"request_id": "test", "items": case["items"]}, pb.SignBatchRequest()
            )
            intents = []
            for index, item in enumerate(request.items):
                kind = item.WhichOneof("tx") or ""
                try:
                    prepared = ADAPTERS[kind].prepare(
                        getattr(item, kind), _placeholder_key(item.key_id)
                    )
                except InvalidField as exc:
                    raise ConfigError(f"items[{index}].{exc.field}: {exc.message}") from None
                intents.append(prepared.intent)
            decision = judge(policy, case["caller"], intents, at).decision
        except PolicyDenied as exc:
            print(f"{name}: DENY ({exc.details.get('rule') or exc.details.get('code')}): {exc}")
            continue
        except BudgetExceeded as exc:
            print(f"{name}: DENY (limit {exc.details.get('limit')}): {exc}")
            continue
        except (ConfigError, json_format.ParseError, KeyError) as exc:
            print(f"{name}: INVALID: {exc}")
            continue
        rules = ", ".join(decision.rule_ids)
        if isinstance(decision, RequireApproval):
            quorum = ", ".join(f"{q.approvals} of {q.group}" for q in decision.quorum)
            totp = " with TOTP" if decision.totp_required else ""
            print(f"{name}: REQUIRE APPROVAL ({rules}): {quorum}{totp}")
        elif isinstance(decision, Allow):
            print(f"{name}: ALLOW ({rules})")
        elif isinstance(decision, Deny):  # judge raises instead; kept for completeness
            print(f"{name}: DENY: {decision.reason}")
    print("(velocity limits are evaluated as if no budget had been spent)")
    return 0


# -- totp ------------------------------------------------------------------------------


def cmd_enroll(args: argparse.Namespace, profile: ClientProfile) -> int:
    reply = _policies(profile).EnrollTotp(policy_pb2.EnrollTotpRequest(subject=args.subject))
    if not args.no_qr:
        qr = qrcode.QRCode(border=1)
        qr.add_data(reply.otpauth_uri)
        text = io.StringIO()
        qr.print_ascii(out=text)
        print(text.getvalue())
    print(f"TOTP for {reply.subject} (shown once; scan or paste into an authenticator app):")
    print(reply.otpauth_uri)
    return 0


# -- approvals --------------------------------------------------------------------------


def cmd_pending(args: argparse.Namespace, profile: ClientProfile) -> int:
    for b in _approvals(profile).ListPending(policy_pb2.ListPendingRequest()).batches:
        expires = datetime.fromtimestamp(b.expires_at_unix, UTC).strftime("%H:%M")
        print(f"{b.approval_id}  {b.state}  request {b.request_id} by {b.requester}")
        print(f"  digest {b.request_digest}  rules {', '.join(b.rules)}  expires {expires}Z")
        print(
            f"  approved by: {', '.join(b.approved_by) or '-'}; missing: "
            f"{', '.join(b.missing) or '-'}{'; TOTP required' if b.totp_required else ''}"
        )
        for item in b.items:
            call = f" [{item.contract_call}]" if item.contract_call else ""
            print(
                f"  - {item.chain}/{item.network} key {item.key_id} from {item.from_address}"
                f" fee {item.fee}{call}"
            )
            for destination in item.destinations:
                print(f"      -> {destination}")
    return 0


def _decide(args: argparse.Namespace, profile: ClientProfile, approve: bool) -> int:
    stub = _approvals(profile)
    request = policy_pb2.DecideRequest(
        approval_id=args.approval_id, request_digest=args.digest, totp_code=args.code or ""
    )
    batch = stub.Approve(request) if approve else stub.Reject(request)
    print(f"{batch.approval_id}: {batch.state}; missing: {', '.join(batch.missing) or '-'}")
    return 0


def cmd_watch(args: argparse.Namespace, profile: ClientProfile) -> int:
    try:
        for event in _approvals(profile).WatchEvents(policy_pb2.WatchEventsRequest()):
            when = datetime.fromtimestamp(event.at_unix_ms / 1000, UTC).strftime("%H:%M:%S")
            print(
                f"{when}Z {event.kind:<9} {event.approval_id} {event.request_id}"
                f" ({event.requester})",
                flush=True,
            )
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            raise
    return 0


def add_commands(sub: Any, client_help: str, profile_of: Any) -> None:
    """Register the policy, totp and approvals subcommands."""

    def with_profile(fn: Any) -> Any:
        return lambda args: fn(args, profile_of(args))

    p = sub.add_parser("policy", help="propose, approve, show and test policy versions")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("propose", help="propose a new version from a YAML file (officer)")
    a.add_argument("file")
    a.set_defaults(func=with_profile(cmd_propose))
    a = actions.add_parser("approve", help="approve a proposed version with a TOTP code (officer)")
    a.add_argument("version", type=int)
    a.add_argument("--hash", required=True, help="the hash you reviewed (from propose/show)")
    a.add_argument("--code", required=True, help="your current TOTP code")
    a.set_defaults(func=with_profile(cmd_approve))
    a = actions.add_parser("show", help="print a version's document (default: the active one)")
    a.add_argument("version", type=int, nargs="?", default=0)
    a.set_defaults(func=with_profile(cmd_show))
    a = actions.add_parser("history", help="every version, its state and approvers")
    a.set_defaults(func=with_profile(cmd_history))
    a = actions.add_parser("diff", help="diff a version against another version or a file")
    a.add_argument("old", type=int)
    a.add_argument("new", nargs="?", help="version number or YAML file (default: active)")
    a.set_defaults(func=with_profile(cmd_diff))
    for a in actions.choices.values():
        a.add_argument("--client", help=client_help)
    a = actions.add_parser("test", help="evaluate example requests offline: POLICY CASES")
    a.add_argument("policy", help="policy YAML")
    a.add_argument("cases", help="YAML list of {name, caller, at, items: [SignItem JSON]}")
    a.set_defaults(func=cmd_test)

    p = sub.add_parser("totp", help="enroll an identity's TOTP second factor (officer)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("enroll", help="new secret for SUBJECT: otpauth URI and QR, shown once")
    a.add_argument("subject", help='RFC 4514 subject, e.g. "CN=approver,O=Custos Dev"')
    a.add_argument("--no-qr", action="store_true")
    a.add_argument("--client", help=client_help)
    a.set_defaults(func=with_profile(cmd_enroll))

    p = sub.add_parser("approvals", help="list, approve, reject and watch held batches")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="pending batches with a summary of every item")
    a.set_defaults(func=with_profile(cmd_pending))
    for verb, approve in (("approve", True), ("reject", False)):
        a = actions.add_parser(verb, help=f"{verb} a pending batch (approver)")
        a.add_argument("approval_id")
        a.add_argument("--digest", required=True, help="request digest shown by `list`")
        a.add_argument("--code", help="your current TOTP code")
        a.set_defaults(func=with_profile(lambda args, prof, ok=approve: _decide(args, prof, ok)))
    a = actions.add_parser("watch", help="print events as they happen")
    a.set_defaults(func=with_profile(cmd_watch))
    for a in actions.choices.values():
        a.add_argument("--client", help=client_help)
