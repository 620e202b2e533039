"""`custos policy`, `custos totp` and `custos approvals`: the human side of policy."""

from __future__ import annotations

import argparse
import difflib
import hashlib
import hmac
import io
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from custos.proto.custos.v1 import policy_pb2, policy_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.edge.errors import ConfigError
from custos.signer.tools.cli_output import add_output_argument, print_json, print_table, wants_json
from custos.signer.tools.client import ClientProfile

# The policy engine, the chain adapters, qrcode and coincurve are imported by the
# commands that use them: every `custos` invocation builds this module's parser.
if TYPE_CHECKING:
    from custos.policies.evaluate import Allow, RequireApproval
    from custos.signer.chains.base import KeyInfo

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


WATCH_RETRIES = 10  # consecutive failed reconnects before `approvals watch` gives up


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
    if wants_json(args):
        print_json(version)
        return 0
    print(f"# version {version.version} ({version.state}), hash {version.hash}")
    print(version.document_yaml, end="")
    return 0


def cmd_history(args: argparse.Namespace, profile: ClientProfile) -> int:
    listed = _policies(profile).ListPolicies(policy_pb2.ListPoliciesRequest())
    if wants_json(args):
        print_json(listed)
        return 0
    rows = []
    for v in listed.versions:
        when = datetime.fromtimestamp(v.proposed_at_unix, UTC).strftime("%Y-%m-%d %H:%M")
        rows.append(
            (
                f"v{v.version}",
                v.state,
                f"{when}Z",
                v.hash[:16],
                v.proposed_by,
                _names(v.approved_by),
            )
        )
    print_table(("VERSION", "STATE", "PROPOSED", "HASH", "BY", "APPROVED BY"), rows)
    return 0


def _names(names: Any) -> str:
    return ", ".join(names) or "-"


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
    from coincurve import PrivateKey

    from custos.signer.chains.base import KeyInfo

    # Offline there is no HSM: a stand-in key per key id gives the intent its shape.
    secret = hashlib.sha256(b"custos policy test " + key_id.encode()).digest()
    return KeyInfo(key_id, PrivateKey(secret).public_key.format(compressed=False))


def _requirement(decision: Allow | RequireApproval) -> str:
    """ "2 of treasury with TOTP": what a held batch needs."""
    from custos.policies.evaluate import RequireApproval

    if not isinstance(decision, RequireApproval):
        return "nothing"
    quorum = ", ".join(f"{q.approvals} of {q.group}" for q in decision.quorum)
    return quorum + (" with TOTP" if decision.totp_required else "")


def cmd_test(args: argparse.Namespace) -> int:
    """Evaluate example requests against a policy file; nothing is signed, no server needed."""
    from custos.policies.evaluate import (
        Allow,
        Deny,
        RequireApproval,
        compile_policy,
        held_by_review,
    )
    from custos.policies.schema import PolicyValidationError, load_document, load_yaml
    from custos.signer.chains.base import InvalidField
    from custos.signer.chains.registry import ADAPTERS
    from custos.signer.edge import requests
    from custos.signer.edge.errors import BudgetExceeded, PolicyDenied
    from custos.signer.usecases.admission import judge
    from custos.signer.usecases.policy_governor import ActivePolicy

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
            for index, item in enumerate(requests.sign_batch(request).items):
                if item.tx is None:
                    raise ConfigError(f"items[{index}]: no transaction or message")
                try:
                    _, prepared = ADAPTERS.prepare(item.tx, _placeholder_key(item.key_id))
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
        # The endpoint is not asked offline: say who would be, and what a "hold" asks.
        reviews = "".join(
            f"; review by {r.endpoint} (a hold asks {_requirement(held_by_review(decision, [r]))})"
            for r in decision.reviews
        )
        if isinstance(decision, RequireApproval):
            print(f"{name}: REQUIRE APPROVAL ({rules}): {_requirement(decision)}{reviews}")
        elif isinstance(decision, Allow):
            print(f"{name}: ALLOW ({rules}){reviews}")
        elif isinstance(decision, Deny):  # judge raises instead; kept for completeness
            print(f"{name}: DENY: {decision.reason}")
    print("(velocity limits are evaluated as if no budget had been spent)")
    return 0


