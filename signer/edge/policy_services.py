"""gRPC servicers for policies, TOTP enrollment and approvals."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc

from custos.policies.approvals import missing
from custos.proto.custos.v1 import policy_pb2, policy_pb2_grpc
from custos.signer.chains.registry import Adapters
from custos.signer.edge.errors import InvalidRequest, PermissionDenied
from custos.signer.edge.interceptors import current_identity
from custos.signer.store.base import Store
from custos.signer.store.policy_tables import PendingRow, PolicyRow
from custos.signer.usecases.approval_desk import ApprovalDesk, record_of
from custos.signer.usecases.approval_view import decode_items
from custos.signer.usecases.outbox import Outbox, OutboxEvent
from custos.signer.usecases.policy_governor import PolicyGovernor, proposal_from_json
from custos.signer.usecases.second_factor import SecondFactor
from custos.signer.usecases.wallets import WalletManager


def version_message(row: PolicyRow) -> policy_pb2.PolicyVersion:
    proposal = proposal_from_json(row.record)
    return policy_pb2.PolicyVersion(
        version=row.version,
        hash=row.hash,
        state=row.state,
        proposed_by=proposal.proposer,
        approved_by=[a.officer for a in proposal.approvals],
        proposed_at_unix=int(proposal.proposed_at.timestamp()),
        activate_at_unix=int(proposal.activates_at.timestamp()) if proposal.activates_at else 0,
        document_yaml=row.document_yaml,
    )


def pending_message(
    row: PendingRow, items: list[policy_pb2.PendingItem]
) -> policy_pb2.PendingBatch:
    pending, raw = record_of(row)
    return policy_pb2.PendingBatch(
        approval_id=row.approval_id,
        requester=row.caller,
        request_id=row.request_id,
        request_digest=pending.request_digest.hex(),
        state=row.state,
        expires_at_unix=int(pending.expires_at.timestamp()),
        rules=raw["rules"],
        approved_by=[a.approver for a in pending.approvals],
        missing=[f"{q.group}: {q.approvals} more" for q in missing(pending)],
        totp_required=pending.totp_required,
        items=items,
        request=row.request,
        policy_version=raw.get("policy", ""),
    )


class PoliciesService(policy_pb2_grpc.PoliciesServicer):
    """Officers propose and approve policy versions and enroll second factors."""

    def __init__(self, governor: PolicyGovernor, second_factor: SecondFactor) -> None:
        self._governor = governor
        self._second_factor = second_factor

    def ProposePolicy(  # noqa: N802
        self, request: policy_pb2.ProposePolicyRequest, context: grpc.ServicerContext
    ) -> policy_pb2.PolicyVersion:
        return version_message(
            self._governor.propose(current_identity.get().subject, request.document_yaml)
        )

    def ApprovePolicy(  # noqa: N802
        self, request: policy_pb2.ApprovePolicyRequest, context: grpc.ServicerContext
    ) -> policy_pb2.PolicyVersion:
        officer = current_identity.get().subject
        if not request.totp_code:
            raise InvalidRequest("totp_code: every policy approval needs a fresh TOTP code")
        self._second_factor.check(officer, request.totp_code)
        row = self._governor.approve(officer, request.version, request.hash, totp_verified=True)
        return version_message(row)

    def GetPolicy(  # noqa: N802
        self, request: policy_pb2.GetPolicyRequest, context: grpc.ServicerContext
    ) -> policy_pb2.PolicyVersion:
        return version_message(self._governor.get(request.version))

    def ListPolicies(  # noqa: N802
        self, request: policy_pb2.ListPoliciesRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListPoliciesResponse:
        return policy_pb2.ListPoliciesResponse(
            versions=[version_message(row) for row in self._governor.history()]
        )

    def CancelPolicy(  # noqa: N802
        self, request: policy_pb2.CancelPolicyRequest, context: grpc.ServicerContext
    ) -> policy_pb2.PolicyVersion:
        officer = current_identity.get().subject
        if not request.version:
            raise InvalidRequest("version: the version to cancel is required")
        if not request.totp_code:
            raise InvalidRequest("totp_code: cancelling a version needs a fresh TOTP code")
        self._second_factor.check(officer, request.totp_code)
        return version_message(self._governor.cancel(officer, request.version, True))

    def EnrollTotp(  # noqa: N802
        self, request: policy_pb2.EnrollTotpRequest, context: grpc.ServicerContext
    ) -> policy_pb2.EnrollTotpResponse:
        caller = current_identity.get().subject
        if request.subject and request.subject != caller:
            raise PermissionDenied(
                "subject: an identity enrolls only its own TOTP, over its own certificate;"
                " an officer issues an enrollment token instead (IssueTotpToken)"
            )
        uri = self._second_factor.enroll(
            caller, token=request.enrollment_token, code=request.totp_code
        )
        return policy_pb2.EnrollTotpResponse(subject=caller, otpauth_uri=uri)

    def IssueTotpToken(  # noqa: N802
        self, request: policy_pb2.IssueTotpTokenRequest, context: grpc.ServicerContext
    ) -> policy_pb2.IssueTotpTokenResponse:
        if not request.subject:
            raise InvalidRequest("subject: the identity to enroll is required")
        issued = self._second_factor.issue_token(current_identity.get().subject, request.subject)
        return policy_pb2.IssueTotpTokenResponse(
            subject=issued.subject,
            enrollment_token=issued.token,
            expires_at_unix=int(issued.expires_at.timestamp()),
        )

    def UnlockTotp(  # noqa: N802
        self, request: policy_pb2.UnlockTotpRequest, context: grpc.ServicerContext
    ) -> policy_pb2.UnlockTotpResponse:
        officer = current_identity.get().subject
        if not request.subject:
            raise InvalidRequest("subject: the identity to unlock is required")
        if not request.totp_code:
            raise InvalidRequest("totp_code: unlocking needs the officer's fresh TOTP code")
        if request.subject == officer:
            raise PermissionDenied("subject: an officer cannot unlock itself")
        self._second_factor.check(officer, request.totp_code)
        self._second_factor.unlock(officer, request.subject)
        return policy_pb2.UnlockTotpResponse(subject=request.subject)


class ApprovalsService(policy_pb2_grpc.ApprovalsServicer):
    """Approvers list, approve and reject held batches; callers watch events."""

    def __init__(
        self,
        desk: ApprovalDesk,
        store: Store,
        adapters: Adapters,
        wallets: WalletManager | None = None,
    ) -> None:
        self._wallets = wallets
        self._desk = desk
        self._outbox = Outbox(store)
        self._store = store
        self._adapters = adapters

    def _message(self, row: PendingRow) -> policy_pb2.PendingBatch:
        return pending_message(
            row, decode_items(self._store, self._adapters, row.request, self._wallets)
        )

    def ListPending(  # noqa: N802
        self, request: policy_pb2.ListPendingRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListPendingResponse:
        return policy_pb2.ListPendingResponse(
            batches=[self._message(row) for row in self._desk.list_open()]
        )

    def GetPending(  # noqa: N802
        self, request: policy_pb2.GetPendingRequest, context: grpc.ServicerContext
    ) -> policy_pb2.PendingBatch:
        if not request.approval_id:
            raise InvalidRequest("approval_id: required")
        return self._message(self._desk.get(request.approval_id))

    def Approve(  # noqa: N802
        self, request: policy_pb2.DecideRequest, context: grpc.ServicerContext
    ) -> policy_pb2.PendingBatch:
        row = self._desk.approve(
            current_identity.get().subject,
            request.approval_id,
            request.request_digest,
            request.totp_code,
        )
        return self._message(row)

    def Reject(  # noqa: N802
        self, request: policy_pb2.DecideRequest, context: grpc.ServicerContext
    ) -> policy_pb2.PendingBatch:
        row = self._desk.reject(
            current_identity.get().subject,
            request.approval_id,
            request.request_digest,
            request.totp_code,
        )
        return self._message(row)

    def WatchEvents(  # noqa: N802
        self, request: policy_pb2.WatchEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[policy_pb2.Event]:
        identity = current_identity.get()
        end = self._store.audit_size() - 1  # the last seq committed so far (-1: empty log)
        if request.HasField("after_seq"):
            after = request.after_seq
            if after < -1:
                raise InvalidRequest("after_seq: must be -1 (the start of the log) or a seq")
            if after > end:
                raise InvalidRequest(
                    f"after_seq: {after} is beyond the end of the log ({end}); wrong deployment?"
                )
        else:
            after = end
        # From this first message on, the client misses no event: it names the
        # point the stream continues after, to resume from should it break here.
        yield policy_pb2.Event(kind="watching", seq=after, at_unix_ms=int(time.time() * 1000))
        # A watcher that leaves wakes the wait at once, so its stream slot is freed now.
        context.add_callback(self._store.wake_waiters)
        for event in self._outbox.events(identity, after, active=context.is_active):
            yield _event_message(event)


def _event_message(event: OutboxEvent) -> policy_pb2.Event:
    return policy_pb2.Event(
        kind=event.kind,
        approval_id=event.approval_id,
        request_id=event.request_id,
        requester=event.requester,
        at_unix_ms=event.at_ms,
        seq=event.seq,
        audit_kind=event.audit_kind,
        actor=event.actor,
        key_id=event.key_id,
        policy_version=event.policy_version,
        subject=event.subject,
        reason=event.reason,
        checkpoint_size=event.checkpoint_size,
    )
