"""Who may call what: identities from client certificates, roles, key grants.

The TLS layer has already verified the client certificate against our CA;
here its subject is looked up among the configured identities. RPC_ROLES is
the one table of which roles may call each RPC; a method missing from it is
refused (fail closed).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from cryptography import x509

from custos.signer.edge.config import IdentityConfig
from custos.signer.edge.errors import PermissionDenied, Unauthenticated

SERVICE, APPROVER, OFFICER, AUDITOR = "service", "approver", "officer", "auditor"

RPC_ROLES: dict[str, frozenset[str]] = {
    "/custos.v1.Signer/SignBatch": frozenset({SERVICE}),
    "/custos.v1.Signer/GetBatch": frozenset({SERVICE}),
    "/custos.v1.Signer/SignPsbt": frozenset({SERVICE}),
    "/custos.v1.Keys/CreateKey": frozenset({OFFICER}),
    "/custos.v1.Keys/DisableKey": frozenset({OFFICER}),
    "/custos.v1.Keys/EnableKey": frozenset({OFFICER}),
    "/custos.v1.Keys/GetKey": frozenset({OFFICER, SERVICE, AUDITOR}),
    "/custos.v1.Keys/ListKeys": frozenset({OFFICER, SERVICE, AUDITOR}),
    "/custos.v1.Keys/CreateImportKey": frozenset({OFFICER}),
    "/custos.v1.Keys/GetImportKey": frozenset({OFFICER, AUDITOR}),
    "/custos.v1.Keys/ImportKey": frozenset({OFFICER}),
    "/custos.v1.Keys/ProposeKeyCeremony": frozenset({OFFICER}),
    "/custos.v1.Keys/ApproveKeyCeremony": frozenset({OFFICER}),
    "/custos.v1.Keys/CancelKeyCeremony": frozenset({OFFICER}),
    "/custos.v1.Keys/GetKeyCeremony": frozenset({OFFICER, AUDITOR}),
    "/custos.v1.Keys/ListKeyCeremonies": frozenset({OFFICER, AUDITOR}),
    "/custos.v1.Keys/FetchKeyCeremonyResult": frozenset({OFFICER}),
    # A service sees only the wallets it is granted (signer.edge.services).
    "/custos.v1.Keys/GetWallet": frozenset({OFFICER, SERVICE, AUDITOR}),
    "/custos.v1.Keys/ListWallets": frozenset({OFFICER, SERVICE, AUDITOR}),
    "/custos.v1.Keys/DeriveAddresses": frozenset({OFFICER, SERVICE, AUDITOR}),
    "/custos.v1.Keys/GetAccountKey": frozenset({OFFICER, SERVICE, AUDITOR}),
    "/custos.v1.Audit/StreamRecords": frozenset({AUDITOR}),
    "/custos.v1.Audit/GetLatestCheckpoint": frozenset({AUDITOR}),
    "/custos.v1.Audit/ListCheckpoints": frozenset({AUDITOR}),
    "/custos.v1.Audit/GetInclusionProof": frozenset({AUDITOR}),
    "/custos.v1.Audit/GetConsistencyProof": frozenset({AUDITOR}),
    "/custos.v1.Audit/Export": frozenset({AUDITOR}),
    "/custos.v1.Audit/GetAuditKey": frozenset({AUDITOR}),
    "/custos.v1.Audit/CreateCheckpoint": frozenset({OFFICER}),
    "/custos.v1.Policies/ProposePolicy": frozenset({OFFICER}),
    "/custos.v1.Policies/ApprovePolicy": frozenset({OFFICER}),
    "/custos.v1.Policies/GetPolicy": frozenset({OFFICER, APPROVER, AUDITOR, SERVICE}),
    "/custos.v1.Policies/ListPolicies": frozenset({OFFICER, APPROVER, AUDITOR}),
    "/custos.v1.Policies/CancelPolicy": frozenset({OFFICER}),
    "/custos.v1.Policies/EnrollTotp": frozenset({OFFICER, APPROVER}),
    "/custos.v1.Policies/IssueTotpToken": frozenset({OFFICER}),
    "/custos.v1.Policies/UnlockTotp": frozenset({OFFICER}),
    "/custos.v1.Approvals/ListPending": frozenset({APPROVER, OFFICER}),
    "/custos.v1.Approvals/GetPending": frozenset({APPROVER, OFFICER}),
    "/custos.v1.Approvals/Approve": frozenset({APPROVER}),
    "/custos.v1.Approvals/Reject": frozenset({APPROVER, SERVICE}),
    "/custos.v1.Approvals/WatchEvents": frozenset({SERVICE, APPROVER, OFFICER, AUDITOR}),
    "/custos.v1.Webhooks/AddWebhook": frozenset({OFFICER}),
    "/custos.v1.Webhooks/RemoveWebhook": frozenset({OFFICER}),
    "/custos.v1.Webhooks/ReplayWebhook": frozenset({OFFICER}),
    "/custos.v1.Webhooks/ListWebhooks": frozenset({OFFICER, AUDITOR}),
    "/custos.v1.Webhooks/GetEventKey": frozenset({SERVICE, APPROVER, OFFICER, AUDITOR}),
}

# Any configured identity may check health and read the schema (reflection).
ANY_IDENTITY_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller."""

    subject: str
    roles: frozenset[str]
    key_patterns: tuple[str, ...] = ()
    wallet_patterns: tuple[str, ...] = ()

    def may_use_key(self, key_id: str) -> bool:
        return any(fnmatchcase(key_id, pattern) for pattern in self.key_patterns)

    def may_use_wallet(self, wallet_id: str) -> bool:
        """A wallet grant covers every key of the wallet (a separate name space from keys)."""
        return any(fnmatchcase(wallet_id, pattern) for pattern in self.wallet_patterns)


@functools.lru_cache(maxsize=1024)
def subject_of(pem: bytes) -> str:
    """RFC 4514 subject of a PEM certificate (cached: parsed once per client cert)."""
    return x509.load_pem_x509_certificate(pem).subject.rfc4514_string()


class Authorizer:
    """Maps a verified client certificate to an Identity and checks RPC_ROLES."""

    def __init__(self, identities: Iterable[IdentityConfig]) -> None:
        self._by_subject = {
            i.subject: Identity(i.subject, frozenset(i.roles), tuple(i.keys), tuple(i.wallets))
            for i in identities
        }

    def identity_of(self, subject: str) -> Identity | None:
        """The configured identity with this subject (its roles and key grants), if any."""
        return self._by_subject.get(subject)

    def identify(self, peer_cert_pem: bytes | None) -> Identity:
        if not peer_cert_pem:
            raise Unauthenticated("a client certificate is required")
        subject = subject_of(peer_cert_pem)
        identity = self._by_subject.get(subject)
        if identity is None:
            raise Unauthenticated(f"certificate subject {subject!r} is not a known identity")
        return identity

    def authorize(self, identity: Identity, method: str) -> None:
        if method.startswith(ANY_IDENTITY_PREFIXES):
            return
        allowed = RPC_ROLES.get(method)
        if allowed is None:
            raise PermissionDenied(f"{method} is not open to any role")
        if not identity.roles & allowed:
            raise PermissionDenied(f"{method} needs one of the roles {', '.join(sorted(allowed))}")