# -- totp ------------------------------------------------------------------------------


def cmd_enroll(args: argparse.Namespace, profile: ClientProfile) -> int:
    """Enroll the identity of the client profile itself: the secret is shown only here."""
    reply = _policies(profile).EnrollTotp(
        policy_pb2.EnrollTotpRequest(enrollment_token=args.token or "", totp_code=args.code or "")
    )
    if not args.no_qr:
        import qrcode

        qr = qrcode.QRCode(border=1)
        qr.add_data(reply.otpauth_uri)
        text = io.StringIO()
        qr.print_ascii(out=text)
        print(text.getvalue())
    print(f"TOTP for {reply.subject} (shown once; scan or paste into an authenticator app):")
    print(reply.otpauth_uri)
    return 0


def cmd_issue(args: argparse.Namespace, profile: ClientProfile) -> int:
    reply = _policies(profile).IssueTotpToken(
        policy_pb2.IssueTotpTokenRequest(subject=args.subject)
    )
    expires = datetime.fromtimestamp(reply.expires_at_unix, UTC).strftime("%Y-%m-%d %H:%M")
    print(f"enrollment token for {reply.subject} (one use, until {expires}Z):")
    print(reply.enrollment_token)
    print("the identity enrolls itself with: custos totp enroll --token TOKEN")
    return 0


def cmd_unlock(args: argparse.Namespace, profile: ClientProfile) -> int:
    reply = _policies(profile).UnlockTotp(
        policy_pb2.UnlockTotpRequest(subject=args.subject, totp_code=args.code)
    )
    print(f"{reply.subject}: TOTP lockout lifted")
    return 0


def cmd_cancel(args: argparse.Namespace, profile: ClientProfile) -> int:
    version = _policies(profile).CancelPolicy(
        policy_pb2.CancelPolicyRequest(version=args.version, totp_code=args.code)
    )
    print(f"version {version.version}: {version.state}")
    return 0


# -- approvals --------------------------------------------------------------------------


def recomputed_digest(batch: policy_pb2.PendingBatch) -> str:
    """The request digest of the exact bytes the server sent, computed here."""
    from custos.policies import approvals

    return approvals.request_digest(batch.requester, batch.request_id, batch.request).hex()


def _print_batch(b: policy_pb2.PendingBatch, *, full: bool) -> None:
    expires = datetime.fromtimestamp(b.expires_at_unix, UTC).strftime("%H:%M")
    print(f"{b.approval_id}  {b.state}  request {b.request_id} by {b.requester}")
    mine = recomputed_digest(b)
    check = "" if hmac.compare_digest(mine, b.request_digest) else "  (MISMATCH: do not approve)"
    print(f"  digest {mine}{check}  rules {', '.join(b.rules)}  expires {expires}Z")
    print(
        f"  approved by: {', '.join(b.approved_by) or '-'}; missing: "
        f"{', '.join(b.missing) or '-'}{'; TOTP required' if b.totp_required else ''}"
    )
    for item in b.items:
        if item.error:
            print(f"  - key {item.key_id}: CANNOT DECODE: {item.error}")
            continue
        # Amounts in the asset's units, base units beside them (what is signed).
        fee = f"{item.fee_units} ({item.fee} base units)" if item.fee_units else item.fee
        print(
            f"  - {item.chain}/{item.network} key {item.key_id} from {item.from_address}"
            f" max fee {fee}{f' lock time {item.lock_time}' if item.lock_time else ''}"
        )
        for ms in item.multisigs:
            others = ", ".join(ms.cosigners) or "-"
            print(f"      cosigns a {ms.threshold}-of-{ms.total} multisig with {others}")
        for t in item.transfers:
            change = " (change)" if t.is_change else ""
            amount = (
                f"{t.amount_units} {t.symbol} ({t.amount} base units)"
                if t.amount_units
                else f"{t.amount} base units of {t.asset} (decimals unknown)"
            )
            asset = f" [{t.asset}]" if t.amount_units and t.asset != "native" else ""
            print(f"      -> {t.to}: {amount}{asset}{change}")
        if item.method:
            print(f"      call {item.method} on {item.contract} ({', '.join(item.args) or '-'})")
        if item.staking:
            print(f"      staking: {item.staking}")
        if item.HasField("message"):
            m = item.message
            print(f"      {m.kind} message, digest {m.digest}")
            if m.kind == "typed_data":
                print(
                    f"      {m.primary_type} in domain {m.domain_name!r} chain id "
                    f"{m.chain_id or '-'} contract {m.verifying_contract or '-'}"
                )
            for grant in m.grants:
                print(f"      grants allowance: {grant}")
            print("\n".join("      | " + line for line in m.text.splitlines() or [""]))
    if full:
        request = pb.SignBatchRequest.FromString(b.request)
        print("  request (exactly the bytes held, decoded here):")
        text = json_format.MessageToJson(request, preserving_proto_field_name=True, indent=2)
        print("\n".join("    " + line for line in text.splitlines()))
        print(f"  request bytes (hex): {b.request.hex()}")


