"""The one table of errors: every error a caller can meet has exactly one row.

A row decides the gRPC status, the JSON-RPC code, the metric label and whether
the caller hears the exception's own words (domain errors) or a fixed message
(outages, whose details stay in the server's log).
"""

from __future__ import annotations

import grpc
import pytest

from custos.hsm.errors import HsmError, HsmUnavailable, KeyExists, KeyNotFound
from custos.signer.edge import errors
from custos.signer.edge.errors import ERROR_KINDS, INTERNAL, kind_of, public_message
from custos.signer.edge.interceptors import TooManyStreams, status_for
from custos.signer.store.base import StoreUnavailable


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_custos_error_the_service_defines_has_a_row() -> None:
    import custos.signer.edge.interceptors
    import custos.signer.usecases.auditlog

    assert custos.signer.edge.interceptors.TooManyStreams  # imported above on purpose
    for cls in _subclasses(errors.CustosError):
        assert kind_of(cls.__new__(cls)) is not INTERNAL, cls


def test_statuses_are_grpc_status_names_and_codes_tell_outcomes_apart() -> None:
    for kind in [*ERROR_KINDS.values(), INTERNAL]:
        assert grpc.StatusCode[kind.status].name == kind.status
    # One JSON-RPC code per outcome a caller acts on differently.
    by_code: dict[int, set[str]] = {}
    for kind in ERROR_KINDS.values():
        by_code.setdefault(kind.jsonrpc_code, set()).add(kind.outcome)
    assert all(len(outcomes) == 1 for outcomes in by_code.values()), by_code


@pytest.mark.parametrize(
    ("error", "status", "outcome"),
    [
        (errors.PolicyDenied("denied by policy: r"), grpc.StatusCode.PERMISSION_DENIED, "denied"),
        (errors.PermissionDenied("no grant"), grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
        (TooManyStreams("too many open streams"), grpc.StatusCode.RESOURCE_EXHAUSTED, "over_limit"),
        (errors.TamperedState("keys", ("k",), "altered"), grpc.StatusCode.DATA_LOSS, "tampered"),
        # A key the registry names but the token lacks: not an outage to retry.
        (KeyNotFound("no private key 'hot-1'"), grpc.StatusCode.FAILED_PRECONDITION, "refused"),
        (KeyExists("key 'hot-1' exists"), grpc.StatusCode.ALREADY_EXISTS, "conflict"),
    ],
)
def test_domain_errors_are_told_in_their_own_words(
    error: Exception, status: grpc.StatusCode, outcome: str
) -> None:
    assert status_for(error) == (status, str(error))
    assert kind_of(error).outcome == outcome


@pytest.mark.parametrize(
    "error",
    [HsmError("C_Sign: CKR_DEVICE_ERROR"), HsmUnavailable("slot 3 gone"), StoreUnavailable("pg1")],
)
def test_outages_are_unavailable_and_keep_their_words_in_the_log(error: Exception) -> None:
    code, message = status_for(error)
    assert code is grpc.StatusCode.UNAVAILABLE
    assert str(error) not in message
    assert message == public_message(error)
    assert "retry later" in message


def test_anything_else_is_internal_and_says_nothing() -> None:
    assert status_for(KeyError("secret detail")) == (grpc.StatusCode.INTERNAL, "internal error")
    assert kind_of(ValueError()).outcome == "failed"
