"""Roles table and key grants."""

from __future__ import annotations

import pytest

from custos.proto.custos.v1 import audit_pb2, keys_pb2, policy_pb2, signer_pb2, webhooks_pb2
from custos.signer.edge.auth import RPC_ROLES, Authorizer
from custos.signer.edge.config import IdentityConfig
from custos.signer.edge.errors import PermissionDenied, Unauthenticated


def _all_rpcs() -> set[str]:
    names = set()
    for module in (audit_pb2, keys_pb2, policy_pb2, signer_pb2, webhooks_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            names |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return names


def test_every_rpc_has_a_roles_entry() -> None:
    assert _all_rpcs() == set(RPC_ROLES)


def test_unknown_subject_and_missing_cert_are_unauthenticated() -> None:
    authorizer = Authorizer([])
    with pytest.raises(Unauthenticated):
        authorizer.identify(None)


def test_roles_and_unknown_methods() -> None:
    authorizer = Authorizer([])
    from custos.signer.edge.auth import Identity

    service = Identity("CN=svc", frozenset({"service"}), ("hot-*",))
    authorizer.authorize(service, "/custos.v1.Signer/SignBatch")
    with pytest.raises(PermissionDenied, match="officer"):
        authorizer.authorize(service, "/custos.v1.Keys/CreateKey")
    with pytest.raises(PermissionDenied):
        authorizer.authorize(service, "/custos.v1.Hidden/Backdoor")
    assert service.may_use_key("hot-1")
    assert not service.may_use_key("cold-1")


def test_identity_config_requires_a_role() -> None:
    with pytest.raises(ValueError, match="roles"):
        IdentityConfig(subject="CN=x", roles=[])