def cmd_pending(args: argparse.Namespace, profile: ClientProfile) -> int:
    listed = _approvals(profile).ListPending(policy_pb2.ListPendingRequest())
    if wants_json(args):
        print_json(listed)
        return 0
    if not listed.batches:
        print("no batches wait for approval")
    for b in listed.batches:
        _print_batch(b, full=False)
    return 0


def cmd_show_pending(args: argparse.Namespace, profile: ClientProfile) -> int:
    batch = _approvals(profile).GetPending(
        policy_pb2.GetPendingRequest(approval_id=args.approval_id)
    )
    if wants_json(args):
        print_json(batch)
        return 0
    _print_batch(batch, full=True)
    return 0


def _decide(args: argparse.Namespace, profile: ClientProfile, approve: bool) -> int:
    stub = _approvals(profile)
    if approve:
        # Confirm only what was shown: the digest of the exact bytes, recomputed here.
        batch = stub.GetPending(policy_pb2.GetPendingRequest(approval_id=args.approval_id))
        if batch.totp_required and not args.code:
            raise ConfigError("--code: code required (this batch needs your current TOTP code)")
        mine = recomputed_digest(batch)
        if not (
            hmac.compare_digest(mine, args.digest.lower())
            and hmac.compare_digest(mine, batch.request_digest)
        ):
            print(
                f"custos: refused: the held request's bytes hash to {mine}, not to the digest"
                f" given ({args.digest}) or the server's ({batch.request_digest});"
                " review it again with `custos approvals show`",
                file=sys.stderr,
            )
            return 1
    request = policy_pb2.DecideRequest(
        approval_id=args.approval_id, request_digest=args.digest, totp_code=args.code or ""
    )
    batch = stub.Approve(request) if approve else stub.Reject(request)
    print(f"{batch.approval_id}: {batch.state}; missing: {', '.join(batch.missing) or '-'}")
    return 0


def cmd_watch(args: argparse.Namespace, profile: ClientProfile) -> int:
    """Print events; when the server goes away, resume after the last one printed.

    Any replica serves the same events in the same order (they are read from
    the shared store), so resuming loses nothing and repeats nothing.
    """
    last: int | None = args.from_seq
    failures = 0
    while True:
        request = policy_pb2.WatchEventsRequest()
        if last is not None:
            request.after_seq = last
        try:
            for event in _approvals(profile).WatchEvents(request):
                failures = 0
                last = event.seq
                if event.kind == "watching":
                    print(f"# watching after seq {event.seq}", flush=True)
                    continue
                print(_event_line(event), flush=True)
            return 0
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return 0
            if exc.code() != grpc.StatusCode.UNAVAILABLE or failures >= WATCH_RETRIES:
                raise
            failures += 1
            print(f"# stream lost ({exc.code().name}); resuming after seq {last}", file=sys.stderr)
            time.sleep(min(2.0**failures * 0.1, 5.0))


def _event_line(event: Any) -> str:
    when = datetime.fromtimestamp(event.at_unix_ms / 1000, UTC).strftime("%H:%M:%S")
    what = {
        "key_id": event.key_id,
        "policy_version": event.policy_version,
        "subject": event.subject,
        "checkpoint_size": event.checkpoint_size,
        "reason": event.reason,
    }
    extra = " ".join(f"{name}={value}" for name, value in what.items() if value)
    line = f"{event.seq:>8} {when}Z {event.kind:<9} {event.approval_id} {event.request_id}"
    if event.requester:
        line += f" ({event.requester})"
    return f"{line} {extra}".rstrip()


def _add_totp_commands(sub: Any, client_help: str, with_profile: Any) -> None:
    p = sub.add_parser("totp", help="TOTP second factors: each identity enrolls its own")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser(
        "enroll", help="new secret for YOUR identity (the client profile's): shown once"
    )
    a.add_argument("--token", help="the enrollment token an officer issued you")
    a.add_argument("--code", help="your current code (to rotate an enrolled secret)")
    a.add_argument("--no-qr", action="store_true")
    a.set_defaults(func=with_profile(cmd_enroll))
    a = actions.add_parser("issue", help="a one-time enrollment token for SUBJECT (officer)")
    a.add_argument("subject", help='RFC 4514 subject, e.g. "CN=approver,O=Custos Dev"')
    a.set_defaults(func=with_profile(cmd_issue))
    a = actions.add_parser("unlock", help="lift SUBJECT's TOTP lockout (officer, with TOTP)")
    a.add_argument("subject")
    a.add_argument("--code", required=True, help="your current TOTP code")
    a.set_defaults(func=with_profile(cmd_unlock))
    for a in actions.choices.values():
        a.add_argument("--client", help=client_help)


def add_commands(sub: Any, client_help: str, profile_of: Any) -> None:  # noqa: PLR0915
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
    add_output_argument(a)
    a.set_defaults(func=with_profile(cmd_show))
    a = actions.add_parser("history", help="every version, its state and approvers")
    add_output_argument(a)
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

    a = actions.add_parser("cancel", help="cancel a version during its activation delay")
    a.add_argument("version", type=int)
    a.add_argument("--code", required=True, help="your current TOTP code")
    a.add_argument("--client", help=client_help)
    a.set_defaults(func=with_profile(cmd_cancel))

    _add_totp_commands(sub, client_help, with_profile)

    p = sub.add_parser("approvals", help="list, approve, reject and watch held batches")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="held batches, every item decoded")
    add_output_argument(a)
    a.set_defaults(func=with_profile(cmd_pending))
    a = actions.add_parser("show", help="one held batch: items decoded and its exact request")
    a.add_argument("approval_id")
    add_output_argument(a)
    a.set_defaults(func=with_profile(cmd_show_pending))
    for verb, approve in (("approve", True), ("reject", False)):
        a = actions.add_parser(verb, help=f"{verb} a pending batch (approver)")
        a.add_argument("approval_id")
        a.add_argument("--digest", required=True, help="request digest shown by `list`")
        a.add_argument("--code", help="your current TOTP code")
        a.set_defaults(func=with_profile(lambda args, prof, ok=approve: _decide(args, prof, ok)))
    a = actions.add_parser("watch", help="print events as they happen")
    a.add_argument(
        "--from-seq",
        type=int,
        help="resume after this sequence number (the last one printed; -1: from the start)",
    )
    a.set_defaults(func=with_profile(cmd_watch))
    for a in actions.choices.values():
        a.add_argument("--client", help=client_help)
